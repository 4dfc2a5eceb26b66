"""tefla's ``gpu_memory_fraction``: a cap on the GPU memory the run may take."""

from __future__ import annotations

from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lit_ssgan.errors import ConfigError


class GPUMemoryFraction(Callback):
    """Caps this process's share of its CUDA device's memory at ``fraction``
    (``torch.cuda.set_per_process_memory_fraction``); under DDP each process caps the device it
    uses. On a CPU run it only says that it does not apply.

    Args:
        fraction: in (0, 1].
    """

    def __init__(self, fraction: float) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"GPUMemoryFraction: fraction must lie in (0, 1], got {fraction}")
        self.fraction = fraction

    def setup(self, trainer: lightning.Trainer, pl_module: Any, stage: str) -> None:
        device = trainer.strategy.root_device
        if device.type != "cuda":
            rank_zero_info(f"GPUMemoryFraction: the run uses no CUDA device ({device.type}); the cap does not apply")
            return
        torch.cuda.set_per_process_memory_fraction(self.fraction, device)
