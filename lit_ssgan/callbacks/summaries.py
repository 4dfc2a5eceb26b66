"""tefla's summaries, written every ``summary_every`` epochs."""

from __future__ import annotations

from typing import Any

import lightning
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from lit_ssgan.callbacks.samples import SampleGrid
from lit_ssgan.data.loaders import real_images
from lit_ssgan.models.base import evaluating
from lit_ssgan.protocols import GANModule, served_gan


class Summaries(SampleGrid):
    """Every ``every_n_epochs`` epochs (tefla's ``summary_every``): the sample grid of
    :class:`SampleGrid`, histograms of the discriminator's P(real) on the epoch's last unlabeled
    batch and on as many generated images (TensorBoard: ``summaries/p_real_unlabeled``,
    ``summaries/p_real_generated``), and each network's gradient norm before clipping, averaged
    over about 20 evenly spaced steps of the epoch (``summaries/d_grad_norm``,
    ``summaries/g_grad_norm``, to every logger; under DDP, this process's gradients before they are
    averaged). With ``trainer.logger: false``
    (tefla's ``is_summary``) only the PNG grids are written.

    P(real) is measured in eval mode (no input noise) with fixed latent codes, so summaries draw
    nothing from the random streams training uses.

    Args:
        num_images: images in the grid.
        every_n_epochs: summary interval, in epochs.
    """

    def __init__(self, num_images: int = 100, every_n_epochs: int = 1) -> None:
        super().__init__(num_images, every_n_epochs)
        self._norms: dict[str, list[Tensor]] = {"d": [], "g": []}
        self._unlabeled: Tensor | None = None
        self._stride, self._measure = 1, False

    def _summary_epoch(self, trainer: lightning.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        self._norms = {"d": [], "g": []}
        # the mean is over about 20 evenly spaced steps an epoch, not every step
        batches = trainer.num_training_batches
        self._stride = max(1, int(batches) // 20) if batches != float("inf") else 1

    def on_train_batch_start(
        self, trainer: lightning.Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._measure = self._summary_epoch(trainer) and batch_idx % self._stride == 0

    def on_before_optimizer_step(self, trainer: lightning.Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if not self._measure:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:  # on the device (Lightning's grad_norm reads each parameter's norm to the host)
            net = served_gan(pl_module, self).network_of(optimizer)[0]
            self._norms[net].append(torch.nn.utils.get_total_norm(grads))

    def on_train_batch_end(
        self, trainer: lightning.Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self._summary_epoch(trainer):
            self._unlabeled = real_images(batch)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # the sample grid
        if trainer.sanity_checking or not self._summary_epoch(trainer):
            return
        norms = {f"summaries/{net}_grad_norm": float(torch.stack(v).mean()) for net, v in self._norms.items() if v}
        for logger in trainer.loggers:
            logger.log_metrics(norms, step=trainer.global_step)
        if self._unlabeled is None:
            return
        p_real = self._p_real(served_gan(pl_module, self), self._unlabeled)
        for logger in trainer.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_histogram") and trainer.is_global_zero:
                for name, values in p_real.items():
                    experiment.add_histogram(f"summaries/p_real_{name}", values, trainer.current_epoch)
        self._unlabeled = None

    @staticmethod
    @torch.no_grad()
    def _p_real(gan: GANModule, unlabeled: Tensor) -> dict[str, Tensor]:
        generated = gan.generator.sample_images(len(unlabeled), seed=1).to(unlabeled.dtype)
        with evaluating(gan.discriminator):
            return {
                name: torch.sigmoid(gan.heads(gan.discriminator(images).logits).gan).float().cpu()
                for name, images in (("unlabeled", unlabeled), ("generated", generated))
            }
