"""The Polyak (exponential moving) average of the weights used for evaluation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from lit_ssgan.errors import check_probability

#: the tensors ``AveragedModel`` hands a ``multi_avg_fn``, grouped by device and dtype
Tensors = list[Tensor] | tuple[Tensor, ...]


def ema_with_warmup(decay: float) -> Callable[[Tensors, Tensors, Tensor | int], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: ``avg = d * avg + (1 - d) * current`` with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``).

    Without the warm-up, an average with the paper's decay of 0.9999 would still hold 30 % of
    the initial weights after 20 MNIST epochs (12 000 steps).
    """
    check_probability("EMA decay", decay)

    @torch.no_grad()
    def update(averaged: Tensors, current: Tensors, num_averaged: Tensor | int) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(list(averaged), list(current), 1.0 - d)
        else:  # integer buffers (batch norm's step counter): keep the latest
            for avg, cur in zip(averaged, current, strict=True):
                avg.copy_(cur)

    return update


class EMA(WeightAveraging):
    """Evaluates, checkpoints and finally keeps an exponential moving average of the weights
    (Polyak averaging; the paper evaluates its MNIST discriminator this way, decay 0.9999).

    Lightning's ``WeightAveraging`` does the bookkeeping: the average is updated after every
    batch, swapped in for validation, saved as the checkpoint's ``state_dict`` (the raw
    weights go to ``current_model_state``, so resuming continues both), and copied into the
    model when training ends, so ``test`` and ``predict`` use it.

    Args:
        decay: the decay of the average, reached after the warm-up of :func:`ema_with_warmup`.
    """

    def __init__(self, decay: float = 0.9999) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=ema_with_warmup(decay))
        self.decay = decay
