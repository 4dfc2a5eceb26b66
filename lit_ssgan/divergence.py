"""The divergence guard: a batch whose loss or gradients are NaN or infinite changes nothing, the run
stops (or goes on, counting it) when the host next looks, and no checkpoint is ever written with NaN
or infinite weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_ssgan.errors import DivergenceError, check_choice
from lit_ssgan.gradients import all_reduce_

OnNonFinite = Literal["stop", "skip"]


class _DeviceRecord:
    """What the device keeps between two checks (0-dim float32 tensors and term vectors): the number of
    bad batches, the index of the first among the batches since the last check, and the loss terms of
    each network's step in it."""

    def __init__(self, device: torch.device) -> None:
        self.bad = torch.zeros((), device=device)
        self.first = torch.zeros((), device=device)
        self.recording = torch.ones((), dtype=torch.bool, device=device)  # no bad batch yet: keep recording
        self.found: dict[str, Tensor] = {}  # each network's step: 1 where it must change nothing
        self.terms: dict[str, Tensor] = {}
        self.inverse_scale = torch.ones((), device=device)  # for torch's check of gradients (it unscales by it)


class NonFiniteGuard:
    """Decides on the device, with no host read, whether each optimizer step may change anything.

    A step is void when its loss or any of its network's gradients (after clipping) is NaN or
    infinite, or when the batch's discriminator step was void (a batch is dropped whole), or, with
    ``stop``, when any batch since the last check was. Optimizers that take GradScaler's
    ``found_inf`` (the fused ones: ``Adam(fused=True)``, ``AdamW``, ``SGD``) are handed the decision
    and leave the weights and their state untouched on the device; for any other optimizer the
    decision is read on the host (one read a step) and a void step gets no gradients, so it is
    skipped as well.

    The host learns of void batches at :meth:`check` (the module calls it on logging steps, at the
    end of each epoch and before each checkpoint): ``stop`` then raises
    :class:`DivergenceError` naming the first void batch and its non-finite loss terms; ``skip``
    warns and counts them in :attr:`skipped`.

    Args:
        action: ``"stop"`` or ``"skip"``.
        networks: the networks that step each batch, in their order (the discriminator alone when the
            generator does not train).

    Example:
        >>> import torch
        >>> guard, p = NonFiniteGuard("skip"), torch.nn.Parameter(torch.zeros(2))
        >>> p.grad = torch.tensor([1.0, float("nan")])
        >>> guard.start_batch("step 3 (epoch 1, batch 4)")
        >>> guard.void("discriminator", torch.tensor(1.0), {"d_loss_class": torch.tensor(1.0)}, [p.grad]).item()
        1.0
        >>> guard.void("generator", torch.tensor(1.0), {"g_loss": torch.tensor(1.0)}, []).item()  # G's too
        1.0
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as said:
        ...     guard.check()  # the host learns of it here
        >>> str(said[0].message)
        'skipped step 3 (epoch 1, batch 4): non-finite gradient (1 skipped so far)'
        >>> guard.skipped
        1
    """

    def __init__(self, action: OnNonFinite = "stop", networks: Sequence[str] = ("discriminator", "generator")) -> None:
        self.action = check_choice("on_nonfinite", action, get_args(OnNonFinite))
        self.first, self.last = networks[0], networks[-1]  # the batch's first and last steps
        self.skipped = 0  # batches dropped, as of the last check; checkpointed by the module
        self._record: _DeviceRecord | None = None
        self._where: list[str] = []  # each batch since the last check, for the message
        self._names: dict[str, list[str]] = {}  # each network's loss terms, in the order recorded

    def start_batch(self, where: str) -> None:
        """A batch begins (``where``: its step, epoch and batch, for the message)."""
        self._where.append(where)

    @torch.no_grad()
    def void(
        self, network: str, loss: Tensor, terms: Mapping[str, Tensor], grads: list[Tensor], distributed: bool = False
    ) -> Tensor:
        """Whether ``network``'s step of this batch must change nothing: a 0-dim float32 tensor on the
        device, 1.0 or 0.0 (the form of GradScaler's ``found_inf``), computed without a host read.
        The batch's steps come in the order of ``networks``. Under DDP
        (``distributed``) a step is void in every process if it is in one (an all-reduce, queued on
        the device like the gradients')."""
        record = self._record
        if record is None or record.bad.device != loss.device:
            record = self._record = _DeviceRecord(loss.device)
        values = torch.stack([loss.float(), *(t.float() for t in terms.values())])  # no_grad: no detach needed
        self._names[network] = ["total", *terms]
        found = record.found.get(network)
        if found is None:
            found = record.found[network] = torch.zeros((), device=loss.device)
        if network == self.first:
            if self.action == "stop":  # void from the first bad batch on: the weights stay as they were before it
                torch.clamp(record.bad, max=1.0, out=found)
            else:
                found.zero_()
            torch.eq(record.bad, 0, out=record.recording)  # while no batch was bad, keep the latest batch's values
            record.first.masked_fill_(record.recording, len(self._where) - 1)
        else:
            found.copy_(record.found[self.first])
        # torch's GradScaler check, over the gradients' norms (one read-only pass: checking the gradients
        # themselves would also write them, multiplied by 1) and the loss terms
        norms = torch._foreach_norm(grads) if grads else []
        torch._amp_foreach_non_finite_check_and_unscale_([*norms, values], found, record.inverse_scale)
        if distributed:
            all_reduce_(found, "max")
        saved = record.terms.get(network)
        record.terms[network] = values if saved is None else torch.where(record.recording, values, saved, out=saved)
        if network == self.last:
            record.bad.add_(found)
        return found

    def check(self) -> None:
        """Reads what the device decided since the last check (one host read) and acts on it: ``stop``
        raises, ``skip`` warns and counts."""
        record, where = self._record, self._where
        self._where = []
        if record is None or not where:
            return
        names = [(net, name) for net in record.terms for name in self._names[net]]
        values = torch.cat([record.bad.view(1), record.first.view(1), *record.terms.values()]).tolist()
        bad, first, terms = int(values[0]), int(values[1]), values[2:]
        if bad == 0:
            return
        wrong = [
            f"{name} = {value}"
            for (_, name), value in zip(names, terms, strict=True)
            if name != "total" and not math.isfinite(value)
        ]
        at = where[min(first, len(where) - 1)]
        if self.action == "stop":
            raise DivergenceError(
                f"non-finite loss at {at}: {', '.join(wrong) or 'a gradient'}. Training stopped; the last checkpoint "
                "written before this step is intact. Lower the learning rates, clip gradients (model.d_clip_val, "
                "model.g_clip_val), or set model.on_nonfinite: skip."
            )
        self.skipped += bad
        record.bad.zero_()
        rank_zero_warn(
            f"skipped {at}: non-finite {', '.join(wrong) or 'gradient'}"
            + (f", and {bad - 1} more batches since" if bad > 1 else "")
            + f" ({self.skipped} skipped so far)"
        )


def apply_void(optimizer: torch.optim.Optimizer, void: Tensor, params: list[Tensor]) -> None:
    """Makes ``optimizer``'s coming step change nothing where ``void`` is 1: a fused optimizer takes it
    as GradScaler's ``found_inf`` (decided on the device); any other reads it (one host read) and
    steps without gradients."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = void  # type: ignore[attr-defined]  # read by the fused step, as GradScaler sets it
    elif bool(void):
        for p in params:
            p.grad = None


def check_finite_weights(state_dict: Mapping[str, Tensor], step: int) -> None:
    """Refuses to checkpoint weights that hold NaN or infinite values.

    Raises:
        DivergenceError: naming the first such tensor and the step.
    """
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DivergenceError(
                f"{name} holds NaN or infinite values at step {step}: no checkpoint is written over the last good one"
            )
