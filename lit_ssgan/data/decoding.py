"""Image files to uint8 arrays: one file (:func:`read_image`), many in threads into an array that
may be memory-mapped (:func:`decode_into`), or a batch at a time as a loader reads them
(:class:`DecodingDataset`, for ``predict``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lit_ssgan.data.datasets import Batch, to_batch
from lit_ssgan.errors import BadFileError

#: what :func:`read_image` does, in words: part of a decode cache's key, so that a change to the
#: decoding (or to OpenCV) is never served from a cache that an older one wrote
DECODER = f"read_image v1 (OpenCV {cv2.__version__}; 16-bit /257; alpha dropped; area shrink, linear enlarge)"

#: what an error about an unreadable image adds
SKIP_HINT = "(data.skip_bad_images true skips such files)"

#: the label :class:`DecodingDataset` gives an image it could not read (with ``skip_bad``)
UNREADABLE = -2


def read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image as ``(image_size, image_size, channels)`` uint8 (RGB order for colour): decoded
    with OpenCV, grey/colour converted, an alpha channel dropped, resized (area interpolation when
    shrinking). 16-bit images are scaled to 8 bits.

    Raises:
        BadFileError: naming the file, if it cannot be decoded.
    """
    if path.suffix.lower() in (".jpg", ".jpeg") and _jpeg_truncated(path):
        raise BadFileError(f"{path} is truncated: it ends before its end-of-image marker")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise BadFileError(f"{path} could not be read as an image")
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = ((image - low) * (255 / max(high - low, 1e-12))).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 4:
        image = image[..., :3]  # drop alpha
    if channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None]
    elif channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (image_size, image_size):
        shrinking = image.shape[0] > image_size or image.shape[1] > image_size
        image = cv2.resize(
            image, (image_size, image_size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
        if image.ndim == 2:
            image = image[..., None]
    return np.ascontiguousarray(image)


def _jpeg_truncated(path: Path) -> bool:
    """Whether a JPEG file lacks its end-of-image marker (a download or copy cut short), which
    OpenCV would decode into an image filled with grey. (Cut PNG, WEBP and BMP files fail to decode.)"""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        return not f.read().rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def decode_into(
    paths: Sequence[Path],
    out: np.ndarray,
    skip_bad: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[int, str]:
    """Decodes ``paths`` into the rows of ``out`` (``(N, H, W, C)`` uint8, in memory or
    memory-mapped), in threads (OpenCV releases the GIL); ``progress(done, total, seconds)`` is
    called as chunks finish.

    Returns:
        The files that could not be read, ``{index: message}`` (their rows are left as they
        were); only with ``skip_bad``: otherwise the first one raises, at once.
    """
    _, size, _, channels = out.shape
    failed: dict[int, str] = {}
    stop = threading.Event()
    start = time.perf_counter()

    def decode(chunk: range) -> int:
        for i in chunk:
            if stop.is_set():
                break
            try:
                out[i] = read_image(paths[i], size, channels)
            except BadFileError as err:
                if not skip_bad:
                    stop.set()
                    raise BadFileError(f"{err} {SKIP_HINT}") from None
                failed[i] = str(err)
        return len(chunk)

    # chunks of up to 256, so that small images are not swamped by the pool's per-task overhead,
    # and at least 4 for each thread, so that a small batch still keeps them all busy
    threads = os.cpu_count() or 1
    step = max(1, min(256, -(-len(paths) // (4 * threads))))
    chunks = [range(begin, min(begin + step, len(paths))) for begin in range(0, len(paths), step)]
    done = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = {pool.submit(decode, chunk) for chunk in chunks}
        while pending:
            finished, pending = wait(pending, timeout=5, return_when=FIRST_EXCEPTION)
            for future in finished:
                done += future.result()  # the first unreadable file raises here (without skip_bad)
            if progress is not None:
                progress(done, len(paths), time.perf_counter() - start)
    return dict(sorted(failed.items()))


class DecodingDataset(Dataset[Batch]):
    """Image files decoded a batch at a time, as the loader asks for them: what ``predict`` reads,
    so that a folder of any size goes through in constant memory, in the order of ``paths``. An
    image that cannot be read raises (naming it) or, with ``skip_bad``, comes back blank with the
    label :data:`UNREADABLE` (the predictions writer leaves it out and reports it); all others are
    labeled -1 (unknown).

    Args:
        paths: the image files.
        image_size: side of the square images.
        channels: 1 (grey) or 3 (RGB).
        transform: an albumentations pipeline applied to each image, or None.
        skip_bad: mark unreadable images instead of stopping.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        image_size: int,
        channels: int,
        transform: A.Compose | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.shape = (len(self.paths), image_size, image_size, channels)
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Batch:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        images = np.zeros((len(indices), *self.shape[1:]), dtype=np.uint8)
        failed = decode_into([self.paths[i] for i in indices], images, self.skip_bad)
        labels = torch.full((len(indices),), -1, dtype=torch.long)
        labels[list(failed)] = UNREADABLE
        index = torch.as_tensor(indices, dtype=torch.long)
        return to_batch(images, self.transform, index), labels
