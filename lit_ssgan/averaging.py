"""The exponential moving average of a network's weights, updated without a host read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lit_ssgan.errors import check_probability

#: the tensors an average update takes, of one dtype
Tensors = list[Tensor] | tuple[Tensor, ...]


def ema_with_warmup(decay: float) -> Callable[[Tensors, Tensors, Tensor | int], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: ``avg = d * avg + (1 - d) * current`` with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``); integer tensors (batch norm's step counter)
    take the current value.

    Without the warm-up, an average with the paper's decay of 0.9999 would still hold 30 % of
    the initial weights after 20 MNIST epochs (12 000 steps).
    """
    check_probability("EMA decay", decay)

    @torch.no_grad()
    def update(averaged: Tensors, current: Tensors, num_averaged: Tensor | int) -> None:
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            n = float(num_averaged)  # an int from ExponentialMovingAverage: no host read
            # torch's EMA at this update's decay: its own has no warm-up (a fixed decay)
            get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(averaged, current, num_averaged)
        else:  # torch's would average the counter and truncate it, one tensor at a time
            torch._foreach_copy_(list(averaged), list(current))

    return update


class ExponentialMovingAverage(AveragedModel):
    """``AveragedModel`` with the warm-up EMA of :func:`ema_with_warmup`, whose update reads nothing
    from the device and dispatches one foreach op per dtype: torch's own ``update_parameters`` reads
    ``n_averaged`` from the device twice and detaches every tensor, each update.

    The number of updates is kept on the host (:attr:`updates`) beside torch's ``n_averaged``
    buffer, which is still counted on the device, so that checkpoints keep their form; loading a
    state dict sets the host count from it.

    Args:
        model: the network to average (deep-copied, as ``AveragedModel`` does).
        decay: the average's decay after the warm-up.
        device: where the average lives (default: with the model).
        use_buffers: average the buffers too (batch norm's running statistics).
    """

    def __init__(
        self, model: nn.Module, decay: float, device: torch.device | None = None, use_buffers: bool = True
    ) -> None:
        super().__init__(model, device=device, use_buffers=use_buffers, multi_avg_fn=ema_with_warmup(decay))
        self.decay = decay
        self.updates = 0
        self.register_load_state_dict_post_hook(_count_from_state)

    def _tensors(self, model: nn.Module) -> list[Tensor]:
        return [*model.parameters(), *model.buffers()] if self.use_buffers else list(model.parameters())

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averaged, current = self._tensors(self.module), self._tensors(model)
        if len(averaged) != len(current):
            raise ValueError(f"the average holds {len(averaged)} tensors and the model {len(current)}")
        current = [c if c.device == a.device else c.to(a.device) for a, c in zip(averaged, current, strict=True)]
        if self.updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            groups: dict[torch.dtype, tuple[list[Tensor], list[Tensor]]] = {}
            for a, c in zip(averaged, current, strict=True):
                group = groups.setdefault(a.dtype, ([], []))
                group[0].append(a)
                group[1].append(c)
            assert self.multi_avg_fn is not None
            for group_averaged, group_current in groups.values():
                self.multi_avg_fn(group_averaged, group_current, self.updates)
        self.n_averaged.add_(1)
        self.updates += 1


def _count_from_state(module: nn.Module, incompatible_keys: Any) -> None:
    assert isinstance(module, ExponentialMovingAverage)
    module.updates = int(module.n_averaged)  # once, when a checkpoint is loaded
