"""Learning-rate schedules torch lacks, and the run length for those that span the run.

A schedule that spans the run (:class:`RunLengthSchedule`) never takes the run's length from
the user: the module sets it from the Trainer (``max_epochs`` or ``max_steps``), so
``--trainer.max_epochs 100`` stretches the decay with the run.
"""

from __future__ import annotations

import math
from typing import Any

import lightning
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lit_ssgan.errors import ConfigError


class RunLengthSchedule(LRScheduler):
    """A schedule whose shape depends on the run's length in scheduler steps (epochs or batches),
    set by :meth:`set_run_length` once the Trainer knows it. Until then the rate is the base
    rate. The length is not checkpointed: a resumed run follows its own Trainer's length."""

    run_length: int | None = None

    def set_run_length(self, run_length: int) -> None:
        if run_length < 1:
            raise ConfigError(f"{type(self).__name__}: the run must be at least one step long, got {run_length}")
        self.run_length = run_length
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def factor(self, step: int) -> float:
        """The multiplier of the base rate after ``step`` scheduler steps."""
        raise NotImplementedError

    def get_lr(self) -> list[float | Tensor]:
        factor = 1.0 if self.run_length is None else self.factor(self.last_epoch)
        return [float(base) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("run_length", None)
        return state


class LinearDecay(RunLengthSchedule):
    """Keeps the base rate, then decays it linearly to ``end_factor`` times the base rate over
    the last ``decay_over`` scheduler steps of the run (the paper's CIFAR-10 schedule: the last
    400 of 1 200 epochs); ``decay_over=None`` decays over the whole run.

    Args:
        optimizer: the optimizer whose rates it sets.
        end_factor: the fraction of the base rate reached when the run ends.
        decay_over: length of the decay, in scheduler steps (epochs, or batches with
            ``lr_scheduler_interval: step``); None: the whole run.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = LinearDecay(opt, end_factor=0.0, decay_over=2)
        >>> schedule.set_run_length(4)
        >>> rates = []
        >>> for _ in range(4):
        ...     rates.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     schedule.step()
        >>> rates, opt.param_groups[0]["lr"]
        ([1.0, 1.0, 1.0, 0.5], 0.0)
    """

    def __init__(self, optimizer: Optimizer, end_factor: float = 0.0, decay_over: int | None = None) -> None:
        if not 0.0 <= end_factor <= 1.0:
            raise ConfigError(f"LinearDecay: end_factor must lie in [0, 1], got {end_factor}")
        if decay_over is not None and decay_over < 1:
            raise ConfigError(f"LinearDecay: decay_over must be positive or null, got {decay_over}")
        self.end_factor = end_factor
        self.decay_over = decay_over
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        assert self.run_length is not None
        length = min(self.decay_over or self.run_length, self.run_length)
        progress = min(max(step - (self.run_length - length), 0) / length, 1.0)
        return 1.0 - (1.0 - self.end_factor) * progress


def run_length(trainer: lightning.Trainer, interval: str) -> int:
    """The run's length in scheduler steps: batches (``interval="step"``) or epochs."""
    if interval == "epoch" and trainer.max_steps < 0 and trainer.max_epochs is not None and trainer.max_epochs > 0:
        return trainer.max_epochs
    batches = trainer.estimated_stepping_batches  # min(max_steps, max_epochs x batches an epoch)
    if math.isinf(batches):
        raise ConfigError("a schedule that spans the run needs trainer.max_epochs or trainer.max_steps")
    if interval == "step":
        return int(batches)
    return math.ceil(batches / max(1, trainer.num_training_batches))
