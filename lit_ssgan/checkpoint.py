"""Checkpoint files: written atomically, read safely, found again after a crash, checked against
the model before loading, and mined for matching tensors (``weights_from``)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_ssgan.errors import (
    CheckpointMismatchError,
    ConfigError,
    CorruptCheckpointError,
    MissingFileError,
    UnsafeCheckpointError,
)
from lit_ssgan.files import write_atomically

#: a file path, as str or path object
PathLike = str | os.PathLike

__all__ = [
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "SafeCheckpointIO",
    "UnsafeCheckpointError",
    "check_checkpoint_fits",
    "find_last_checkpoint",
    "load_checkpoint_file",
    "load_matching_weights",
]


def load_checkpoint_file(path: PathLike, map_location: Any = "cpu") -> Any:
    """Loads a checkpoint or state-dict file with ``torch.load(weights_only=True)``: tensors and
    plain values only, so loading a file from elsewhere can never run code.

    Raises:
        MissingFileError: naming the file, if it does not exist (a ``FileNotFoundError``).
        UnsafeCheckpointError: naming the file, if it needs arbitrary unpickling.
        CorruptCheckpointError: naming the file, if it is truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load raises many kinds on a torn or foreign file
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            raise UnsafeCheckpointError(
                f"{path} holds Python objects that only arbitrary unpickling could rebuild, and unpickling can run "
                "code: refused. lit_ssgan loads tensors and plain values only (torch.load(weights_only=True)). If "
                "you trust the file, load it yourself with weights_only=False and save its state_dict."
            ) from None
        raise CorruptCheckpointError(f"{path} is truncated or corrupt: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made crash-safe and load-safe.

    Saving writes the file beside its destination, flushes it to disk and renames it into
    place, so a kill at any moment leaves either the previous checkpoint or the new one, never
    a torn file. Loading goes through :func:`load_checkpoint_file`. The ``lit-ssgan`` command
    uses it; from Python, pass ``Trainer(plugins=[SafeCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_atomically(Path(path), lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self,
        path: PathLike,
        map_location: Callable | str | None = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise UnsafeCheckpointError("lit_ssgan loads checkpoints with weights_only=True only")
        checkpoint = load_checkpoint_file(path, map_location)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CorruptCheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
        return checkpoint


def find_last_checkpoint(root: PathLike) -> Path | None:
    """The most recently written ``last*.ckpt`` under ``root`` (any run version), or None."""
    candidates = [p for p in Path(root).rglob("last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def load_matching_weights(model: nn.Module, path: PathLike) -> list[str]:
    """Copies into ``model`` the tensors of the checkpoint or state-dict file at ``path`` whose
    names and shapes match, and leaves the others as they are (tefla's ``weights_from``). The
    file is loaded with :func:`load_checkpoint_file`, so it can run no code.

    Returns:
        The names of the tensors copied.

    Raises:
        ConfigError: naming the file, if no tensor matches.
    """
    source = load_checkpoint_file(path)
    if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
        source = source["state_dict"]
    own = model.state_dict()
    matching = {
        name: tensor
        for name, tensor in source.items()
        if name in own and isinstance(tensor, Tensor) and tensor.shape == own[name].shape
    }
    if not matching:
        raise ConfigError(f"weights_from: no tensor in {path} matches this model's names and shapes")
    model.load_state_dict(matching, strict=False)
    rank_zero_info(f"weights_from: {len(matching)} of {len(own)} tensors loaded from {path}")
    return sorted(matching)


def _describe(data: Any) -> str:
    if not isinstance(data, dict):
        return "data this checkpoint does not record"
    module = data.get("datamodule") or "data from Python"
    return f"{module} (images {tuple(data.get('image_shape', ()))}, {data.get('num_classes')} classes)"


def check_checkpoint_fits(checkpoint: dict[str, Any], model: nn.Module, data: dict[str, Any]) -> None:
    """Refuses, before Lightning loads it, a checkpoint whose tensors do not fit ``model``.

    Args:
        checkpoint: the loaded checkpoint, with its ``state_dict`` and, if lit_ssgan wrote it, the
            ``data`` it was trained on (``datamodule``, ``image_shape``, ``num_classes``).
        model: the model about to receive it.
        data: what ``model`` was built for, in the same form.

    Raises:
        CheckpointMismatchError: naming the first tensor whose shape differs (both shapes) and
            the data each side was built for.
    """
    own = model.state_dict()
    theirs = checkpoint.get("state_dict", {})
    differ = [name for name in own if name in theirs and tuple(theirs[name].shape) != tuple(own[name].shape)]
    missing = [name for name in own if name not in theirs]
    if not differ and not missing:
        return
    if differ:
        name = differ[0]
        what = (
            f"{name} is {tuple(theirs[name].shape)} in the checkpoint but {tuple(own[name].shape)} in the model "
            f"the config builds ({len(differ)} tensors differ)"
        )
    else:
        what = f"the checkpoint has no {missing[0]} ({len(missing)} tensors missing)"
    raise CheckpointMismatchError(
        f"the checkpoint does not fit this config: {what}. It was trained on {_describe(checkpoint.get('data'))}; "
        f"this run's data is {_describe(data)}. Use the config the checkpoint was trained with, or "
        "model.weights_from to copy only the tensors that fit."
    )
