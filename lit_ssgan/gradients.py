"""What happens to a network's gradients between its backward pass and its optimizer step:
synchronisation across processes, tefla's per-parameter multipliers, and clipping."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, get_args

import torch
from jsonargparse.typing import PositiveFloat
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lit_ssgan.errors import ConfigError, check_choice, check_positive
from lit_ssgan.parts import Part

ClipAlgorithm = Literal["norm", "value", "norm_per_tensor"]


class GradientPolicy(Part):
    """What happens to one network's gradients before its optimizer step (``model.d_gradients``,
    ``model.g_gradients``): tefla's multipliers, then clipping. Lightning's gradient clipping
    (``Trainer(gradient_clip_val=...)``) does not apply to manual optimization; this does.

    Args:
        clip_val: clip the gradients to this norm or value (None: off).
        clip_algorithm: ``"norm"`` (the global norm of the network's gradients), ``"value"``, or
            ``"norm_per_tensor"`` (each gradient tensor to the norm on its own: tefla's default).
        multipliers: ``{pattern: factor}``: scale the gradients of the parameters whose names match
            the pattern (``fnmatch``, e.g. ``"hidden.0.*"``; :func:`matched_multipliers`).
    """

    def __init__(
        self,
        clip_val: PositiveFloat | None = None,
        clip_algorithm: ClipAlgorithm = "norm",
        multipliers: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.clip_val = check_positive("clip_val", clip_val, optional=True)
        self.clip_algorithm = check_choice("clip_algorithm", clip_algorithm, get_args(ClipAlgorithm))
        self.multipliers = dict(multipliers or {})
        self.matched: list[tuple[Tensor, float]] = []

    def bind(self, network: nn.Module, option: str) -> GradientPolicy:
        """Matches the multipliers to ``network``'s parameters (``option`` names it in errors)."""
        self.matched = matched_multipliers(network, self.multipliers, f"{option}.multipliers")
        return self

    def apply(self, module: Any, optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
        """Multiplies, then clips, the gradients of ``params`` (the ``optimizer``'s, of ``module``,
        a LightningModule, whose ``clip_gradients`` clips by norm or value)."""
        multiply(self.matched)
        if self.clip_val is None:
            return
        if self.clip_algorithm == "norm_per_tensor":
            clip_per_tensor(params, self.clip_val)
        else:
            module.clip_gradients(
                optimizer, gradient_clip_val=self.clip_val, gradient_clip_algorithm=self.clip_algorithm
            )


def _managed_ddp(trainer: Any) -> DistributedDataParallel | None:
    """The DDP wrapper whose gradient sync lit_ssgan does itself, if the run has one.

    DDP's reducer expects every parameter to get a gradient in each backward pass; a GAN's D step
    leaves the generator's untouched and its G step the discriminator's, so DDP fails at the first
    backward. Instead each backward runs outside DDP's sync (``no_sync``) and each network's
    gradients are averaged once, in one all-reduce, just before its optimizer step. A strategy made
    with ``find_unused_parameters=True`` keeps DDP's own sync (slower: see the README).
    """
    model = getattr(trainer, "model", None)
    return model if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters else None


def no_ddp_sync(trainer: Any) -> AbstractContextManager:
    """A context for a backward pass: the strategy's ``block_backward_sync`` (DDP's ``no_sync``)
    where lit_ssgan syncs gradients itself."""
    return trainer.strategy.block_backward_sync() if _managed_ddp(trainer) is not None else nullcontext()


@torch.no_grad()
def ddp_average(params: Iterable[Tensor], trainer: Any) -> None:
    """Averages the gradients of ``params`` across processes in one all-reduce (under DDP only)."""
    if _managed_ddp(trainer) is None:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = all_reduce_(torch.cat([g.reshape(-1) for g in grads]), "sum").div_(torch.distributed.get_world_size())
    pieces = flat.split([g.numel() for g in grads])
    torch._foreach_copy_(grads, [piece.view_as(g) for piece, g in zip(pieces, grads, strict=True)])


def all_reduce_(tensor: Tensor, op: Literal["sum", "max"]) -> Tensor:
    """Reduces ``tensor`` in place across the run's processes, queued on its device: Lightning's
    ``strategy.reduce`` adds a barrier first, which makes the host wait for the device."""
    torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, op.upper()))
    return tensor


def matched_multipliers(network: nn.Module, patterns: Mapping[str, float], option: str) -> list[tuple[Tensor, float]]:
    """The parameters of ``network`` whose names match a pattern, each with its factor (tefla's
    ``gradient_multipliers``). Patterns are shell-style (``fnmatch``) against the names of
    ``network.named_parameters()``, e.g. ``"hidden.0.*"``; the first matching pattern wins.

    Raises:
        ConfigError: naming ``option`` and the pattern, if a pattern matches no parameter.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        >>> [(tuple(p.shape), f) for p, f in matched_multipliers(net, {"0.*": 0.1}, "m")]
        [((3, 2), 0.1), ((3,), 0.1)]
    """
    named = list(network.named_parameters())
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in named):
            names = ", ".join(name for name, _ in named[:6])
            raise ConfigError(f"{option}: {pattern!r} matches no parameter (they are named like {names}, ...)")
    matched: list[tuple[Tensor, float]] = []
    for name, param in named:
        factor = next((f for pattern, f in patterns.items() if fnmatch.fnmatchcase(name, pattern)), None)
        if factor is not None:
            matched.append((param, float(factor)))
    return matched


@torch.no_grad()
def multiply(multipliers: Iterable[tuple[Tensor, float]]) -> None:
    """Scales each parameter's gradient by its factor."""
    for param, factor in multipliers:
        if param.grad is not None:
            param.grad.mul_(factor)


@torch.no_grad()
def clip_per_tensor(params: Iterable[Tensor], max_norm: float) -> None:
    """Clips each gradient tensor to ``max_norm`` on its own (tefla's default: norm 5), unlike
    ``clip_grad_norm_``, which scales all of them by their global norm.

    Example:
        >>> p, q = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
        >>> p.grad, q.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.5])
        >>> clip_per_tensor([p, q], 1.0)
        >>> [round(g, 4) for g in p.grad.tolist()], q.grad.tolist()
        ([0.6, 0.8], [0.5])
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (norm + 1e-6), max=1.0) for norm in norms]
    torch._foreach_mul_(grads, scales)
