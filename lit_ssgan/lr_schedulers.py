"""Learning-rate schedules torch lacks, the run length for those that span the run, and
``resume_lr``.

tefla's ``lr_policy`` maps onto these and torch's schedulers (``model.d_lr_scheduler`` /
``model.g_lr_scheduler``, stepped per ``model.lr_scheduler_interval``):

- ``StepDecayPolicy({epoch: lr})`` → :class:`StepDecay` (absolute rates; here).
- ``PolyDecayPolicy(power, max_epoch)`` → :class:`PolyDecay` (the run's length from the Trainer).
- cosine → :class:`CosineDecay` (torch's ``CosineAnnealingLR`` needs ``T_max`` kept in sync by hand).
- cyclic → torch's ``CyclicLR`` (per batch: ``lr_scheduler_interval: step``).
- ``InvDecayPolicy(gamma, power)`` → :class:`InvDecay`, or in Python
  ``partial(LambdaLR, lr_lambda=lambda it: (1 + gamma * it) ** -power)``.
- the paper's linear decay to 0 over the last N epochs → :class:`LinearDecay` (``decay_over: N``).
- ``NoDecayPolicy`` → no scheduler.

A schedule that spans the run (:class:`RunLengthSchedule`) never takes the run's length from
the user: the module sets it from the Trainer (``max_epochs`` or ``max_steps``), so
``--trainer.max_epochs 100`` stretches the decay with the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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

    def get_last_lr(self) -> list[float | Tensor]:
        """The rates in force, also right after :meth:`set_run_length` or :func:`resume_at` changed them."""
        return [group["lr"] for group in self.optimizer.param_groups]

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


class PolyDecay(RunLengthSchedule):
    """tefla's polynomial decay: ``base · (1 - t / T) ** power`` after ``t`` of the run's ``T``
    scheduler steps (tefla: per batch, power 10).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = PolyDecay(opt, power=2.0)
        >>> schedule.set_run_length(4)
        >>> [round(schedule.factor(t), 4) for t in range(5)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0]
    """

    def __init__(self, optimizer: Optimizer, power: float = 1.0) -> None:
        if power <= 0:
            raise ConfigError(f"PolyDecay: power must be positive, got {power}")
        self.power = power
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        assert self.run_length is not None
        return max(0.0, 1.0 - step / self.run_length) ** self.power


class CosineDecay(RunLengthSchedule):
    """Half a cosine from the base rate to ``end_factor`` times it over the run."""

    def __init__(self, optimizer: Optimizer, end_factor: float = 0.0) -> None:
        if not 0.0 <= end_factor <= 1.0:
            raise ConfigError(f"CosineDecay: end_factor must lie in [0, 1], got {end_factor}")
        self.end_factor = end_factor
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        assert self.run_length is not None
        progress = min(step / self.run_length, 1.0)
        return self.end_factor + (1.0 - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class InvDecay(LRScheduler):
    """tefla's inverse decay: ``base · (1 + gamma · t) ** -power`` after ``t`` scheduler steps."""

    def __init__(self, optimizer: Optimizer, gamma: float = 1e-4, power: float = 0.75) -> None:
        if gamma < 0 or power < 0:
            raise ConfigError(f"InvDecay: gamma and power must be 0 or more, got {gamma} and {power}")
        self.gamma, self.power = gamma, power
        super().__init__(optimizer)

    def get_lr(self) -> list[float | Tensor]:
        return [float(base) * (1.0 + self.gamma * self.last_epoch) ** -self.power for base in self.base_lrs]


class StepDecay(LRScheduler):
    """tefla's step decay to absolute rates: after ``epoch`` scheduler steps (epochs, unless
    ``lr_scheduler_interval: step``) the rate becomes ``rates[epoch]``; key 0 is the rate from the
    start. Between keys the rate stays as it is, so a ``resume_lr`` holds until the next key.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = StepDecay(opt, {0: 0.1, 2: 0.01})
        >>> seen = []
        >>> for _ in range(3):
        ...     seen.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     schedule.step()
        >>> seen, opt.param_groups[0]["lr"]
        ([0.1, 0.1, 0.01], 0.01)
    """

    def __init__(self, optimizer: Optimizer, rates: Mapping[int, float]) -> None:
        if not rates or any(int(k) < 0 or v < 0 for k, v in rates.items()):
            raise ConfigError(f"StepDecay: rates must map epochs (0 or more) to rates (0 or more), got {rates}")
        self.rates = {int(k): float(v) for k, v in rates.items()}
        super().__init__(optimizer)

    def get_lr(self) -> list[float | Tensor]:
        if self.last_epoch in self.rates:
            return [self.rates[self.last_epoch] for _ in self.optimizer.param_groups]
        return [group["lr"] for group in self.optimizer.param_groups]


def resume_at(lr: float, optimizer: Optimizer, schedulers: Sequence[LRScheduler]) -> None:
    """Sets ``optimizer``'s rate to ``lr`` (tefla's ``resume_lr``) and rescales its schedulers'
    base rates by the same factor, so that they continue from ``lr`` with their own shape. (torch's
    own schedulers report the new rate from ``get_last_lr()`` after their next step; the
    optimizer's ``param_groups`` hold it at once.)"""
    for i, group in enumerate(optimizer.param_groups):
        ratio = lr / group["lr"] if group["lr"] > 0 else None
        group["lr"] = lr
        group["initial_lr"] = lr if ratio is None else group.get("initial_lr", lr) * ratio
        for scheduler in schedulers:
            if scheduler.optimizer is optimizer:
                scheduler.base_lrs[i] = lr if ratio is None else float(scheduler.base_lrs[i]) * ratio


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
