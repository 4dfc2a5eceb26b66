"""A ``fit`` that fails before its first step leaves no run folder behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class RunFolderCleanup(Callback):
    """Lightning makes the run's log directory (``lightning_logs/version_N``: the logger's event
    file, the saved ``config.yaml``) before the data is read. A run that fails before its first
    step has put nothing in it worth keeping, and would leave it for the next run to be numbered
    after; this callback removes it then, and the folders above it that it leaves empty, up to
    ``trainer.default_root_dir`` (kept if it was there before). A folder holding anything else (a
    checkpoint, a sample grid, metrics) is kept, and so is everything after a first step or a
    preemption. The ``lit-ssgan`` command adds it to ``fit``.

    Args:
        root_existed: whether ``trainer.default_root_dir`` existed before the run.
    """

    #: what a run folder holds before the first step
    NOTHING_TO_KEEP = ("config.yaml", "hparams.yaml", "events.out.tfevents.")

    def __init__(self, root_existed: bool = True) -> None:
        self.root_existed = root_existed

    def on_exception(self, trainer: lightning.Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0 or isinstance(exception, SIGTERMException) or not trainer.is_global_zero:
            return
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None  # no broadcast: one process
        if not log_dir or not Path(log_dir).is_dir():
            return
        folder = Path(log_dir)
        if any(p.is_file() and not p.name.startswith(self.NOTHING_TO_KEEP) for p in folder.rglob("*")):
            return
        shutil.rmtree(folder)
        root = Path(trainer.default_root_dir).resolve()
        parent = folder.parent.resolve()
        while parent.is_relative_to(root) and not any(parent.iterdir()):
            if parent == root and self.root_existed:
                break
            parent.rmdir()
            if parent == root:
                break
            parent = parent.parent
