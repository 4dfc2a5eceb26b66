"""The divergence guard: a NaN or infinite loss stops the run (or skips the batch), and no
checkpoint is ever written with NaN or infinite weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_ssgan.errors import DivergenceError, check_choice

OnNonFinite = Literal["stop", "skip"]


class NonFiniteGuard:
    """Checks each step's loss before its backward pass.

    Args:
        action: ``"stop"`` raises :class:`DivergenceError` naming the step and the loss terms
            that are not finite; ``"skip"`` warns and lets the caller drop the step, counting it
            in :attr:`skipped`.

    Example:
        >>> guard = NonFiniteGuard("skip")
        >>> guard.finite(torch.tensor(float("nan")), {"g_loss": torch.tensor(float("nan"))}, "step 3")
        False
        >>> guard.skipped
        1
    """

    def __init__(self, action: OnNonFinite = "stop") -> None:
        self.action = check_choice("on_nonfinite", action, get_args(OnNonFinite))
        self.skipped = 0  # steps dropped for a non-finite loss; checkpointed by the module

    def finite(self, loss: Tensor, terms: Mapping[str, Tensor], where: str, strategy: Any = None) -> bool:
        """Whether ``loss`` is finite (one host sync); if not, stops or counts a skipped step.

        Args:
            loss: the total loss about to be backpropagated.
            terms: its named parts, to say which one went wrong.
            where: the step, for the message (e.g. ``"step 5 (epoch 1, batch 1)"``).
            strategy: a Lightning strategy: under DDP, a step is finite only if it is in every
                process, so that all of them skip it (or stop) together.
        """
        finite = bool(torch.isfinite(loss))
        if strategy is not None:
            finite = strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return True
        bad = ", ".join(f"{name} = {value.item()}" for name, value in terms.items() if not torch.isfinite(value))
        if self.action == "stop":
            raise DivergenceError(
                f"non-finite loss at {where}: {bad or f'total {loss.item()}'}. Training stopped; the last checkpoint "
                "written before this step is intact. Lower the learning rates, clip gradients (model.d_clip_val, "
                "model.g_clip_val), or set model.on_nonfinite: skip."
            )
        self.skipped += 1
        rank_zero_warn(f"skipped {where}: non-finite {bad} ({self.skipped} skipped so far)")
        return False


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
