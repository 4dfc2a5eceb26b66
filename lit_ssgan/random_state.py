"""The random state a checkpoint must hold for a resumed run to continue exactly: the model's
latent-noise generator, torch's global RNG (CPU, and CUDA where present; the networks' noise,
dropout and shifts draw from it) and Python's ``random`` (the offsets of pooled noise,
:class:`~lit_ssgan.models.layers.GaussianNoise`). Lightning saves none of them.

Under DDP every process's states are saved (gathered into the one checkpoint) and each process
restores its own. :class:`~lit_ssgan.SemiSupervisedGAN` saves them in its ``on_save_checkpoint``
and restores them when training starts, after the sanity check, so that nothing draws from them first.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


def captured(trainer: Any, noise_rng: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """The states to save: one row per process (every process calls this; only the first writes).

    Args:
        trainer: the run's Trainer (``world_size``, ``strategy.all_gather``).
        noise_rng: the model's latent-noise generator.
        device: the model's device (all_gather needs its tensors there).
    """
    state = {"noise": noise_rng.get_state(), "torch": torch.get_rng_state(), "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    if trainer.world_size == 1:
        return {name: s.unsqueeze(0) for name, s in state.items()}
    return {name: trainer.strategy.all_gather(s.to(device)).cpu() for name, s in state.items()}


def restore(states: dict[str, Tensor], noise_rng: torch.Generator, trainer: Any) -> None:
    """Sets this process's states from :func:`captured`'s rows (the last row where the run now has
    more processes than saved them, with a warning: the run then continues, but not bit for bit)."""
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
