"""Run folders: each run takes one of its own, atomically, and a run that fails before it has
done anything leaves none behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_ssgan.internals import move_root_dir

__all__ = ["RunFolderCleanup", "claim_run_folder", "next_version"]


def claim_run_folder(trainer: lightning.Trainer) -> list[Path]:
    """Makes the run folder (``lightning_logs/version_N``) of each of ``trainer``'s loggers that
    number their runs (TensorBoard's, CSV) and have no version yet, and gives the logger that
    number, so that runs started together on one ``default_root_dir`` never write into one folder.

    The folder is made with ``os.mkdir``, which fails if it exists: N is one more than the highest
    there, and if another run makes that folder first, this one takes the next number free.
    (Lightning picks N when first asked and makes the folder later, so two runs could pick the
    same N.) Loggers with the same root share one folder, as in Lightning. A logger whose version
    is set, or whose folder is not on a local file system, is left as it is. A Trainer without a
    logger (where Lightning would write every run into the root itself) gets such a folder as its
    ``default_root_dir``, so its config, checkpoints and results are its own too. Under several
    processes only the one of global rank 0 (as the environment tells) makes a folder; Lightning
    gives the others its folder.

    The ``lit-ssgan`` command calls it after its checks, before the Trainer runs. From Python,
    call it before ``trainer.fit`` (or ``validate``, ``test``, ``predict``).

    Returns:
        The folders made.
    """
    if not _first_process():
        return []
    versions: dict[Path, int] = {}
    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger | CSVLogger) or logger._version is not None:
            continue
        root = _versions_root(logger)
        if "://" in str(root):
            continue
        if root not in versions:
            versions[root] = _make_version_folder(root)
        logger._version = versions[root]
    if not trainer.loggers and "://" not in str(trainer.default_root_dir):
        # no logger numbers this run: it takes lightning_logs/version_N of the root as its root
        root = Path(trainer.default_root_dir) / "lightning_logs"
        versions[root] = _make_version_folder(root)
        move_root_dir(trainer, root / f"version_{versions[root]}")
    return [root / f"version_{version}" for root, version in versions.items()]


def _first_process() -> bool:
    """Whether this is the process of global rank 0, as the environment tells before the Trainer
    runs (Lightning's rank from ``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``; the node's rank)."""
    node = os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or "0"
    return getattr(rank_zero_only, "rank", 0) == 0 and node == "0"


def _versions_root(logger: TensorBoardLogger | CSVLogger) -> Path:
    root = logger.root_dir
    if isinstance(logger, TensorBoardLogger):  # its log_dir expands ~ and $VARS, its root_dir does not
        root = os.path.expanduser(os.path.expandvars(root))
    return Path(root)


def next_version(root: Path) -> int:
    """One more than the highest N of the ``version_N`` folders in ``root``; 0 if there are none."""
    numbers = [
        int(p.name.removeprefix("version_"))
        for p in (root.iterdir() if root.is_dir() else ())
        if p.name.startswith("version_") and p.name.removeprefix("version_").isdigit() and p.is_dir()
    ]
    return max(numbers, default=-1) + 1


def _make_version_folder(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
    while True:
        try:
            (root / f"version_{version}").mkdir()  # atomic: of runs racing for it, one makes it
        except FileExistsError:
            version += 1
        else:
            return version


class RunFolderCleanup(Callback):
    """A run that fails before it has done anything leaves no run folder behind.

    The run's log directory (``lightning_logs/version_N``: the logger's event file, the saved
    ``config.yaml``) is made before the data is read (by :func:`claim_run_folder`, or by Lightning).
    A ``fit`` that fails before its first training step, or a ``validate``, ``test`` or ``predict``
    that fails before it writes its results, has put nothing in it worth keeping, and would leave it
    for the next run to be numbered after; this callback removes it then, and the folders above it
    that it leaves empty, up to ``trainer.default_root_dir`` (kept if it was there before). A folder
    holding anything else (a checkpoint, a sample grid, ``test.json``, ``predictions.csv``) is kept,
    and so is everything after a ``fit``'s first step (a resumed run's first of its own) or a
    preemption. The ``lit-ssgan`` command adds it to every run.

    Args:
        root_existed: whether ``trainer.default_root_dir`` existed before the run.
        root: the Trainer's ``default_root_dir`` as built, before a run without a logger moved it to
            its run folder (:func:`claim_run_folder`); None: the Trainer's.
    """

    #: what a run folder holds before the first step, or before results are written
    NOTHING_TO_KEEP = ("config.yaml", "hparams.yaml", "events.out.tfevents.", "labeled_examples.csv")

    def __init__(self, root_existed: bool = True, root: str | os.PathLike[str] | None = None) -> None:
        self.root_existed = root_existed
        self.root = root
        self._started_at: int | None = None  # the global step when training began

    def setup(self, trainer: lightning.Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._started_at = None

    def on_train_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._started_at = trainer.global_step

    def on_exception(self, trainer: lightning.Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        stepped = self._started_at is not None and trainer.global_step > self._started_at
        if stepped or isinstance(exception, SIGTERMException) or not trainer.is_global_zero:
            return
        root = Path(self.root if self.root is not None else trainer.default_root_dir).resolve()
        if trainer.logger is not None:
            log_dir = trainer.logger.log_dir  # no broadcast: one process
        else:  # the run's own folder where claim_run_folder moved the root there, else none to remove
            log_dir = trainer.default_root_dir if Path(trainer.default_root_dir).resolve() != root else None
        if not log_dir or not Path(log_dir).is_dir():
            return
        folder = Path(log_dir)
        if any(p.is_file() and not p.name.startswith(self.NOTHING_TO_KEEP) for p in folder.rglob("*")):
            return
        shutil.rmtree(folder)
        parent = folder.parent.resolve()
        while parent.is_relative_to(root) and not any(parent.iterdir()):
            if parent == root and self.root_existed:
                break
            parent.rmdir()
            if parent == root:
                break
            parent = parent.parent
