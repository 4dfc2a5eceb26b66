"""The draws' validation curves: each epoch's ``val/`` scores read from a run's TensorBoard event
files or CSV logger, and the picture of the draws' validation error by epoch (``curves.png``)."""

from __future__ import annotations

import csv
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from lit_ssgan.draws.runs import Draw, error_name, versions


def validation_curve(folder: Path) -> list[tuple[int, dict[str, float]]]:
    """Each epoch's validation scores (``val/...``) of the run under ``folder``, by epoch (1 for
    the first), as its loggers wrote them: TensorBoard's event files or the CSV logger's
    ``metrics.csv``, of every run folder in order (a resumed run's epochs replace those its
    predecessor logged). An epoch validated more than once keeps its last scores."""
    epochs: dict[int, dict[str, float]] = {}
    for version in versions(folder):
        for records in (_event_records(version), _csv_records(version)):
            for record in records:
                scores = {k: v for k, v in record.items() if k.startswith("val/")}
                if scores and "epoch" in record:
                    epochs.setdefault(int(record["epoch"]) + 1, {}).update(scores)
    return sorted(epochs.items())


def _event_records(version: Path) -> list[dict[str, float]]:
    """The scalars of the TensorBoard event files in ``version``, one dict per step and file."""
    records = []
    for path in sorted(version.glob("events.out.tfevents.*")):
        by_step: dict[int, dict[str, float]] = {}
        for step, tag, value in _scalars(path):
            by_step.setdefault(step, {})[tag] = value
        records += [by_step[step] for step in sorted(by_step)]
    return records


def _scalars(path: Path) -> Iterator[tuple[int, str, float]]:
    """``(step, tag, value)`` of each scalar in a TensorBoard event file (TFRecord of ``Event``
    protos, read with tensorboardX's proto classes); a torn last record ends it. Read here because
    tensorboardX only writes, and tensorboard's ``EventAccumulator`` is not a dependency."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto import event_pb2

    data, at = path.read_bytes(), 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        start = at + 12  # the length, then its CRC
        if start + length + 4 > len(data):
            return
        event = event_pb2.Event()
        try:
            event.ParseFromString(data[start : start + length])
        except DecodeError:
            return
        at = start + length + 4  # the record, then its CRC
        for value in event.summary.value:
            if value.HasField("simple_value"):
                yield event.step, value.tag, value.simple_value


def _csv_records(version: Path) -> list[dict[str, float]]:
    path = version / "metrics.csv"
    if not path.is_file():
        return []
    records = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            record = {}
            for key, value in row.items():
                try:
                    record[key] = float(value)
                except (TypeError, ValueError):
                    continue
            records.append(record)
    return records


#: the draws' colours (BGR), in turn
COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]  # fmt: skip


def curves_picture(
    curves: dict[Draw, list[tuple[int, dict[str, float]]]], size: tuple[int, int] = (900, 520)
) -> np.ndarray:
    """The validation error (the first of :data:`~lit_ssgan.draws.runs.ERROR_SCORES` logged) of
    each draw by epoch, as a BGR image: a colour per seed, a thick line for the draw, a thin one for
    its labels-only twin; the seeds named on the right. A draw with no validation scores has no line."""
    width, height = size
    left, right, top, bottom = 70, 190, 40, 50
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    names = [name for points in curves.values() for _, scores in points for name in scores]
    score = error_name(names, "val/") or next(iter(names), None)
    lines = {
        draw: [(epoch, scores[score]) for epoch, scores in points if score in scores and math.isfinite(scores[score])]
        for draw, points in curves.items()
    }
    lines = {draw: points for draw, points in lines.items() if points}
    title = f"{score} by epoch" if score else "no validation scores logged"
    cv2.putText(image, title, (left, 24), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    if not lines:
        return image
    xs = [x for points in lines.values() for x, _ in points]
    ys = [y for points in lines.values() for _, y in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y_ticks = _ticks(min(0.0, min(ys)), max(ys) if max(ys) > min(0.0, min(ys)) else min(0.0, min(ys)) + 1)
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[int, int]:
        return int(round(left + (x - x0) / (x1 - x0) * plot_w)), int(round(top + (y1 - y) / (y1 - y0) * plot_h))

    for y in y_ticks:
        cv2.line(image, at(x0, y), at(x1, y), (225, 225, 225), 1)
        text = f"{y:g}"
        (w, h), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(image, text, (left - w - 8, at(x0, y)[1] + h // 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    for x in _ticks(x0, x1, whole=True):
        if x0 <= x <= x1:
            text = f"{x:g}"
            (w, h), _ = cv2.getTextSize(text, font, scale, 1)
            cv2.putText(
                image, text, (at(x, y0)[0] - w // 2, top + plot_h + h + 8), font, scale, (0, 0, 0), 1, cv2.LINE_AA
            )
    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    cv2.putText(image, "epoch", (left + plot_w // 2 - 20, height - 10), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    seeds = sorted({draw.seed for draw in lines})
    colour = {seed: COLOURS[i % len(COLOURS)] for i, seed in enumerate(seeds)}
    for draw, points in sorted(lines.items(), key=lambda item: (item[0].twin, item[0].seed)):
        pixels = np.array([at(x, y) for x, y in points], dtype=np.int32)
        thickness = 1 if draw.twin else 2
        cv2.polylines(image, [pixels], False, colour[draw.seed], thickness, cv2.LINE_AA)
        for point in pixels:
            cv2.circle(image, (int(point[0]), int(point[1])), thickness + 1, colour[draw.seed], -1, cv2.LINE_AA)
    for i, seed in enumerate(seeds):
        y = top + 10 + i * 20
        cv2.line(image, (left + plot_w + 15, y), (left + plot_w + 40, y), colour[seed], 2, cv2.LINE_AA)
        cv2.putText(image, f"seed {seed}", (left + plot_w + 46, y + 5), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if any(draw.twin for draw in lines):
        y = top + 10 + len(seeds) * 20
        cv2.putText(image, "thin: labels only", (left + plot_w + 15, y + 5), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def _ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round values from at most ``low`` to at least ``high``, about ``count`` steps apart."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if whole:
        step = max(1.0, round(step))
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step - 1e-9)) + 1)]
