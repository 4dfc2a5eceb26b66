"""The random state a checkpoint must hold for a resumed run to continue exactly."""

from __future__ import annotations

from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback


class RandomState(Callback):
    """Saves the model's latent-noise generator (``pl_module.noise_rng``) and torch's global RNG
    (CPU, and CUDA where present; the networks' Gaussian noise layers draw from it) in every
    checkpoint, and restores them when training resumes.

    Lightning saves no RNG state itself. The states are restored when training starts, after
    the sanity check, so that nothing can draw from them first.
    :class:`~lit_ssgan.SemiSupervisedGAN` adds this callback itself (``configure_callbacks``).
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: lightning.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        noise_rng: torch.Generator | None = getattr(pl_module, "noise_rng", None)
        if noise_rng is None:  # not training: nothing to continue
            return
        state = {"noise": noise_rng.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        checkpoint["rng_states"] = state

    def on_load_checkpoint(self, trainer: lightning.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self._to_restore = checkpoint.get("rng_states")

    def on_train_start(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        state, self._to_restore = self._to_restore, None
        if state is None:
            return
        pl_module.noise_rng.set_state(state["noise"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["cuda"]))
