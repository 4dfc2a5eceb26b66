"""Checkpoint files: written atomically, read safely, found again after a crash."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class UnsafeCheckpointError(RuntimeError):
    """The file holds Python objects that only arbitrary unpickling (which can run code) rebuilds."""


class CorruptCheckpointError(RuntimeError):
    """The file is truncated or is not a checkpoint."""


def load_checkpoint_file(path: _PATH, map_location: Any = "cpu") -> Any:
    """Loads a checkpoint or state-dict file with ``torch.load(weights_only=True)``: tensors and
    plain values only, so loading a file from elsewhere can never run code.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
        UnsafeCheckpointError: naming the file, if it needs arbitrary unpickling.
        CorruptCheckpointError: naming the file, if it is truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
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

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(aside, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(aside, path)  # atomic on POSIX and Windows
        finally:
            aside.unlink(missing_ok=True)
        _fsync_directory(path.parent)  # make the rename itself durable

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | str | None = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise UnsafeCheckpointError("lit_ssgan loads checkpoints with weights_only=True only")
        checkpoint = load_checkpoint_file(path, map_location)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CorruptCheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
        return checkpoint


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is atomic anyway
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def find_last_checkpoint(root: _PATH) -> Path | None:
    """The most recently written ``last*.ckpt`` under ``root`` (any run version), or None."""
    candidates = [p for p in Path(root).rglob("last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None
