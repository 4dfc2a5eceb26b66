"""What a resume (``fit`` with ``ckpt_path``) makes of its checkpoint, beyond Lightning's restore:
the run of a finished checkpoint says so and trains nothing; a validation the checkpoint
interrupted is run again; the learning-rate schedules continue where they were.

:class:`~lit_ssgan.SemiSupervisedGAN` calls :func:`on_load` from its ``on_load_checkpoint`` and
:func:`resume_schedules` from its ``on_train_start``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import lightning
from lightning.pytorch.utilities import rank_zero_only
from torch.optim.lr_scheduler import LRScheduler

from lit_ssgan import lr_schedulers
from lit_ssgan.internals import mark_stepped
from lit_ssgan.training import Training


class RunFinished(SystemExit):
    """``fit`` from the checkpoint of a run that has reached ``max_epochs`` or ``max_steps``: its
    line has said so, nothing was trained, and the process ends with status 0 (a requeued job whose
    run is done ends cleanly), as after the run itself."""

    def __init__(self) -> None:
        super().__init__(0)


def on_load(checkpoint: dict[str, Any], trainer: lightning.Trainer | None) -> None:
    """On ``fit`` from ``checkpoint`` (nothing otherwise): :func:`check_not_finished`, then
    :func:`rerun_interrupted_validation`. Lightning restores the loops from ``checkpoint`` after the
    module's ``on_load_checkpoint``; the run has then written nothing but its folder's config and
    logger files (which :class:`~lit_ssgan.callbacks.RunFolderCleanup` removes when a run stops here)."""
    if trainer is None or trainer.state.fn != "fit":
        return
    check_not_finished(checkpoint, trainer)
    rerun_interrupted_validation(checkpoint, validates_after(trainer, checkpoint.get("epoch", 0)))


def check_not_finished(checkpoint: dict[str, Any], trainer: lightning.Trainer) -> None:
    """Raises :class:`RunFinished`, after one line naming the checkpoint, its epochs and steps and
    how to train longer, if the checkpoint's run has reached the trainer's ``max_steps`` or
    ``max_epochs`` (as Lightning's fit loop would find on resuming it: then it trains nothing)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop:
        return
    epochs, steps = epochs_done(fit_loop), checkpoint.get("global_step", 0)
    max_steps, max_epochs = trainer.max_steps, trainer.fit_loop.max_epochs
    if max_steps != -1 and steps >= max_steps:
        option, reached = "--trainer.max_steps", f"{_count(steps, 'step')} of --trainer.max_steps {max_steps}"
        reached += f" ({_count(epochs, 'epoch')})"
    elif max_epochs is not None and max_epochs != -1 and epochs >= max_epochs:
        option, reached = "--trainer.max_epochs", f"{_count(epochs, 'epoch')} of --trainer.max_epochs {max_epochs}"
        reached += f" ({_count(steps, 'step')})"
    else:
        return
    _say(
        f"lit-ssgan: the run is finished: {trainer.ckpt_path} has trained {reached}; nothing to train. "
        f"To train it longer, resume with a larger {option}"
    )
    raise RunFinished


def epochs_done(fit_loop: dict[str, Any]) -> int:
    """The epochs a checkpoint's fit loop state (``checkpoint["loops"]["fit_loop"]``) has trained:
    those it ended, and the one under way if the checkpoint was written after its last batch (which
    Lightning's loop takes for ended on resume)."""
    epoch, done = fit_loop["epoch_progress"]["total"], fit_loop["epoch_progress"]["current"]["processed"]
    under_way = epoch["started"] == epoch["ready"] and epoch["processed"] == epoch["started"] - 1
    return done + 1 if under_way and _after_last_batch(fit_loop["epoch_loop.batch_progress"]) else done


def _after_last_batch(batches: dict[str, Any]) -> bool:
    """Whether the training batches' progress (``epoch_loop.batch_progress``) is that of a checkpoint
    written in the ``on_train_batch_end`` of an epoch's last batch: the batch done, its hooks not."""
    total = batches["total"]
    same = total["ready"] == total["started"] == total["processed"] == total["completed"] + 1
    return bool(batches["is_last_batch"]) and same


def validates_after(trainer: lightning.Trainer, epoch: int) -> bool:
    """Whether ``trainer`` validates after the last batch of epoch ``epoch`` (from 0)."""
    every = trainer.check_val_every_n_epoch
    after_each_epoch = getattr(trainer, "val_check_interval", None) == 1.0  # absent: by time
    return trainer.limit_val_batches > 0 and after_each_epoch and every is not None and (epoch + 1) % every == 0


def rerun_interrupted_validation(checkpoint: dict[str, Any], validates_after_last_batch: bool = True) -> bool:
    """Whether ``checkpoint`` was written before the end of a validation its run had begun or was
    about to begin: part way through it (a SIGTERM there: :class:`~lit_ssgan.callbacks.Preemption`),
    or, if the run ``validates_after_last_batch`` of an epoch, after that batch (``every_n_train_steps``
    a divisor of the epoch's batches). If so, its loop state now says that validation was stopped
    inside its first batch, which Lightning's loop answers on resume by running it again from its
    start, then the epoch's end. As written, Lightning would resume after it (and in the second
    case after the epoch's end): that epoch without scores, epoch line or epoch-end checkpoint. The
    rest of the checkpoint is the same at either point: a validation steps no optimizer and moves no
    training loader."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    val, batches = fit_loop.get("epoch_loop.val_loop.batch_progress"), fit_loop.get("epoch_loop.batch_progress")
    if val is None or batches is None or not batches["total"]["processed"]:
        return False
    after_last_batch = validates_after_last_batch and _after_last_batch(batches)
    current = val["current"]  # stopped between two validation batches: all its counters at the same one
    mid_validation = not val["is_last_batch"] and current["completed"] > 0 and len(set(current.values())) == 1
    if after_last_batch:
        before = val["total"]["completed"]  # validation batches of the epoch's earlier validations
        for progress in (batches["total"], batches["current"]):
            progress["completed"] += 1
    elif mid_validation:
        before = val["total"]["completed"] - current["completed"]
    else:
        return False
    val["total"] = {"ready": before + 1, "started": before + 1, "processed": before, "completed": before}
    val["current"], val["is_last_batch"] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}, False
    return True


def resume_schedules(trainer: lightning.Trainer, schedulers: Sequence[LRScheduler], options: Training) -> None:
    """When training starts: epoch schedules caught up with the epoch (a checkpoint saved after an
    epoch's last batch resumes into the next epoch without that epoch's end), and on a resume,
    ``resume_lr``. On a resume the optimizers count as having stepped (they did, before the
    checkpoint): the schedules' first step may come before this process's first optimizer step (an
    epoch's end after a rerun validation), which torch would otherwise warn about as a misuse."""
    resumed = trainer.ckpt_path is not None
    if resumed:
        for optimizer in trainer.optimizers:
            mark_stepped(optimizer)
    if options.lr_scheduler_interval == "epoch":
        lr_schedulers.catch_up(schedulers, trainer.current_epoch)
    if options.resume_lr is not None and resumed:
        for optimizer in trainer.optimizers:
            lr_schedulers.resume_at(options.resume_lr, optimizer, schedulers)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


@rank_zero_only
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
