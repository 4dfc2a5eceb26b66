"""The record of which examples a run trained and validated on with their labels: a CSV in the
run's log directory and the same list in every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lit_ssgan.data.record import FILE_NAME, write_record
from lit_ssgan.data.run_record import refusal
from lit_ssgan.errors import ConfigError


class LabeledExamples(Callback):
    """When ``fit`` starts, writes ``labeled_examples.csv`` (``split,example,label``: ``labeled``
    or ``val``; the file name relative to its folder for image folders, the dataset index for the
    built-in datasets; the class name) in the run's log directory, and puts the same list in every
    checkpoint (``checkpoint["labeled_examples"]``); ``data.split_from`` reads the CSV back, for
    another run on the same draw. A resume (``fit`` from a checkpoint) whose data module gives other
    examples than the checkpoint records is refused before its first step. It serves any data module that sets
    ``labeled_examples`` (:class:`~lit_ssgan.data.SemiSupervisedDataModule` does, at its split);
    the ``lit-ssgan`` command adds it to every run; from Python, add it to the Trainer's callbacks.
    """

    def __init__(self) -> None:
        self.written: Path | None = None

    @staticmethod
    def examples(trainer: lightning.Trainer) -> dict[str, list[tuple[str, str]]] | None:
        return getattr(getattr(trainer, "datamodule", None), "labeled_examples", None)

    def on_fit_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        examples = self.examples(trainer)
        if examples is not None:
            self._write(Path(trainer.log_dir or trainer.default_root_dir) / FILE_NAME, examples)

    @rank_zero_only
    def _write(self, path: Path, examples: dict[str, list[tuple[str, str]]]) -> None:
        write_record(path, examples)
        self.written = path

    def on_save_checkpoint(
        self, trainer: lightning.Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        examples = self.examples(trainer)
        if examples is not None:
            checkpoint["labeled_examples"] = {split: [list(row) for row in rows] for split, rows in examples.items()}

    def on_load_checkpoint(
        self, trainer: lightning.Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """On ``fit`` from a checkpoint: refuses, before any step, data that gives other labeled or
        validation examples (names or labels) than the checkpoint records."""
        recorded, examples = checkpoint.get("labeled_examples"), self.examples(trainer)
        if recorded is None or examples is None or trainer.state.fn != "fit":
            return
        for split, rows in examples.items():
            was = [tuple(row) for row in recorded.get(split, [])]
            if was != list(rows):
                raise ConfigError(
                    refusal(
                        trainer.ckpt_path,
                        f"this run's data gives other {split} examples than the checkpoint's run had "
                        f"({_difference(was, list(rows))}: the data, its labels, data_seed, num_labeled or split_from "
                        f"changed; {FILE_NAME} lists the run's)",
                        f"resume on the run's data and draw (data.split_from its {FILE_NAME})",
                    )
                )


def _difference(was: list[tuple[str, str]], now: list[tuple[str, str]]) -> str:
    """How the examples ``now`` differ from those the checkpoint recorded, ``was``."""
    if len(was) != len(now):
        return f"{len(was)} in the checkpoint, {len(now)} now"
    differ = len(set(now) - set(was))
    return f"{differ} of {len(now)} differ" if differ else "the same, in another order"
