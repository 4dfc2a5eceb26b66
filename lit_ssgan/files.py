"""Writing files so that a kill at any moment leaves the previous file or the new one, never half
of one: each is written beside its destination, in a *part file* ``.NAME.PID.part`` (``PID``: the
writing process's), flushed to disk and renamed into place.

An ``OSError`` while writing (a full disk or quota, a read-only file system, permission denied, a
folder on the way that is a file) is raised as a :class:`~lit_ssgan.errors.WriteError`, whose
message is one line: the file and the cause. Wrap a write that does not go through these
functions in :func:`writing` for the same.

A part file is left behind only by a process killed while it wrote. :func:`remove_stale_parts`
removes those of a folder (the rule: :func:`is_stale_part`), and every write removes those of
its own destination first.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "run.json")
    ...     write_json(path, {"epoch": 3})
    ...     print(path.read_text(), end="")
    ...     print(sorted(p.name for p in path.parent.iterdir()))  # nothing left beside it
    ...     try:
    ...         write_json(path / "more.json", {})  # under a file
    ...     except OSError as err:
    ...         print(str(err).replace(folder, "FOLDER"))
    {
      "epoch": 3
    }
    ['run.json']
    cannot write FOLDER/run.json/more.json: FOLDER/run.json is a file, not a folder
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from lit_ssgan.errors import UserError, WriteError

__all__ = [
    "atomic_file",
    "is_stale_part",
    "part_path",
    "remove_stale_parts",
    "write_atomically",
    "write_error",
    "write_json",
    "writing",
]

#: the name of a part file: ``.NAME.PID.part``
PART_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.part$")

#: when this process loaded this module: a part file last written before then is not being
#: written by this process (:func:`is_stale_part`)
STARTED = time.time()


def write_atomically(path: Path, write: Callable[[IO[Any]], Any]) -> None:
    """Calls ``write`` on a binary file beside ``path``, then moves it into place (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        write(f)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON (UTF-8; what ``json`` cannot write, as ``str``) at ``path``,
    atomically (:func:`atomic_file`)."""
    text = json.dumps(value, indent=2, default=str) + "\n"
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def part_path(path: Path) -> Path:
    """Where this process writes ``path`` before renaming it into place: ``.NAME.PID.part`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


@contextmanager
def atomic_file(path: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """A file opened beside ``path`` (``open(part_path(path), mode, **open_kwargs)``; its name is
    ``f.name``), to write over the body of the ``with``; when the body ends, it is flushed to disk
    and renamed into place, and the rename made durable. The folders above ``path`` are made if
    missing, and the stale part files of ``path`` (:func:`is_stale_part`) removed.

    If the body raises, the part file is removed, and ``path`` is left as it was.

    Raises:
        WriteError: naming ``path`` and the cause, for an ``OSError`` while making the folders,
            opening, writing (in the body: one that names no file, or the part file; also behind
            another exception, as ``torch.save`` raises it), flushing or renaming.
    """
    path = Path(path)
    aside = part_path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path.parent, name=path.name)
        f = open(aside, mode, **open_kwargs)  # noqa: SIM115 (closed below, also when the body raises)
    try:
        try:
            yield f
        except Exception as err:
            cause = _os_error_behind(err, names={os.fspath(aside), os.fspath(path)})
            if cause is None:
                raise
            raise write_error(path, cause) from err
        with writing(path):
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(aside, path)  # atomic on POSIX and Windows
    finally:
        with suppress(OSError):  # after a failed write, its buffer cannot be written either
            f.close()
        _discard(aside)
    _fsync_directory(path.parent)  # make the rename itself durable


@contextmanager
def writing(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Raises an ``OSError`` of the body of the ``with`` (or one behind the exception it raises)
    as a :class:`~lit_ssgan.errors.WriteError` naming ``path`` (``what`` it is, e.g. ``the
    checkpoint``, before it) and the cause (:func:`write_error`): for a write that does not go
    through :func:`atomic_file`. A :class:`~lit_ssgan.errors.UserError` passes as it is.

    Example:
        >>> with writing("runs/config.yaml", "the config"):
        ...     raise OSError(errno.ENOSPC, "No space left on device")  # as a write to a full disk does
        Traceback (most recent call last):
        ...
        lit_ssgan.errors.WriteError: cannot write the config runs/config.yaml: No space left on device
    """
    try:
        yield
    except Exception as err:
        cause = _os_error_behind(err)
        if cause is None:
            raise
        raise write_error(path, cause, what) from err


def write_error(path: str | os.PathLike, err: OSError, what: str = "") -> WriteError:
    """``err``, met while writing ``path``, as a :class:`~lit_ssgan.errors.WriteError` whose
    reason is ``os.strerror`` of its errno, or, where a folder on the way is a file, that file."""
    path = Path(path)
    reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err) or type(err).__name__)
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            reason = f"{blocking} is a file, not a folder"
    return WriteError(path, reason, err.errno, what)


def _os_error_behind(err: BaseException, names: set[str] | None = None) -> OSError | None:
    """The ``OSError`` ``err`` is or was raised from or while handling, unless a
    :class:`~lit_ssgan.errors.UserError` comes first. With ``names``: only one naming no file or
    one of ``names`` (a write to an open file names none)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return None
        if isinstance(current, OSError) and (
            names is None or current.filename is None or os.fsdecode(current.filename) in names
        ):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_stale_part(path: Path) -> bool:
    """Whether ``path`` is a part file (``.NAME.PID.part``) that no process can still be writing:
    it was last written before this process loaded this module (:data:`STARTED`), and the process
    ``PID`` is this one or runs no more on this machine. A part file of a process running on
    another machine (a folder on a shared file system) counts as stale only if it was last written
    before this process started, so a write in progress there is never taken for one. On Windows,
    where no process can be probed without signalling it, only this process's count.
    """
    match = PART_NAME.match(path.name)
    if match is None:
        return False
    try:
        if path.stat().st_mtime >= STARTED or not path.is_file():
            return False
    except OSError:
        return False
    pid = int(match["pid"])
    return pid == os.getpid() or not _running(pid)


def _running(pid: int) -> bool:
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only whether the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or no pid at all: keep its file
        return True
    return True


def remove_stale_parts(folder: Path, name: str | None = None, suffix: str = "") -> dict[Path, int]:
    """Removes the stale part files (:func:`is_stale_part`) in ``folder``: those of ``name`` only,
    if given, else those whose destination's name ends in ``suffix``.

    Returns:
        The files removed, with their sizes in bytes.
    """
    pattern = f".{glob.escape(name)}.*.part" if name is not None else ".*.part"
    removed: dict[Path, int] = {}
    with suppress(OSError):  # no folder, or one that cannot be listed: nothing to remove
        for path in Path(folder).glob(pattern):
            match = PART_NAME.match(path.name)
            if match is None or not match["name"].endswith(suffix) or not is_stale_part(path):
                continue
            with suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                removed[path] = size
    return removed


def _discard(path: Path) -> None:
    with suppress(OSError):  # one that cannot be removed is stale after this process: removed later
        path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is atomic anyway
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the file itself was synced
        pass
    finally:
        os.close(fd)
