"""Preemption: a SIGTERM stops ``fit`` with a checkpoint of exactly where it is, one line, and a
non-zero exit status, so that a scheduler requeues the job instead of taking it as finished."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

#: the exit status of a stopped run: 128 + SIGTERM, what a shell reports for a TERM'd process
EXIT_STATUS = 128 + signal.SIGTERM


class Preemption(Callback):
    """What SLURM, Kubernetes and cloud schedulers send before they stop a job is SIGTERM (some
    clusters send SIGUSR1 first). Lightning's signal connector notes a SIGTERM and stops training
    after the batch in progress; this callback then

    - writes ``last.ckpt`` (beside the run's other checkpoints) of exactly that point, through the
      run's checkpoint IO (atomic) and with the loaders' places, so ``--ckpt_path last`` goes on as
      if nothing had happened, bit for bit;
    - prints one line saying so and how to resume;
    - makes the process exit with status 143 (``EXIT_STATUS``) instead of Lightning's 0, so that a
      retry loop or scheduler knows the run did not finish.

    SIGUSR1 is handled as SIGTERM, unless the run is under SLURM, where Lightning's own SIGUSR1
    handler (auto-requeue) stays in charge. The ``lit-ssgan`` command adds this callback to every
    run; from Python, add it to the Trainer's callbacks.
    """

    def __init__(self) -> None:
        self._previous_sigusr1: Any = None

    def on_train_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        # after Lightning has set its own handlers (it restores what it found when fit ends)
        usable = hasattr(signal, "SIGUSR1") and not SLURMEnvironment.detect() and _main_thread()
        if usable and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, _as_sigterm)

    def on_train_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._restore_sigusr1()

    def on_exception(self, trainer: lightning.Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_sigusr1()
        if not isinstance(exception, SIGTERMException):
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # every process: a collective under DDP
        exception.code = EXIT_STATUS  # the SystemExit Lightning raises ends the process with this status
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        _say(
            f"lit-ssgan: stopped by SIGTERM after step {trainer.global_step} (epoch {trainer.current_epoch + 1}, "
            f"batch {batch}); checkpoint written to {path}. Resume with the same command and --ckpt_path last"
        )

    def _restore_sigusr1(self) -> None:
        if self._previous_sigusr1 is not None and _main_thread():
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
        self._previous_sigusr1 = None


def last_checkpoint_path(trainer: lightning.Trainer) -> Path:
    """Where the run's ``last.ckpt`` goes: beside its ModelCheckpoint's files, else in the log
    directory's ``checkpoints`` (``--ckpt_path last`` finds either)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def _as_sigterm(signum: int, frame: FrameType | None) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@rank_zero_only
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
