"""The grid of generated images written as training goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback

from lit_ssgan.errors import check_positive
from lit_ssgan.images import make_grid, save_grid
from lit_ssgan.protocols import served_gan


class SampleGrid(Callback):
    """Writes a grid of generated images every ``every_n_epochs`` epochs: to TensorBoard (tag
    ``samples``) and as ``samples/epoch=NNN.png`` in the run's log directory. The latent codes
    are fixed, so grids of different epochs are comparable; images under 32 px are enlarged by
    an integer factor (8×8 digits to 32×32).

    The model's ``generator`` draws them (:meth:`lit_ssgan.models.Generator.sample_images`).

    Args:
        num_images: images in the grid.
        every_n_epochs: write a grid after every this many epochs.
    """

    def __init__(self, num_images: int = 100, every_n_epochs: int = 1) -> None:
        check_positive("num_images", num_images)
        check_positive("every_n_epochs", every_n_epochs)
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        images = served_gan(pl_module, self).generator.sample_images(self.num_images).float()
        grid = make_grid(images)
        for logger in trainer.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("samples", grid, trainer.current_epoch)
        log_dir = trainer.log_dir  # a broadcast under DDP: every process must ask
        if trainer.is_global_zero and log_dir:
            save_grid(grid, images.shape[-1], Path(log_dir) / "samples" / f"epoch={trainer.current_epoch:03d}.png")
