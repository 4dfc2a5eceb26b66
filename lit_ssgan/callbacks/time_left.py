"""How long the whole run will take: one line after its first steps, and again when it changes."""

from __future__ import annotations

import time
from typing import Any

import lightning
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only


def duration(seconds: float) -> str:
    """Seconds for a person.

    Example:
        >>> duration(42), duration(754), duration(3 * 3600 + 20 * 60), duration(50 * 3600)
        ('42 s', '13 min', '3 h 20 min', '2 days 2 h')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} day{'s' if days > 1 else ''} {hours} h" if hours else f"{days} days"


#: the least change of the estimate, in seconds, that is said again
SAID_AGAIN_AFTER = 30.0


class TimeLeft(Callback):
    """Prints how long the run will take at the speed measured so far::

        lit-ssgan: 1.62 s a batch: the run's 78000 batches (100 epochs of 780) take about 35 h more
        (done around Thu 02:10)

    once ``first_after`` batches have been timed (the first batch, which warms up, is not), and
    again at an epoch's end when the estimate of the time left has moved by more than ``change``
    (a fraction) since the last line, and by more than :data:`SAID_AGAIN_AFTER` seconds (a short run's
    estimate of seconds moves by more than a quarter with the machine's load alone). The time of
    validation (measured once it has run) is added for the epochs left. The ``lit-ssgan fit`` command
    adds it.

    Args:
        first_after: batches timed before the first estimate.
        change: the relative change of the estimate that prints it again.
    """

    def __init__(self, first_after: int = 5, change: float = 0.25) -> None:
        self.first_after, self.change = first_after, change
        self._seen = 0  # batches ended, the first (warm-up) one included
        self._batch_seconds = 0.0
        self._batches = 0  # batches timed
        self._val_seconds: float | None = None
        self._printed: tuple[float, float] | None = None  # (the estimate of the time left, when)

    def on_train_batch_start(self, trainer: lightning.Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._seen += 1
        if self._seen > 1:
            self._batch_seconds += time.monotonic() - self._start
            self._batches += 1
        if self._printed is None and self._batches == self.first_after:
            self._report(trainer)

    def on_validation_epoch_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_seconds = time.monotonic() - self._val_start

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if self._printed is None or not self._batches:
            return
        left, printed_at = self._printed
        expected_now = left - (time.monotonic() - printed_at)
        if abs(self._left(trainer) - expected_now) > max(self.change * expected_now, SAID_AGAIN_AFTER):
            self._report(trainer)

    def _left(self, trainer: lightning.Trainer) -> float:
        """Seconds left at the measured speed: the batches left, and validation for the epochs left."""
        total = trainer.estimated_stepping_batches
        per_epoch = trainer.num_training_batches
        batches_left = max(0.0, float(total) - trainer.global_step)
        seconds = batches_left * self._batch_seconds / self._batches
        if self._val_seconds is not None and isinstance(per_epoch, int) and per_epoch > 0:
            seconds += -(-batches_left // per_epoch) * self._val_seconds
        return seconds

    def _report(self, trainer: lightning.Trainer) -> None:
        left = self._left(trainer)
        self._printed = (left, time.monotonic())
        total, per_epoch = trainer.estimated_stepping_batches, trainer.num_training_batches
        if trainer.global_step >= total or total == float("inf"):
            return
        epochs = f" ({total / per_epoch:.0f} epochs of {per_epoch})" if isinstance(per_epoch, int) and per_epoch else ""
        done = time.strftime("%a %H:%M", time.localtime(time.time() + left))
        per_batch = self._batch_seconds / self._batches
        self._print(
            f"lit-ssgan: {per_batch:.3g} s a batch: the run's {int(total)} batches{epochs} take about "
            f"{duration(left)} more (done around {done})"
        )

    @staticmethod
    @rank_zero_only
    def _print(line: str) -> None:
        print(line, flush=True)
