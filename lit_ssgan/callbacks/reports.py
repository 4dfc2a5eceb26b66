"""What ``predict`` and ``test`` leave behind: a CSV of predictions, a confusion matrix picture, a
per-class table, and beside them a JSON naming the checkpoint and the data they came from."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import lightning
import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_ssgan._version import __version__
from lit_ssgan.data.decoding import UNREADABLE
from lit_ssgan.errors import ConfigError
from lit_ssgan.files import atomic_file, write_atomically, write_json, writing
from lit_ssgan.parts import non_plain_hparams
from lit_ssgan.protocols import served_gan


def run_record(trainer: lightning.Trainer) -> dict[str, Any]:
    """What a ``test`` or ``predict`` output came from: the checkpoint (None: the weights the
    model had, as after ``fit`` without a checkpoint to pick), its step, and the data module with
    its plain options (folders, sizes, seeds)."""
    datamodule = getattr(trainer, "datamodule", None)
    options = dict(getattr(datamodule, "hparams", None) or {})
    objects = set(non_plain_hparams(options))  # transforms and the like: not JSON
    ckpt = trainer.ckpt_path
    return {
        "checkpoint": str(Path(ckpt).resolve()) if ckpt else None,
        "global_step": trainer.global_step,
        "datamodule": type(datamodule).__name__ if datamodule is not None else None,
        "data": {k: v for k, v in options.items() if not k.startswith("_") and k not in objects},
        "lit_ssgan_version": __version__,
    }


class PredictionsCSV(BasePredictionWriter):
    """Writes ``predict``'s results to a CSV: ``file``, the predicted class name and one probability
    column per class, named after it (regression: ``file``, ``value``), one row per image in the
    data module's order (``predict_files``; else the row index). The rows are written as each batch
    comes, to a file beside the CSV that is renamed into place when predict ends: memory stays
    constant however many images there are, and a failed predict leaves no partial file (a write
    that fails, for a full disk, ends it with one line naming the CSV: :mod:`lit_ssgan.files`).
    Images the data module could not read (:data:`~lit_ssgan.data.decoding.UNREADABLE`) get no
    row, and are counted in one warning. Beside the CSV, the same name with ``.json`` records the
    checkpoint and the data (:func:`run_record`). The ``lit-ssgan predict`` command adds it.

    Args:
        path: the CSV; default ``predictions.csv`` in the run's log directory.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.written: Path | None = None
        self._open = ExitStack()

    def setup(self, trainer: lightning.Trainer, pl_module: LightningModule, stage: str) -> None:
        self.check_processes(trainer)  # before predicting, not after

    @staticmethod
    def check_processes(trainer: lightning.Trainer) -> None:
        """Refuses a Trainer of several processes: one CSV, written in order, by one process."""
        if trainer.world_size > 1:
            raise ConfigError("writing predictions to a CSV needs one process (trainer.devices: 1)")

    def on_predict_epoch_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._target = Path(self.path) if self.path else Path(trainer.log_dir or ".") / "predictions.csv"
        file = self._open.enter_context(atomic_file(self._target, "w", newline="", encoding="utf-8"))
        self._csv = csv.writer(file, quoting=csv.QUOTE_MINIMAL)
        datamodule = getattr(trainer, "datamodule", None)
        self._files = [str(f) for f in getattr(datamodule, "predict_files", [])]
        self._names: list[str] = list(getattr(datamodule, "class_names", None) or [])
        self._seen, self._rows = 0, 0
        self._unreadable: list[str] = []

    def write_on_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        outputs = torch.as_tensor(prediction).float().cpu()
        readable = (batch[1] != UNREADABLE).cpu().tolist()
        files = self._files[self._seen : self._seen + len(outputs)] if self._files else None
        files = files or [str(i) for i in range(self._seen, self._seen + len(outputs))]
        if len(files) != len(outputs):
            raise RuntimeError(f"{self._seen + len(outputs)} predictions for {len(self._files)} files")
        if self._seen == 0:
            if outputs.ndim == 2:
                self._names = self._names or [str(k) for k in range(outputs.shape[1])]
            with writing(self._target):
                self._csv.writerow(["file", "value"] if outputs.ndim == 1 else ["file", "prediction", *self._names])
        self._seen += len(outputs)
        with writing(self._target):  # a full disk: one line naming the CSV
            for f, values, ok in zip(files, outputs.tolist(), readable, strict=True):
                if not ok:
                    self._unreadable.append(f)
                elif outputs.ndim == 1:  # regression
                    self._csv.writerow([f, f"{values:.6g}"])
                else:
                    self._csv.writerow([f, self._names[int(np.argmax(values))], *(f"{p:.6g}" for p in values)])
        self._rows += sum(readable)

    def on_predict_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if self._files and self._seen != len(self._files):
            raise RuntimeError(f"{self._seen} predictions for {len(self._files)} files")
        self._open.close()  # renames the finished file into place
        self.written = self._target
        record = run_record(trainer)
        write_json(self._target.with_suffix(".json"), {**record, "rows": self._rows})
        source = record["checkpoint"] or "the weights in memory"
        print(f"predictions: {self._rows} rows written to {self._target} (from {source})", flush=True)
        if self._unreadable:
            rank_zero_warn(
                f"predict: {len(self._unreadable)} images could not be read and have no row, e.g. "
                f"{', '.join(self._unreadable[:3])}"
            )

    def on_exception(self, trainer: lightning.Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._open.__exit__(type(exception), exception, exception.__traceback__)  # removes the partial file


class TestReport(Callback):
    """After ``test``: ``confusion_matrix.png`` (rows: true class, columns: predicted, each row
    normalised, counts in the cells, class names on the axes) and ``per_class.csv`` (precision,
    recall, F1 and support per class; classification only), and ``test.json`` (the scores, the
    checkpoint and the data: :func:`run_record`) in the run's log directory. The command adds it
    to ``test`` and to ``fit`` with ``test_after_fit``.
    """

    def __init__(self) -> None:
        self.matrix: MulticlassConfusionMatrix | None = None
        self.written: list[Path] = []

    def on_test_epoch_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self.matrix = None
        discriminator = served_gan(pl_module, self).discriminator
        if not discriminator.regression:
            self.matrix = MulticlassConfusionMatrix(discriminator.num_classes).to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.matrix is not None and isinstance(outputs, Tensor):
            self.matrix.update(outputs, batch[1])

    def on_test_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if self.matrix is None:
            return
        counts = self.matrix.compute().cpu().numpy().astype(np.int64)  # synchronised under DDP
        log_dir = trainer.log_dir
        if not trainer.is_global_zero or not log_dir:
            return
        k = len(counts)
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None) or [str(c) for c in range(k)]
        out = Path(log_dir)
        self.written = [out / "confusion_matrix.png", out / "per_class.csv"]
        _, png = cv2.imencode(".png", confusion_picture(counts, names))
        table = per_class_table(counts, names).encode()
        write_atomically(self.written[0], lambda f: f.write(png.tobytes()))
        write_atomically(self.written[1], lambda f: f.write(table))

    def on_test_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every process must ask (else the first waits alone)
        if not trainer.is_global_zero or not log_dir:
            return
        scores = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        path = Path(log_dir) / "test.json"
        write_json(path, {**run_record(trainer), "scores": scores})
        self.written.append(path)


def per_class_table(counts: np.ndarray, names: Sequence[str]) -> str:
    """CSV of precision, recall, F1 and support per class from a confusion matrix (rows: true)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", "precision", "recall", "f1", "support"])
    for c, name in enumerate(names):
        tp, predicted, actual = counts[c, c], counts[:, c].sum(), counts[c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        writer.writerow([name, f"{precision:.4f}", f"{recall:.4f}", f"{f1:.4f}", int(actual)])
    return buffer.getvalue()


def confusion_picture(counts: np.ndarray, names: Sequence[str], cell: int = 48) -> np.ndarray:
    """A confusion matrix as a BGR image: blue cells darker as a larger share of the true class's
    images (row) went to that prediction (column); the count in each cell; names on the axes."""
    k = len(counts)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    label_width = max(cv2.getTextSize(str(n), font, scale, 1)[0][0] for n in names) + 12
    top, left = label_width + 24, label_width + 24
    image = np.full((top + k * cell + 8, left + k * cell + 8, 3), 255, dtype=np.uint8)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    for r in range(k):
        for c in range(k):
            y, x = top + r * cell, left + c * cell
            shade = int(255 * (1 - shares[r, c]))
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (255, shade, shade), -1)
            colour = (255, 255, 255) if shares[r, c] > 0.5 else (0, 0, 0)
            text = str(counts[r, c])
            (w, h), _ = cv2.getTextSize(text, font, scale, 1)
            cv2.putText(image, text, (x + (cell - w) // 2, y + (cell + h) // 2), font, scale, colour, 1, cv2.LINE_AA)
    for i, name in enumerate(names):
        (w, h), _ = cv2.getTextSize(str(name), font, scale, 1)
        cv2.putText(
            image, str(name), (left - w - 6, top + i * cell + (cell + h) // 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA
        )
        column = np.full((h + 6, w + 4, 3), 255, dtype=np.uint8)
        cv2.putText(column, str(name), (2, h + 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        column = np.asarray(cv2.rotate(column, cv2.ROTATE_90_COUNTERCLOCKWISE), dtype=np.uint8)
        x, y = left + i * cell + (cell - column.shape[1]) // 2, top - column.shape[0] - 6
        image[y : y + column.shape[0], x : x + column.shape[1]] = np.minimum(
            image[y : y + column.shape[0], x : x + column.shape[1]], column
        )
    cv2.putText(image, "predicted", (left, 14), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    side = np.full((image.shape[0], 20, 3), 255, dtype=np.uint8)
    true_label = np.full((20, 60, 3), 255, dtype=np.uint8)
    cv2.putText(true_label, "true", (10, 15), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    side[top : top + 60] = cv2.rotate(true_label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return np.concatenate([side, image], axis=1)
