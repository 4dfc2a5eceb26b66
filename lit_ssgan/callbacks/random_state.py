"""The random state a checkpoint must hold for a resumed run to continue exactly."""

from __future__ import annotations

import random
from typing import Any

import lightning
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_ssgan.callbacks.served import served_gan


class RandomState(Callback):
    """Saves the model's latent-noise generator (``pl_module.noise_rng``), torch's global RNG
    (CPU, and CUDA where present; the networks' noise, dropout and shifts draw from it) and Python's
    ``random`` (the offsets of pooled noise, :class:`~lit_ssgan.models.layers.GaussianNoise`) in every
    checkpoint, and restores them when training resumes. Under DDP it saves every process's
    states (gathered into the one checkpoint) and each process restores its own.

    Lightning saves no RNG state itself. The states are restored when training starts, after
    the sanity check, so that nothing can draw from them first.
    :class:`~lit_ssgan.SemiSupervisedGAN` adds this callback itself (``configure_callbacks``).
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Tensor] | None = None

    def on_save_checkpoint(
        self, trainer: lightning.Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        noise_rng = served_gan(pl_module, self).noise_rng
        if noise_rng is None:  # not training: nothing to continue
            return
        state = {"noise": noise_rng.get_state(), "torch": torch.get_rng_state(), "python": _python_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        # one row per process (every process runs this hook; only the first writes the file)
        checkpoint["rng_states"] = {name: self._gathered(trainer, pl_module, s) for name, s in state.items()}

    @staticmethod
    def _gathered(trainer: lightning.Trainer, pl_module: LightningModule, state: Tensor) -> Tensor:
        if trainer.world_size == 1:
            return state.unsqueeze(0)
        return trainer.strategy.all_gather(state.to(pl_module.device)).cpu()

    def on_load_checkpoint(
        self, trainer: lightning.Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._to_restore = checkpoint.get("rng_states")

    def on_train_start(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        states, self._to_restore = self._to_restore, None
        noise_rng = served_gan(pl_module, self).noise_rng
        if states is None or noise_rng is None:
            return
        rows = {name: s if s.dim() > (2 if name == "cuda" else 1) else s.unsqueeze(0) for name, s in states.items()}
        saved_by = len(rows["noise"])
        if saved_by != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds the random states of {saved_by} processes and this run has "
                f"{trainer.world_size}: training continues, but not bit for bit as the original run would have"
            )
        row = min(trainer.global_rank, saved_by - 1)
        noise_rng.set_state(rows["noise"][row].clone())  # a row of its own: set_state reads the storage
        torch.set_rng_state(rows["torch"][row].clone())
        if "python" in rows:  # checkpoints written before pooled noise drew from it hold none
            _set_python_state(rows["python"][row])
        if "cuda" in rows and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(rows["cuda"][row]))


def _python_state() -> Tensor:
    """Python's ``random`` state (Mersenne Twister: 624 words and a position) as a tensor."""
    version, words, _ = random.getstate()
    assert version == 3
    return torch.tensor(words, dtype=torch.int64)


def _set_python_state(state: Tensor) -> None:
    random.setstate((3, tuple(int(w) for w in state.tolist()), None))
