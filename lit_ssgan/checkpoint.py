"""Checkpoint files: written atomically, read safely, found again after a crash, checked against
the model before loading, and mined for matching tensors (``weights_from``).

A checkpoint that cannot be written (a full disk, a read-only file system) ends the run with one
line naming it, the cause, and the checkpoint on disk that is intact, to resume from
(:func:`intact_checkpoint`). The part files that runs killed while writing a checkpoint left are
removed when the next run reads or first writes the checkpoints beside them."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_ssgan.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    CorruptCheckpointError,
    MissingFileError,
    UnsafeCheckpointError,
    WriteError,
)
from lit_ssgan.files import remove_stale_parts, write_atomically, writing

#: a file path, as str or path object
PathLike = str | os.PathLike

__all__ = [
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "SafeCheckpointIO",
    "UnsafeCheckpointError",
    "check_checkpoint_fits",
    "find_last_checkpoint",
    "intact_checkpoint",
    "load_checkpoint_file",
    "load_matching_weights",
]


def load_checkpoint_file(path: PathLike, map_location: Any = "cpu") -> Any:
    """Loads a checkpoint or state-dict file with ``torch.load(weights_only=True)``: tensors and
    plain values only, so loading a file from elsewhere can never run code.

    Raises:
        MissingFileError: naming the file, if it does not exist (a ``FileNotFoundError``).
        CheckpointError: naming the folder, if ``path`` is one: what to give instead.
        CorruptCheckpointError: naming the file, if it is not a torch checkpoint (neither torch's
            zip format nor a pickle: e.g. an ONNX model; or a TorchScript model), is truncated, or
            is corrupt.
        UnsafeCheckpointError: naming the file, if it needs arbitrary unpickling.
    """
    path = Path(path)
    if path.is_dir():
        inside = newest_checkpoint(path, recursive=True)
        example = f", e.g. {inside}" if inside is not None else ""
        raise CheckpointError(
            f"checkpoint {path} is a folder, not a file: give a checkpoint file (a .ckpt{example}), or last "
            "(lit-ssgan's --ckpt_path last: the newest last.ckpt under the run's root)"
        )
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    _check_torch_format(path)
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


#: how a file ``torch.save`` writes begins (a zip archive, since torch 1.6); one of before begins
#: with a pickle's header (protocol 2 to 5)
ZIP_MAGIC = b"PK\x03\x04"


def _check_torch_format(path: Path) -> None:
    """Refuses, before ``torch.load``, a file that ``torch.save`` did not write, or a TorchScript model."""
    try:
        with path.open("rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"cannot read the checkpoint {path}: {os.strerror(err.errno or 0)}") from None
    pickled = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if not head.startswith(ZIP_MAGIC) and not pickled:
        what = "it is empty" if not head else "it is neither torch's zip format nor a pickle"
        if path.suffix.lower() == ".onnx":
            what += "; an .onnx file is an exported classifier"
        raise CorruptCheckpointError(
            f"{path} is not a torch checkpoint ({what}): give a .ckpt file that lit-ssgan fit wrote"
        )
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                torchscript = any(name.endswith("/constants.pkl") for name in archive.namelist())
        except (OSError, zipfile.BadZipFile):  # a torn archive: torch.load names the damage
            return
        if torchscript:
            raise CorruptCheckpointError(
                f"{path} is a TorchScript model (as lit-ssgan export writes), not a checkpoint: give the .ckpt file "
                "it was exported from"
            )


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made crash-safe and load-safe.

    Saving writes the file beside its destination, flushes it to disk and renames it into
    place, so a kill at any moment leaves either the previous checkpoint or the new one, never
    a torn file. A save that fails for an ``OSError`` (a full disk) raises a
    :class:`~lit_ssgan.errors.WriteError` whose one line names the checkpoint, the cause, and the
    checkpoint on disk that is intact (:func:`intact_checkpoint`) with the ``--ckpt_path`` that
    resumes from it. Loading goes through :func:`load_checkpoint_file`.

    The part files that a process killed while writing a checkpoint left (stale: as
    :func:`~lit_ssgan.files.is_stale_part` decides) are removed from a folder the first time this
    IO reads a checkpoint in it or writes one there; on a first write into a run's
    ``checkpoints`` folder, also from the ``checkpoints`` folders of the runs beside it
    (``lightning_logs/version_*``). The ``lit-ssgan`` command uses it; from Python, pass
    ``Trainer(plugins=[SafeCheckpointIO()])``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cleared: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        self._clear_leftovers(path.parent, beside_runs=True)
        try:
            write_atomically(path, lambda f: torch.save(checkpoint, f))
        except WriteError as err:
            raise WriteError(path, err.reason, err.errno, "the checkpoint", _intact_note(path)) from err

    def load_checkpoint(
        self,
        path: PathLike,
        map_location: Callable | str | None = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise UnsafeCheckpointError("lit_ssgan loads checkpoints with weights_only=True only")
        self._clear_leftovers(Path(path).parent)
        checkpoint = load_checkpoint_file(path, map_location)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CorruptCheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
        return checkpoint

    def remove_checkpoint(self, path: PathLike) -> None:
        with writing(path):
            super().remove_checkpoint(Path(path))

    def _clear_leftovers(self, folder: Path, beside_runs: bool = False) -> None:
        """Removes, once per folder, the stale part files of checkpoints (:func:`~lit_ssgan.files.is_stale_part`)
        in ``folder``; with ``beside_runs``, where ``folder`` is a run's ``checkpoints`` (as
        Lightning's loggers lay them out: ``lightning_logs/version_N/checkpoints``), also in those
        of the other runs beside it, which a run killed while writing a checkpoint left."""
        if folder in self._cleared:
            return
        self._cleared.add(folder)
        folders = [folder]
        if beside_runs and folder.name == "checkpoints":
            folders += [other for other in folder.parent.parent.glob("*/checkpoints") if other != folder]
        removed = {path: size for each in folders for path, size in remove_stale_parts(each, suffix=".ckpt").items()}
        if removed:
            mib = sum(removed.values()) / 2**20
            rank_zero_info(
                f"removed {len(removed)} part files ({mib:.1f} MiB) that runs killed while writing a checkpoint left: "
                + ", ".join(map(str, sorted(removed)))
            )


def newest_checkpoint(folder: PathLike, recursive: bool = False) -> Path | None:
    """The ``*.ckpt`` file in ``folder`` (with ``recursive``, under it) written last, or None."""
    candidates = []
    with suppress(OSError):  # no folder, or one that cannot be listed
        for path in Path(folder).rglob("*.ckpt") if recursive else Path(folder).glob("*.ckpt"):
            with suppress(OSError):
                if path.is_file():
                    candidates.append((path.stat().st_mtime_ns, path))
    return max(candidates)[1] if candidates else None


def intact_checkpoint(path: PathLike) -> Path | None:
    """The checkpoint to resume from when writing the checkpoint ``path`` failed: the newest
    ``*.ckpt`` in its folder (``path`` itself if it was there before, since a failed write leaves
    the previous file as it was), or None. Checkpoints are written atomically, so each is complete."""
    return newest_checkpoint(Path(path).parent)


def _intact_note(path: Path) -> str:
    intact = intact_checkpoint(path)
    if intact is None:
        return f"No complete checkpoint is in {path.parent} yet"
    if intact == path:
        return f"Its previous version is intact: resume from it with the same command and --ckpt_path {intact}"
    return (
        f"The last complete checkpoint, {intact}, is intact: resume from it with the same command and "
        f"--ckpt_path {intact}"
    )


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
        "model.training.weights_from to copy only the tensors that fit."
    )
