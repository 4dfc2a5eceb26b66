"""The Polyak (exponential moving) average of the weights used for evaluation."""

from __future__ import annotations

from typing import Any

import lightning
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from lit_ssgan.averaging import ExponentialMovingAverage, ema_with_warmup
from lit_ssgan.errors import check_probability
from lit_ssgan.internals import set_average_model

__all__ = ["EMA", "ema_with_warmup"]

#: the module's attributes the average is made without (public: ``trainer`` has a setter)
NOT_COPIED = ("trainer", "optimizer_factories")


class EMA(WeightAveraging):
    """Evaluates, checkpoints and finally keeps an exponential moving average of the weights
    (Polyak averaging; the paper evaluates its MNIST discriminator this way, decay 0.9999).

    Lightning's ``WeightAveraging`` does the bookkeeping: the average is updated after every
    batch, swapped in for validation, saved as the checkpoint's ``state_dict`` (the raw
    weights go to ``current_model_state``, so resuming continues both), and copied into the
    model when training ends, so ``test`` and ``predict`` use it; they use it from a checkpoint as
    well, whose ``state_dict`` the Trainer loads into the model. The average is an
    :class:`~lit_ssgan.averaging.ExponentialMovingAverage`: its update reads nothing from the
    device.

    Args:
        decay: the decay of the average, reached after the warm-up of :func:`ema_with_warmup`.
    """

    def __init__(self, decay: float = 0.9999) -> None:
        super().__init__(use_buffers=True)
        self.decay = check_probability("EMA decay", decay)

    def setup(self, trainer: lightning.Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            # the average is a deep copy of the module: without what it points to but does not hold,
            # the Trainer (the data, the loops) and the optimizer factories (jsonargparse's, which hold
            # the command's parser). Under DDP both reach the launcher's process handles, which cannot
            # be copied: the copy failed.
            aside = {name: getattr(pl_module, name) for name in NOT_COPIED if hasattr(pl_module, name)}
            for name in aside:
                setattr(pl_module, name, None)
            try:
                average = ExponentialMovingAverage(pl_module, self.decay, device=pl_module.device)
            finally:
                for name, value in aside.items():
                    setattr(pl_module, name, value)
            set_average_model(self, average)

    def on_load_checkpoint(
        self, trainer: lightning.Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """In ``fit``, restores the average and the raw weights from ``checkpoint``. In ``validate``,
        ``test`` and ``predict`` it does nothing: the model holds the checkpoint's ``state_dict``,
        which for a checkpoint of this callback is the average, and is what they evaluate (even on a
        Trainer that has fit before)."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
