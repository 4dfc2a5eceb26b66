"""tefla's one-line summary of each epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lit_ssgan.data.loaders import real_images
from lit_ssgan.protocols import served_gan


class EpochLine(Callback):
    """Prints, after each validation, the original trainer's line::

        Epoch 3 [(1300, 200) images, 1.4s]: t-loss: 1.234, v-loss: 0.085, acc: 0.915, error: 0.085

    ``t-loss`` is the epoch's mean discriminator loss (what ``training_step`` returns) over the
    batches where it is finite (0 if none was; summed on the device: no host read a batch);
    ``v-loss`` the validation top-1 error (regression: the RMSE); then each validation score. An
    epoch without validation gets the line at its end, without them. The image counts are the
    unlabeled training images and the validation images of the epoch, over all processes; the time runs
    from the start of the epoch's training to the end of its validation. The ``lit-ssgan fit``
    command adds it (``--epoch_line false`` leaves it out).

    Its checkpointed state is the epoch's counts so far (images, losses, time, whether its line is
    out), so the line of an epoch resumed part way (from the middle of its batches or of its
    validation) is that of the unbroken epoch, bar the time; for that, it must come before the
    checkpoint callbacks in the Trainer's callbacks (where Lightning puts them when it is built).
    Under DDP a checkpoint holds the first process's counts: a resume counts them once per process.
    """

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._train_images = 0
        self._val_images = 0
        self._d_loss: torch.Tensor | float = 0.0  # the sum of the finite losses and their count
        self._reported_epoch = -1
        self._processes = 1
        self._epoch = 0  # the epoch the counts are of
        self._restored: dict[str, Any] | None = None  # a checkpoint's state, taken up when training starts

    def state_dict(self) -> dict[str, Any]:
        d_loss = torch.as_tensor(self._d_loss, dtype=torch.float64).expand(2).tolist()
        return {
            "epoch": self._epoch,
            "train_images": self._train_images,
            "d_loss": d_loss,
            "seconds": time.monotonic() - self._start,
            "reported_epoch": self._reported_epoch,
            "processes": self._processes,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)

    def on_train_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._processes, self._epoch = trainer.world_size, trainer.current_epoch
        state, self._restored = self._restored, None
        if state is None or state.get("epoch") != trainer.current_epoch:  # resumed at another epoch's start
            return
        share = state["processes"] if trainer.is_global_zero else 0  # counted once, on the first process
        self._train_images = state["train_images"] * share
        self._d_loss = torch.tensor(state["d_loss"], dtype=torch.float64, device=pl_module.device) * share
        self._start = time.monotonic() - state["seconds"]
        self._reported_epoch = state["reported_epoch"]

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._start, self._train_images, self._epoch = time.monotonic(), 0, trainer.current_epoch
        self._d_loss = 0.0

    def on_train_batch_end(
        self, trainer: lightning.Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._train_images += len(real_images(batch))
        if isinstance(outputs, dict) and "loss" in outputs:  # no host sync: summed on the device
            # by hand: torchmetrics' MeanMetric drops the weights (the finite flags) under nan_strategy
            # "disable", and its other strategies index by a mask (a host read)
            loss = outputs["loss"].double()
            finite = torch.isfinite(loss)
            self._d_loss = torch.stack([torch.where(finite, loss, 0.0), finite.double()]) + self._d_loss

    def on_validation_epoch_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._val_images = 0

    def on_validation_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._val_images += len(batch[0])

    def on_validation_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        scores = {name: float(value) for name, value in served_gan(pl_module, self).val_metrics.compute().items()}
        self._report(trainer, pl_module, scores)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if self._reported_epoch != trainer.current_epoch:  # no validation this epoch: the line without it
            self._val_images = 0
            self._report(trainer, pl_module, {})

    def _report(self, trainer: lightning.Trainer, pl_module: LightningModule, scores: dict[str, float]) -> None:
        self._reported_epoch = trainer.current_epoch
        device = pl_module.device
        images = torch.tensor([self._train_images, self._val_images], dtype=torch.float64, device=device)
        sums = torch.cat([images, torch.as_tensor(self._d_loss, dtype=torch.float64, device=device).expand(2)])
        # one all-reduce under DDP (every process calls it): the images, losses and batches of all processes
        train_images, val_images, d_loss_sum, batches = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        n_train, n_val, t_loss = int(train_images), int(val_images), d_loss_sum / max(batches, 1)
        v_loss = scores.get("val/error", scores.get("val/rmse"))
        line = (
            f"Epoch {trainer.current_epoch + 1} [({n_train}, {n_val}) images, {time.monotonic() - self._start:6.1f}s]"
        )
        line += f": t-loss: {t_loss:.3f}" + ("" if v_loss is None else f", v-loss: {v_loss:.3f}")
        line += "".join(f", {name.removeprefix('val/')}: {value:.3f}" for name, value in scores.items())
        self._print(trainer, line)

    @staticmethod
    @rank_zero_only
    def _print(trainer: lightning.Trainer, line: str) -> None:
        bar = trainer.progress_bar_callback
        if bar is not None and hasattr(bar, "print"):
            bar.print(line)  # above the progress bar, not through it
        else:
            print(line, flush=True)
