"""Writing files so that a kill at any moment leaves the previous file or the new one, never half
of one: each is written beside its destination, flushed to disk and renamed into place.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "run.json")
    ...     write_json(path, {"epoch": 3})
    ...     print(path.read_text(), end="")
    ...     print(sorted(p.name for p in path.parent.iterdir()))  # nothing left beside it
    {
      "epoch": 3
    }
    ['run.json']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file", "write_atomically", "write_json"]


def write_atomically(path: Path, write: Callable[[IO[Any]], Any]) -> None:
    """Calls ``write`` on a binary file beside ``path``, then moves it into place (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        write(f)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON (UTF-8; what ``json`` cannot write, as ``str``) at ``path``,
    atomically (:func:`atomic_file`)."""
    text = json.dumps(value, indent=2, default=str) + "\n"
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


@contextmanager
def atomic_file(path: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """A file opened beside ``path`` (``open(aside, mode, **open_kwargs)``; its name is ``f.name``),
    to write over the body of the ``with``; when the body ends, it is flushed to disk and renamed
    into place, and the rename made durable. The folders above ``path`` are made if missing. If
    the body raises, the file is removed, and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(aside, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(aside, path)  # atomic on POSIX and Windows
    finally:
        aside.unlink(missing_ok=True)
    _fsync_directory(path.parent)  # make the rename itself durable


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is atomic anyway
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
