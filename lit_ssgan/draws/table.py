"""The study's table: each finished draw's results read from its folder, the mean ± std of each
score, written as ``draws.csv`` and ``draws.md`` beside the draws' labeled examples and
``curves.png``; and the one-line summary."""

from __future__ import annotations

import csv
import io
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from lit_ssgan.draws.curves import curves_picture, validation_curve
from lit_ssgan.draws.runs import (
    LABELS_ONLY,
    Draw,
    DrawResult,
    error_name,
    find_test_json,
    sha256,
    test_scores,
    versions,
)
from lit_ssgan.files import write_atomically


def read_result(folder: Path) -> DrawResult | None:
    """A finished draw's :class:`DrawResult`; None if it has no ``test.json``."""
    test_json = find_test_json(folder)
    if test_json is None:
        return None
    labeled = test_json.parent / "labeled_examples.csv"
    if not labeled.is_file():  # the run folder that wrote the test may not be the one that trained
        candidates = [v / "labeled_examples.csv" for v in versions(folder) if (v / "labeled_examples.csv").is_file()]
        labeled = candidates[-1] if candidates else labeled
    return DrawResult(
        test=test_scores(test_json),
        curve=validation_curve(folder),
        labeled_examples=labeled if labeled.is_file() else None,
        labeled_sha256=sha256(labeled) if labeled.is_file() else "",
    )


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (None where there are too few values)."""
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


@dataclass
class _Table:
    """The study's table: a header and rows of cells (None: empty), then the mean and std rows."""

    header: list[str]
    rows: list[list[Any]]
    mean: list[Any]
    std: list[Any]


def _table(seeds: list[int], labels_only: bool, results: dict[Draw, DrawResult | None]) -> _Table:
    by_seed = {(d.seed, d.twin): r for d, r in results.items()}
    kinds = (False, True) if labels_only else (False,)
    names = {twin: _score_names([r for (s, t), r in by_seed.items() if t == twin and r is not None]) for twin in kinds}
    header = ["seed", "labeled_sha256", *names[False]]
    if labels_only:
        header += ["labels_only/labeled_sha256", *(f"labels_only/{n}" for n in names[True])]
    error = error_name(names[False], "test/") if labels_only else None
    if error is not None and error not in names[True]:
        error = None
    if error is not None:
        header.append(f"ratio {error}")
    rows = []
    for seed in seeds:
        row: list[Any] = [seed]
        for twin in kinds:
            result = by_seed.get((seed, twin))
            scores = {**(result.val if result else {}), **(result.test if result else {})}
            row += [result.labeled_sha256 if result else None, *(scores.get(n) for n in names[twin])]
        if error is not None:
            ssl, alone = row[header.index(error)], row[header.index(f"labels_only/{error}")]
            row.append(ssl / alone if ssl is not None and alone else None)
        rows.append(row)
    mean: list[Any] = ["mean"]
    std: list[Any] = ["std"]
    for column, title in enumerate(header[1:], start=1):
        values = [row[column] for row in rows if isinstance(row[column], float)]
        m, s = _mean_std(values) if "sha256" not in title else (None, None)
        mean.append(m)
        std.append(s)
    if error is not None:  # the ratio of the means, over the draws that have both
        both = [row for row in rows if row[-1] is not None]
        ssl = _mean_std([row[header.index(error)] for row in both])[0]
        alone = _mean_std([row[header.index(f"labels_only/{error}")] for row in both])[0]
        mean[-1] = ssl / alone if ssl is not None and alone else None
        std[-1] = None
    return _Table(header, rows, mean, std)


def _score_names(results: list[DrawResult]) -> list[str]:
    """The validation then the test scores the draws have, in the order they were logged."""
    val = dict.fromkeys(name for r in results for name in r.val)
    test = dict.fromkeys(name for r in results for name in r.test)
    return [*val, *test]


def write_outputs(
    out: Path,
    fit_config: Path,
    options: list[str],
    seeds: list[int],
    labels_only: bool,
    results: dict[Draw, DrawResult | None],
) -> Path:
    """``draws.csv``, ``draws.md``, each draw's ``labeled_examples.csv`` and ``curves.png``."""
    table = _table(seeds, labels_only, results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    for row in [*table.rows, table.mean, table.std]:
        writer.writerow(["" if cell is None else repr(cell) if isinstance(cell, float) else cell for cell in row])
    _write_bytes(out / "draws.csv", buffer.getvalue().encode("utf-8"))
    _write_bytes(out / "draws.md", _markdown(table, fit_config, options, labels_only).encode("utf-8"))
    for draw, result in results.items():
        if not draw.twin and result is not None and result.labeled_examples is not None:
            copied = out / f"seed-{draw.seed}-labeled_examples.csv"
            _write_bytes(copied, result.labeled_examples.read_bytes())
    curves = {draw: result.curve for draw, result in results.items() if result is not None}
    _, png = cv2.imencode(".png", curves_picture(curves))
    _write_bytes(out / "curves.png", png.tobytes())
    return out / "draws.md"


def _write_bytes(path: Path, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))


def _markdown(table: _Table, fit_config: Path, options: list[str], labels_only: bool) -> str:
    def cell(value: Any, title: str) -> str:
        if value is None:
            return "–"
        if "sha256" in title:
            return f"`{value[:12]}`"
        return (
            f"{value:.3f}" if title.startswith("ratio") else f"{value:.4f}" if isinstance(value, float) else str(value)
        )

    def summary(column: int, title: str) -> str:
        mean, std = table.mean[column], table.std[column]
        if mean is None:
            return ""
        return cell(mean, title) + (f" ± {cell(std, title)}" if std is not None else "")

    titles = [
        t.replace("labels_only/", "labels only: ").replace("labeled_sha256", "labeled examples (sha256)")
        for t in table.header
    ]
    lines = [
        f"# {fit_config.name} over {len(table.rows)} label draws",
        "",
        f"`lit-ssgan fit --config {fit_config}"
        + (f" {shlex.join(options)}" if options else "")
        + " --seed_everything S --data.init_args.data_seed S --test_after_fit true`"
        + (f", and each draw's labels-only twin (`{' '.join(LABELS_ONLY)}`)" if labels_only else "")
        + ". Validation scores: the last epoch's; test scores: the run's test.json. The last row: mean ± sample std"
        + (" (the ratio: of the means)" if table.header[-1].startswith("ratio") else "")
        + ". Each draw's labeled examples: seed-S-labeled_examples.csv; its run: the folder seed-S.",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(titles))) + "|",
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(cell(v, t) for v, t in zip(row, table.header, strict=True)) + " |")
    lines.append("| mean ± std | " + " | ".join(summary(i, t) for i, t in enumerate(table.header[1:], start=1)) + " |")
    return "\n".join(lines) + "\n"


def summary_line(seeds: list[int], labels_only: bool, results: dict[Draw, DrawResult | None]) -> str:
    """One line: the mean ± std of the test error (and the twin's, and the ratio of the means)."""
    table = _table(seeds, labels_only, results)
    error = error_name(table.header, "test/")
    if error is None or table.mean[table.header.index(error)] is None:
        return ""

    def shown(title: str) -> str:
        at = table.header.index(title)
        mean, std = table.mean[at], table.std[at]
        return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")

    count = sum(isinstance(row[table.header.index(error)], float) for row in table.rows)
    line = f"{count} draw{'s' if count > 1 else ''}: {error} {shown(error)}"
    if f"labels_only/{error}" in table.header and table.mean[table.header.index(f"labels_only/{error}")] is not None:
        line += f"; labels only {shown(f'labels_only/{error}')}"
        if table.header[-1].startswith("ratio") and table.mean[-1] is not None:
            line += f"; ratio of the means {table.mean[-1]:.3f}"
    return line
