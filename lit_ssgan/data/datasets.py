"""Image datasets that gather a batch at a time, and readers for the files they come from."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lit_ssgan.errors import BadFileError, DownloadError, MissingFileError

Batch = tuple[Tensor, Tensor]


class ImageRows:
    """Same-shaped uint8 images ``(N, H, W, C)``, in memory or memory-mapped from a decode cache,
    that are gathered only when asked for: a subset or a concatenation is a list of row numbers,
    not a copy, so no split of a dataset holds its pixels twice (or at all, when mapped).

    Indexing with an int, a slice or a list of ints (then, as with arrays, the pixels' own
    indices) gathers those images into a new array; ``np.asarray(rows)`` gathers them all.

    Example:
        >>> a, b = np.zeros((3, 2, 2, 1), np.uint8), np.ones((2, 2, 2, 1), np.uint8)
        >>> rows = ImageRows.concat([ImageRows(a).subset([2, 0]), ImageRows(b)])
        >>> len(rows), rows.shape, rows[[0, 2, 3]][:, 0, 0, 0].tolist()
        (4, (4, 2, 2, 1), [0, 1, 1])
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray | None = None) -> None:
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(f"images must be a uint8 array (N, H, W, C), got {array.dtype} {array.shape}")
        self._arrays = [array]
        # image i is row _rows[i] of array _source[i]
        self._rows = np.arange(len(array)) if rows is None else np.asarray(rows, dtype=np.int64)
        self._source = np.zeros(len(self._rows), dtype=np.int64)

    @classmethod
    def concat(cls, parts: Sequence[ImageRows]) -> ImageRows:
        if len({p.shape[1:] for p in parts}) != 1:
            raise ValueError(f"cannot join images of shapes {sorted({p.shape[1:] for p in parts})}")
        joined = cls.__new__(cls)
        joined._arrays = [a for p in parts for a in p._arrays]
        offsets = np.cumsum([0] + [len(p._arrays) for p in parts[:-1]])
        joined._source = np.concatenate([p._source + o for p, o in zip(parts, offsets, strict=True)])
        joined._rows = np.concatenate([p._rows for p in parts])
        return joined

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._arrays[0].shape[1:])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageRows:
        """The images at ``indices``, in that order, still not gathered."""
        indices = np.asarray(indices, dtype=np.int64)
        chosen = ImageRows.__new__(ImageRows)
        chosen._arrays, chosen._source, chosen._rows = self._arrays, self._source[indices], self._rows[indices]
        return chosen

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then the rest of the key within them
            return self[key[0]][(slice(None),) + key[1:]]
        if isinstance(key, slice):
            return self[np.arange(len(self))[key]]
        indices = np.asarray(key, dtype=np.int64)
        if indices.ndim == 0:
            return self[indices[None]][0]
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        source, rows = self._source[indices], self._rows[indices]
        for s in np.unique(source):
            where = np.flatnonzero(source == s)
            # a mapped file is read in ascending order (one sweep), each image then put in its place
            order = np.argsort(rows[where], kind="stable")
            out[where[order]] = self._arrays[s][rows[where[order]]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        images = self[np.arange(len(self))]
        return images if dtype is None else images.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        # a memory-mapped array is pickled (to DataLoader workers under spawn) as its file, not its pixels
        arrays = [(a.filename, a.offset, a.shape) if isinstance(a, np.memmap) else a for a in self._arrays]
        return {"arrays": arrays, "source": self._source, "rows": self._rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._arrays = [
            np.memmap(a[0], np.uint8, "r", offset=a[1], shape=a[2]) if isinstance(a, tuple) else a
            for a in state["arrays"]
        ]
        self._source, self._rows = state["source"], state["rows"]


#: images as the data modules hand them over: an array, or rows of arrays (memory-mapped ones too)
Images = np.ndarray | ImageRows


def as_rows(images: Images) -> ImageRows:
    return images if isinstance(images, ImageRows) else ImageRows(images)


class ImageDataset(Dataset[Batch]):
    """Images and labels, fetched a batch at a time: the batch's uint8 images are gathered (from
    memory or a memory-mapped decode cache), augmented on the fly with an albumentations pipeline
    if there is one (uint8 HWC in, as albumentations expects), and only then converted to float in
    [0, 1]. No copy of all the images is made, in any precision.

    Args:
        images: ``(N, H, W, C)`` uint8 array, or :class:`ImageRows`.
        labels: ``(N,)`` integer labels (-1 where unknown), or float labels for regression.
        transform: an albumentations pipeline (``A.Compose``) applied to each image, or None.
    """

    def __init__(self, images: Images, labels: np.ndarray, transform: A.Compose | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = as_rows(images)
        # class indices, or numbers for regression
        self.labels = torch.as_tensor(
            labels, dtype=torch.float32 if np.issubdtype(labels.dtype, np.floating) else torch.long
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Batch:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch at once; the DataLoader calls this instead of ``__getitem__``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return to_batch(self.images[index.numpy()], self.transform, index), self.labels[index]


def to_batch(images: np.ndarray, transform: A.Compose | None, index: Tensor) -> Tensor:
    """A batch of uint8 images, augmented by ``transform`` (if any), as float in [0, 1]."""
    if transform is not None:
        # albumentations draws from generators of its own, which no global seed reaches: seeded
        # from the batch's indices, a batch is augmented alike in a rerun and in a resumed run,
        # and each batch differently (every epoch's order is new)
        transform.set_random_seed(zlib.crc32(index.numpy().tobytes()))
        images = np.stack([transform(image=image)["image"] for image in images])
    return _to_tensor(images)


def _to_tensor(images: np.ndarray) -> Tensor:
    """``(N, H, W, C)`` uint8 (or float already in [0, 1]) to ``(N, C, H, W)`` float32 in [0, 1]."""
    if images.ndim == 3:  # albumentations drops a single channel axis for some transforms
        images = images[..., None]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float().contiguous()


def collate_batch(batch: Any) -> Any:
    """The dataset already returns whole batches (``__getitems__``): nothing left to collate."""
    return batch


def read_idx(path: Path) -> np.ndarray:
    """Reads a (gzipped) IDX file of unsigned bytes: MNIST's format.

    Raises:
        MissingFileError: naming the file, if it does not exist.
        BadFileError: naming the file, if it is not a uint8 IDX file or is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"expected file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise BadFileError(f"{path} could not be read: {err}") from err
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise BadFileError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise BadFileError(f"{path} is truncated: header says {shape}, found {len(raw) - offset} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()  # writable


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file's bytes (``hashlib``'s ``algorithm``), read a MiB at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_files(directory: Path, files: dict[str, str], mirrors: Sequence[str]) -> None:
    """Downloads each missing ``{name: md5}`` file into ``directory``, trying each mirror in turn.

    Files already present are checked, not downloaded again.

    Raises:
        DownloadError: if a file's md5 does not match, or no mirror could serve it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, md5 in files.items():
        target = directory / name
        if not target.is_file():
            errors = []
            for mirror in mirrors:
                partial = target.with_suffix(target.suffix + ".part")
                try:
                    with urllib.request.urlopen(mirror + name, timeout=60) as response, open(partial, "wb") as out:
                        shutil.copyfileobj(response, out)
                    partial.replace(target)
                    break
                except OSError as err:
                    partial.unlink(missing_ok=True)
                    errors.append(f"{mirror}{name}: {err}")
            else:
                raise DownloadError(f"could not download {name}:\n  " + "\n  ".join(errors))
        if file_digest(target) != md5:
            raise DownloadError(f"{target} does not have the expected md5 {md5}; delete it and try again")
