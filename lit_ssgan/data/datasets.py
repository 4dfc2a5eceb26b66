"""In-memory image datasets, and readers for the files they come from."""

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


class ImageDataset(Dataset[Batch]):
    """Images and labels held in memory, fetched a batch at a time.

    Without augmentation the images are converted once to a float tensor in [0, 1], so a
    batch is one indexing operation. With an albumentations pipeline, each image is
    augmented on the fly (uint8 HWC in, as albumentations expects) and then scaled.

    Args:
        images: ``(N, H, W, C)`` uint8 array.
        labels: ``(N,)`` integer labels (-1 where unknown), or float labels for regression.
        transform: an albumentations pipeline (``A.Compose``) applied to each image, or None.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: A.Compose | None = None) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be a uint8 array (N, H, W, C), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        # class indices, or numbers for regression
        self.labels = torch.as_tensor(
            labels, dtype=torch.float32 if np.issubdtype(labels.dtype, np.floating) else torch.long
        )
        self.transform = transform
        self._tensors = None if transform else _to_tensor(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Batch:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch at once; the DataLoader calls this instead of ``__getitem__``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if self._tensors is not None:
            return self._tensors[index], self.labels[index]
        assert self.transform is not None
        # albumentations draws from generators of its own, which no global seed reaches: seeded
        # from the batch's indices, a batch is augmented alike in a rerun and in a resumed run,
        # and each batch differently (every epoch's order is new)
        self.transform.set_random_seed(zlib.crc32(index.numpy().tobytes()))
        augmented = np.stack([self.transform(image=self.images[i])["image"] for i in indices])
        return _to_tensor(augmented), self.labels[index]


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


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
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
        if md5sum(target) != md5:
            raise DownloadError(f"{target} does not have the expected md5 {md5}; delete it and try again")
