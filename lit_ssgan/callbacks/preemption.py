"""Preemption and Ctrl-C: a SIGTERM or a Ctrl-C (SIGINT) stops ``fit`` with a checkpoint of exactly
where it is, one line, and a non-zero exit status, so that a scheduler requeues a preempted job
instead of taking it as finished, and a script can tell either from a finished run."""

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

from lit_ssgan.errors import INTERRUPTED_EXIT_STATUS
from lit_ssgan.internals import stop_as_on_sigterm

#: the exit status of a run stopped by SIGTERM (or SIGUSR1): 128 + SIGTERM, what a shell reports
#: for a TERM'd process
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

    Under DDP, a SIGTERM to any one process stops them all after the same batch: this callback
    notes the signal, the processes agree on it at the end of each batch, and then Lightning stops
    as above (its own handler hung such a run: :func:`lit_ssgan.internals.stop_as_on_sigterm`).

    SIGUSR1 is handled as SIGTERM, unless the run is under SLURM, where Lightning's own SIGUSR1
    handler (auto-requeue) stays in charge.

    Ctrl-C (SIGINT) while training is handled the same way, with its own line (``stopped by
    Ctrl-C``) and exit status 130 (``INTERRUPTED_EXIT_STATUS``, which a retry loop that reruns on 143
    does not rerun): the batch in progress is finished and its checkpoint written. Further Ctrl-Cs
    are ignored until that checkpoint is written, so none can cut it short (a write cut short would
    leave the previous ``last.ckpt`` as it was in any case: each is written beside and renamed into
    place). This holds where SIGINT has Python's own handler (a terminal, a plain script); where it
    is ignored or handled by someone else, that stays as it is. A Ctrl-C before training began
    (while the data is read, during the sanity check) or in ``validate``, ``test`` or ``predict``,
    where there is nothing to resume, takes Lightning's way out (exit status 1; the command makes it
    130), with a line of this callback's saying so.

    The ``lit-ssgan`` command adds this callback to every run; from Python, add it to the
    Trainer's callbacks.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self.interrupted = False  # a Ctrl-C stopped the run
        self._training = False
        self._several = False  # several processes: SIGTERM is noted here and agreed on each batch
        self._sigterm = False  # this process received SIGTERM (several processes)

    def on_train_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        # after Lightning has set its own handlers (it restores what it found when fit ends)
        self.interrupted, self._training, self._sigterm = False, True, False
        if not _main_thread():
            return
        self._several = trainer.world_size > 1
        if self._several:  # Lightning's handler hangs DDP (internals.stop_as_on_sigterm); this one only notes
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._note_sigterm)
        usable = hasattr(signal, "SIGUSR1") and not SLURMEnvironment.detect()
        if usable and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _as_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._sigterm = True  # nothing more in a signal handler: the processes agree at the batch's end

    def on_train_batch_end(
        self, trainer: lightning.Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # every process, at the same point of the same batch: if any received SIGTERM, all stop after it
        if self._several and trainer.strategy.reduce_boolean_decision(self._sigterm, all=False):
            stop_as_on_sigterm(trainer)

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:  # stopping already: the checkpoint is being written, or soon will be
            return
        self.interrupted = True
        _as_sigterm(signum, frame)  # Lightning's way: this batch finished, then SIGTERMException

    def on_train_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._training = False
        self._restore_signals()

    def on_exception(self, trainer: lightning.Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # before training or outside fit: nothing to save
            self._restore_signals()
            _say(f"lit-ssgan: {_stage(trainer)} stopped by Ctrl-C; {self._nothing_written(trainer)}")
            self._training = False
            return
        if not isinstance(exception, SIGTERMException):
            self._restore_signals()
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # every process: a collective under DDP
        # Ctrl-C is ignored until here (Lightning restores the handlers it found when it tears down)
        self._restore_signals()
        exception.code = INTERRUPTED_EXIT_STATUS if self.interrupted else EXIT_STATUS
        cause = "Ctrl-C" if self.interrupted else "SIGTERM"
        _say(
            f"lit-ssgan: stopped by {cause} after step {trainer.global_step} ({_where(trainer)}); checkpoint "
            f"written to {path}. Resume with the same command and --ckpt_path last"
        )

    def _nothing_written(self, trainer: lightning.Trainer) -> str:
        if trainer.state.fn is None or trainer.state.fn.value != "fit":
            return "nothing was written"
        if self._training:  # SIGINT was not Python's own handler's when training began
            return "no checkpoint of this point was written (--ckpt_path last resumes from the last one saved)"
        return "it had not begun to train: nothing to save. Run the same command to start it again"

    def _restore_signals(self) -> None:
        if _main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._previous = {}


def last_checkpoint_path(trainer: lightning.Trainer) -> Path:
    """Where the run's ``last.ckpt`` goes: beside its ModelCheckpoint's files, else in the log
    directory's ``checkpoints`` (``--ckpt_path last`` finds either)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def _where(trainer: lightning.Trainer) -> str:
    """``epoch E, batch B`` of the batch last finished, or ``end of epoch E`` when that epoch's end
    has run too (the epoch counter has then moved on, the batch counter not yet)."""
    epochs = trainer.fit_loop.epoch_progress.current
    batch = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    if epochs.completed == epochs.ready > 0:
        return f"end of epoch {epochs.completed}"
    return f"epoch {trainer.current_epoch + 1}, batch {batch}"


def _stage(trainer: lightning.Trainer) -> str:
    return trainer.state.fn.value if trainer.state.fn is not None else "the run"


def _as_sigterm(signum: int, frame: FrameType | None) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@rank_zero_only
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
