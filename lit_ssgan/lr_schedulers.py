"""The learning-rate schedules configs name, built on torch's schedulers; the run length for those
that span the run; and ``resume_lr``.

tefla's ``lr_policy`` maps onto these and torch's schedulers (``model.d_lr_scheduler`` /
``model.g_lr_scheduler``, stepped per ``model.lr_scheduler_interval``):

- ``StepDecayPolicy({epoch: lr})`` → :class:`StepDecay` (absolute rates; the one written here).
- ``PolyDecayPolicy(power, max_epoch)`` → :class:`PolyDecay`: torch's ``PolynomialLR`` over the run.
- cosine → :class:`CosineDecay`: torch's ``CosineAnnealingLR`` over the run, then ``ConstantLR``.
- cyclic → torch's ``CyclicLR`` (per batch: ``lr_scheduler_interval: step``).
- ``InvDecayPolicy(gamma, power)`` → :class:`InvDecay`: torch's ``LambdaLR``.
- the paper's linear decay to 0 over the last N epochs → :class:`LinearDecay` (``decay_over: N``):
  torch's ``ConstantLR`` then ``LinearLR``.
- ``NoDecayPolicy`` → no scheduler.

A schedule that spans the run (:class:`RunLengthSchedule`) never takes the run's length from
the user: the module sets it from the Trainer (``max_epochs`` or ``max_steps``), so
``--trainer.max_epochs 100`` stretches the decay with the run.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
)

from lit_ssgan.errors import CheckpointMismatchError, ConfigError

Phases = tuple[list[LRScheduler], list[int]]


class RunLengthSchedule(SequentialLR):
    """A schedule whose shape depends on the run's length in scheduler steps (epochs or batches):
    torch's schedulers in a ``SequentialLR``, built by :meth:`phases` once :meth:`set_run_length`
    gives the length. Until then the rate is the base rate.

    Its state is the step count, the base rates and its arguments (``arguments``), not the run's
    length: a resumed run follows its own Trainer's length. Loading a state (any with ``last_epoch``
    and ``base_lrs``) rebuilds the phases for this run's length and replays the steps from the base
    rates, so the rate is the one this run's schedule has at that step.
    """

    run_length: int | None = None
    arguments: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self._rebuild(0)

    def phases(self, run_length: int) -> Phases:
        """torch's schedulers over a run of ``run_length`` steps, and the steps where each after the
        first takes over (``SequentialLR``'s ``schedulers`` and ``milestones``)."""
        raise NotImplementedError

    def set_run_length(self, run_length: int) -> None:
        """Shapes the schedule for a run of ``run_length`` scheduler steps, at the step it is at."""
        if run_length < 1:
            raise ConfigError(f"{type(self).__name__}: the run must be at least one step long, got {run_length}")
        self.run_length = run_length
        self._rebuild(self.last_epoch)

    def rebase(self, base_lrs: Sequence[float | Tensor]) -> None:
        """Continues at the same step with ``base_lrs`` as the base rates (:func:`resume_at`)."""
        self.base_lrs = list(base_lrs)
        self._rebuild(self.last_epoch)

    def _rebuild(self, steps: int) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["initial_lr"] = lr  # torch's schedulers take their base rates from it
        schedulers: list[LRScheduler]
        milestones: list[int]
        if self.run_length is None:
            schedulers, milestones = [ConstantLR(self.optimizer, factor=1.0, total_iters=0)], []
        else:
            schedulers, milestones = self.phases(self.run_length)
        SequentialLR.__init__(self, self.optimizer, schedulers, milestones)
        with warnings.catch_warnings():  # the replay steps before this run's optimizer has stepped
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"), UserWarning)
            for _ in range(steps):
                self.step()

    def get_last_lr(self) -> list[float | Tensor]:
        """The rates in force, also right after :func:`resume_at` changed them."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("last_epoch", "base_lrs", *self.arguments)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = [key for key in ("last_epoch", "base_lrs") if key not in state_dict]
        if missing:
            raise CheckpointMismatchError(
                f"{type(self).__name__}: the checkpoint's scheduler state has no {' or '.join(missing)}"
            )
        for key in self.arguments:
            if key in state_dict:
                setattr(self, key, state_dict[key])
        self.base_lrs = list(state_dict["base_lrs"])
        self._rebuild(int(state_dict["last_epoch"]))


class LinearDecay(RunLengthSchedule):
    """Keeps the base rate, then decays it linearly to ``end_factor`` times the base rate over
    the last ``decay_over`` scheduler steps of the run (the paper's CIFAR-10 schedule: the last
    400 of 1 200 epochs); ``decay_over=None`` decays over the whole run. The rate then stays.

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

    arguments = ("end_factor", "decay_over")

    def __init__(self, optimizer: Optimizer, end_factor: float = 0.0, decay_over: int | None = None) -> None:
        if not 0.0 <= end_factor <= 1.0:
            raise ConfigError(f"LinearDecay: end_factor must lie in [0, 1], got {end_factor}")
        if decay_over is not None and decay_over < 1:
            raise ConfigError(f"LinearDecay: decay_over must be positive or null, got {decay_over}")
        self.end_factor = end_factor
        self.decay_over = decay_over
        super().__init__(optimizer)

    def phases(self, run_length: int) -> Phases:
        length = min(self.decay_over or run_length, run_length)
        decay = LinearLR(self.optimizer, start_factor=1.0, end_factor=self.end_factor, total_iters=length)
        hold = run_length - length
        if hold == 0:
            return [decay], []
        return [ConstantLR(self.optimizer, factor=1.0, total_iters=hold), decay], [hold]


class PolyDecay(RunLengthSchedule):
    """tefla's polynomial decay: ``base · (1 - t / T) ** power`` after ``t`` of the run's ``T``
    scheduler steps (tefla: per batch, power 10); 0 from then on.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = PolyDecay(opt, power=2.0)
        >>> schedule.set_run_length(4)
        >>> rates = [opt.param_groups[0]["lr"]]
        >>> for _ in range(4):
        ...     opt.step()
        ...     schedule.step()
        ...     rates.append(round(opt.param_groups[0]["lr"], 4))
        >>> rates
        [1.0, 0.5625, 0.25, 0.0625, 0.0]
    """

    arguments = ("power",)

    def __init__(self, optimizer: Optimizer, power: float = 1.0) -> None:
        if power <= 0:
            raise ConfigError(f"PolyDecay: power must be positive, got {power}")
        self.power = power
        super().__init__(optimizer)

    def phases(self, run_length: int) -> Phases:
        return [PolynomialLR(self.optimizer, total_iters=run_length, power=self.power)], []


class CosineDecay(RunLengthSchedule):
    """Half a cosine from the base rate to ``end_factor`` times it over the run, where it then
    stays. With ``end_factor > 0`` the optimizer's param groups must share one base rate (torch's
    ``CosineAnnealingLR`` takes one absolute ``eta_min``)."""

    arguments = ("end_factor",)

    def __init__(self, optimizer: Optimizer, end_factor: float = 0.0) -> None:
        if not 0.0 <= end_factor <= 1.0:
            raise ConfigError(f"CosineDecay: end_factor must lie in [0, 1], got {end_factor}")
        self.end_factor = end_factor
        super().__init__(optimizer)

    def phases(self, run_length: int) -> Phases:
        if self.end_factor > 0 and len({float(lr) for lr in self.base_lrs}) > 1:
            raise ConfigError(
                f"CosineDecay: end_factor > 0 needs one base rate for all param groups, got {self.base_lrs}"
            )
        eta_min = self.end_factor * float(self.base_lrs[0])
        cosine = CosineAnnealingLR(self.optimizer, T_max=run_length, eta_min=eta_min)
        # torch's cosine rises again after T_max; the decay holds end_factor × base instead
        end = ConstantLR(self.optimizer, factor=self.end_factor, total_iters=sys.maxsize)
        return [cosine, end], [run_length]


class InvDecay(LambdaLR):
    """tefla's inverse decay: ``base · (1 + gamma · t) ** -power`` after ``t`` scheduler steps."""

    def __init__(self, optimizer: Optimizer, gamma: float = 1e-4, power: float = 0.75) -> None:
        if gamma < 0 or power < 0:
            raise ConfigError(f"InvDecay: gamma and power must be 0 or more, got {gamma} and {power}")
        self.gamma, self.power = gamma, power
        super().__init__(optimizer, lambda step: (1.0 + self.gamma * step) ** -self.power)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a state without lr_lambdas loads too (LambdaLR saves None for a lambda)
        super().load_state_dict({"lr_lambdas": [None] * len(self.lr_lambdas), **state_dict})


class StepDecay(LRScheduler):
    """tefla's step decay to absolute rates: after ``epoch`` scheduler steps (epochs, unless
    ``lr_scheduler_interval: step``) the rate becomes ``rates[epoch]``; key 0 is the rate from the
    start. Between keys the rate stays as it is, so a ``resume_lr`` holds until the next key.
    (Written here: torch's step schedulers multiply the rate, none sets absolute rates.)

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
    base rates by the same factor, so that they continue from ``lr`` with their own shape; from a
    rate of 0 (a decay at its end) the base rate becomes ``lr``. (torch's own schedulers report
    the new rate from ``get_last_lr()`` after their next step; the optimizer's ``param_groups``
    hold it at once.)"""
    ratios = [lr / group["lr"] if group["lr"] > 0 else None for group in optimizer.param_groups]

    def rescaled(rates: Sequence[float | Tensor]) -> list[float | Tensor]:
        return [lr if ratio is None else float(rate) * ratio for rate, ratio in zip(rates, ratios, strict=True)]

    initial_lrs = rescaled([group.get("initial_lr", lr) for group in optimizer.param_groups])
    for group, initial_lr in zip(optimizer.param_groups, initial_lrs, strict=True):
        group["initial_lr"] = initial_lr
    for scheduler in schedulers:
        if scheduler.optimizer is not optimizer:
            continue
        if isinstance(scheduler, RunLengthSchedule):
            scheduler.rebase(rescaled(scheduler.base_lrs))
        else:
            scheduler.base_lrs = rescaled(scheduler.base_lrs)
    for group in optimizer.param_groups:
        group["lr"] = lr


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


def prepare(schedulers: Sequence[Any], trainer: lightning.Trainer, interval: str) -> None:
    """Refuses a scheduler the module cannot step (``ReduceLROnPlateau`` needs a metric) and tells
    each run-length schedule the run's length, in ``interval`` steps."""
    for scheduler in schedulers:
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ConfigError("ReduceLROnPlateau is not supported: the module steps schedulers without a metric")
        if isinstance(scheduler, RunLengthSchedule):
            scheduler.set_run_length(run_length(trainer, interval))


def catch_up(schedulers: Sequence[LRScheduler], epoch: int) -> None:
    """Steps epoch schedulers up to ``epoch``: a checkpoint saved after an epoch's last batch, but
    before the epoch's end, resumes into the next epoch without running that end's step."""
    for scheduler in schedulers:
        while scheduler.last_epoch < epoch:
            scheduler.step()


def step(schedulers: Sequence[LRScheduler]) -> None:
    """One step of each scheduler (never ``ReduceLROnPlateau``: :func:`prepare` refuses it)."""
    for scheduler in schedulers:
        scheduler.step()
