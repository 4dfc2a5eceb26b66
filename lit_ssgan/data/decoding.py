"""Image files to uint8 arrays: one file (:func:`read_image`), many in threads into an array that
may be memory-mapped (:func:`decode_into`), or a batch at a time as a loader reads them
(:class:`DecodingDataset`, for ``predict``).

A file is read with Python and its bytes decoded by OpenCV (``cv2.imdecode``): no path reaches
OpenCV, so any name the file system allows is read, whatever its bytes (OpenCV's ``imread`` can
crash the process on a name that is not UTF-8). Names in messages are :func:`shown`; names that
files and records keep are :func:`file_name`.
"""

from __future__ import annotations

import hashlib
import os
import signal
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

#: what a decode saw of a file: its status when it was opened (None: no file there) and
#: the :func:`digest` of its bytes (None: they could not be read)
Seen = tuple[os.stat_result | None, str | None]


def file_name(path: str | os.PathLike[str]) -> str:
    """``path`` as text any UTF-8 file can hold: itself where its name is UTF-8 (as nearly every
    name is), else with each byte that is not written ``\\xNN``: ``caf\\xe9.png`` for the Latin-1
    name. The names a run writes (CSVs, its record of examples) and matches (a labels CSV) are these.

    Example:
        >>> file_name(os.fsdecode(b"caf\\xe9.png")), file_name("caf\\u00e9.png")
        ('caf\\\\xe9.png', 'café.png')
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` for a message: :func:`file_name`, with any character that does not print (a newline,
    a tab) escaped, so that a message stays one printable line.

    Example:
        >>> shown("a\\nb.png")
        'a\\\\nb.png'
    """
    text = file_name(path)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def digest(data: bytes) -> str:
    """A digest of a file's bytes (BLAKE2b, 128 bits, in hex): what a decode cache records of each file."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """A file's bytes, and its status taken as it was opened (before the bytes are read, so that a
    change made while reading shows in a later status).

    Raises:
        BadFileError: naming the file, if it cannot be read (naming its target, for a symbolic
            link to nothing).
    """
    try:
        with open(path, "rb") as f:
            status = os.fstat(f.fileno())
            return f.read(), status
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.path.realpath(path)  # the end of a chain of links, the one that is missing
            raise BadFileError(f"{shown(path)} is a symbolic link to {shown(target)}, which does not exist") from None
        raise BadFileError(f"{shown(path)} could not be read: it no longer exists") from None
    except OSError as err:
        raise BadFileError(f"{shown(path)} could not be read: {err.strerror or err}") from None


def read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file as :func:`decode_image` makes it.

    Raises:
        BadFileError: naming the file, if it cannot be read or decoded.
    """
    return decode_image(read_file(path)[0], path, image_size, channels)


def decode_image(data: bytes, path: Path, image_size: int, channels: int) -> np.ndarray:
    """The bytes of an image file (``path``, for messages and its suffix) as
    ``(image_size, image_size, channels)`` uint8 (RGB order for colour): decoded with OpenCV,
    grey/colour converted, an alpha channel dropped, resized (area interpolation when shrinking).
    16-bit images are scaled to 8 bits.

    Raises:
        BadFileError: naming the file, if it cannot be decoded.
    """
    if path.suffix.lower() in (".jpg", ".jpeg") and data and _jpeg_truncated(data):
        raise BadFileError(f"{shown(path)} is truncated: it ends before its end-of-image marker")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:  # what OpenCV refuses (an image larger than its limit, ...)
        image = None
    if image is None or image.size == 0:
        raise BadFileError(f"{shown(path)} could not be read as an image{'' if data else ': it is empty'}")
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


def _jpeg_truncated(data: bytes) -> bool:
    """Whether a JPEG file lacks its end-of-image marker (a download or copy cut short), which
    OpenCV would decode into an image filled with grey. (Cut PNG, WEBP and BMP files fail to decode.)"""
    return not data[-64:].rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def decode_into(
    paths: Sequence[Path],
    out: np.ndarray,
    skip_bad: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    seen: list[Seen] | None = None,
) -> dict[int, str]:
    """Decodes ``paths`` into the rows of ``out`` (``(N, H, W, C)`` uint8, in memory or
    memory-mapped), in threads (OpenCV releases the GIL); ``progress(done, total, seconds)`` is
    called as chunks finish. With ``seen`` (a list as long as ``paths``), ``seen[i]`` is set to what
    was read of file ``i`` (:data:`Seen`), readable or not.

    Anything raised in the calling thread while it waits (a ``KeyboardInterrupt``, or an exception
    a signal handler raises) stops the threads after the image each is decoding, and goes on.

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
                try:
                    data, status = read_file(paths[i])
                except BadFileError:
                    if seen is not None:
                        seen[i] = (_status(paths[i]), None)
                    raise
                if seen is not None:
                    seen[i] = (status, digest(data))
                out[i] = decode_image(data, paths[i], size, channels)
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
    pool = ThreadPoolExecutor(max_workers=threads, initializer=_signals_to_the_caller)
    try:
        pending = {pool.submit(decode, chunk) for chunk in chunks}
        while pending:
            finished, pending = wait(pending, timeout=1, return_when=FIRST_EXCEPTION)
            for future in finished:
                done += future.result()  # the first unreadable file raises here (without skip_bad)
            if progress is not None:
                progress(done, len(paths), time.perf_counter() - start)
    finally:
        stop.set()  # after an exception, the threads stop at their next image
        pool.shutdown(wait=True, cancel_futures=True)
    return dict(sorted(failed.items()))


def _signals_to_the_caller() -> None:
    """Blocks SIGTERM and SIGINT in a decoding thread: the system then delivers them to a thread that
    takes them, the calling one, whose wait they interrupt at once (Python runs handlers there only)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def _status(path: Path) -> os.stat_result | None:
    """``os.stat(path)``, or None where there is no file (a symbolic link to nothing)."""
    try:
        return os.stat(path)
    except OSError:
        return None


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
