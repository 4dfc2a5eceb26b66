"""The on-disk decode cache of image folders: each folder decoded once, to a memory-mapped file of
uint8 pixels that every later run (and every process of a run on that machine) reads in place."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from lit_ssgan.data.datasets import ImageRows
from lit_ssgan.data.decoding import DECODER, SKIP_HINT, Seen, decode_into, digest, read_file, shown
from lit_ssgan.errors import BadFileError, ConfigError
from lit_ssgan.files import atomic_file, write_atomically, writing
from lit_ssgan.outputs import check_output_folder

#: the layout of a cache's files; a change to it makes every older cache a miss
FORMAT = 2

#: the exit status of a process whose decode a SIGTERM stopped: 128 + SIGTERM, as a shell reports it
SIGTERM_STATUS = 128 + signal.SIGTERM


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lit_ssgan``, by default ``~/.cache/lit_ssgan``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lit_ssgan"


def cache_key(paths: Sequence[Path], image_size: int, channels: int) -> str:
    """A digest of the list of files (each one's absolute path, as bytes, in the order given), the
    size and channels decoded to, and the decoder. The files' contents are checked against the
    cache's record (:meth:`DecodeCache.images`), not keyed."""
    key = hashlib.sha256(f"{FORMAT}\n{DECODER}\n{image_size} {channels}\n".encode())
    for path in paths:
        key.update(os.fsencode(os.path.abspath(path)) + b"\0")
    return key.hexdigest()


def stamp(status: os.stat_result | None) -> str:
    """What a decode cache records of a file's status, as text: size, modification and change
    times (ns) and inode; ``missing`` for no file."""
    if status is None:
        return "missing"
    return f"{status.st_size} {status.st_mtime_ns} {status.st_ctime_ns} {status.st_ino}"


class DecodeCache:
    """Decoded image folders, kept on disk in ``folder`` (default :func:`default_cache_dir`).

    A list of files decodes, once, to ``<name>-<key>.npy`` (``(N, H, W, C)`` uint8, read back
    memory-mapped: the pixels live in the page cache, shared, not in a process's own memory) and
    ``<name>-<key>.json`` (what was decoded, the files that could not be, and each file's status
    and a digest of its bytes, taken as the decode read them). The key (:func:`cache_key`) changes
    with any file added, removed or renamed, with the image size and channels, and with the
    decoder; a new cache of a folder replaces the older one. A file whose bytes changed since (by
    its digest) makes the cache decode again, with a line naming it; one only touched or copied
    over with the same bytes does not.

    The arrays are written beside their final name and renamed into place, then the JSON the
    same way: a decode killed at any point leaves no cache that looks complete (a cache is
    complete when its JSON is there), and the part files a killed decode left are removed by the
    next one to use the cache folder. A SIGTERM (where nothing else handles it) or a Ctrl-C during a
    decode removes its part file and says so in one line; then a SIGTERM ends the process with
    status 143 (``SystemExit``), a Ctrl-C goes on as the ``KeyboardInterrupt`` it is. Processes
    building the same cache take turns on a lock file (``fcntl.flock``, where the system has it):
    the DDP processes of one machine decode a folder once, the others wait for it and then read it.
    """

    def __init__(self, folder: str | Path | None = None, option: str = "data.cache_dir") -> None:
        self.folder = Path(folder) if folder else default_cache_dir()
        self.option = option
        self._checked = False

    def check(self) -> None:
        """Refuses, before any work, a cache folder that cannot be written (checked once)."""
        if not self._checked:
            check_output_folder(self.folder, self.option)
            self._checked = True

    def images(
        self, paths: Sequence[Path], image_size: int, channels: int, option: str, folder: Path, skip_bad: bool
    ) -> tuple[ImageRows, list[int], list[tuple[Path, str]]]:
        """``paths`` decoded to ``(image_size, image_size, channels)``, from the cache, or decoded
        into it first.

        Args:
            option, folder: the option that names the images' folder, and the folder: they name the
                images in messages and the cache's file, and a cache of the same option and folder,
                at the same size, but from other files, is outdated and removed.
            skip_bad: leave out the files that cannot be read (else the first one raises).

        Returns:
            the images, the indices into ``paths`` they came from, and the files left out, each
            with the message saying why.

        Raises:
            BadFileError: naming the file, if one cannot be read and ``skip_bad`` is false.
            ConfigError: if the cache's disk has too little room for it.
        """
        shape = (len(paths), image_size, image_size, channels)
        what, identity = f"{option} {shown(folder)}", f"{option} {folder.resolve()}"
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{option.split('.')[-1]}-{folder.resolve().name}")[:60]
        key = cache_key(paths, image_size, channels)[:24]
        base = self.folder / f"{name}-{image_size}px-{'rgb' if channels == 3 else 'grey'}-{key}"
        npy, meta = base.with_suffix(".npy"), base.with_suffix(".json")
        with self._locked(base.with_suffix(".lock"), what):
            self._remove_parts(npy.stem)
            record = self._complete(npy, meta, shape)
            if record is not None and not self._current(record, paths, meta, what):
                record = None
            if record is None:
                record = self._build(paths, shape, npy, meta, what, identity, skip_bad)
            else:
                _say(f"{what}: {len(paths)} images from the decode cache {shown(npy)} ({_size(npy.stat().st_size)})")
        failed = {int(i): message for i, message in record["failed"].items()}
        if failed and not skip_bad:
            raise BadFileError(f"{next(iter(failed.values()))} {SKIP_HINT}")
        kept = [i for i in range(len(paths)) if i not in failed]
        left_out = [(paths[i], message) for i, message in failed.items()]
        return ImageRows(np.load(npy, mmap_mode="r"), np.asarray(kept)), kept, left_out

    @staticmethod
    def _complete(npy: Path, meta: Path, shape: tuple[int, ...]) -> dict[str, Any] | None:
        """The record of a complete cache of images of ``shape`` there, or None."""
        try:
            record = json.loads(meta.read_text())
            complete = (
                record["shape"] == list(shape)
                and len(record["files"]) == shape[0]
                and np.load(npy, mmap_mode="r").shape == shape
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record if complete else None

    @staticmethod
    def _current(record: dict[str, Any], paths: Sequence[Path], meta: Path, what: str) -> bool:
        """Whether every file still holds the bytes the cache was decoded from; if not, a line
        naming the first that changed. Only a file whose status changed is read (and hashed): a
        run decoded before reads no image again. A stamp that changed over the same bytes (a file
        touched, or copied over with them) is recorded anew."""
        # the status includes the change time, which no one can set back: bytes rewritten with the
        # size and modification time restored (cp -p, rsync -t, touch -r) still change it
        changed: list[int] = []
        files: list[str] = record["files"]
        restamped = False
        for i, path in enumerate(paths):
            was, _, then = files[i].partition(" ")
            try:
                status: os.stat_result | None = os.stat(path)
            except OSError:
                status = None
            if stamp(status) == then:
                continue
            now: Seen = (status, None)
            if status is not None:
                try:
                    data, opened = read_file(path)
                    now = (opened, digest(data))
                except BadFileError:
                    pass
            if (now[1] or "-") == was:
                files[i] = _entry(now)
                restamped = True
            else:
                changed.append(i)
        if changed:
            others = f" (and {len(changed) - 1} other files)" if len(changed) > 1 else ""
            _say(
                f"{what}: {shown(paths[changed[0]])}{others} changed since it was decoded into the cache: "
                "decoding the folder again",
                True,
            )
            return False
        if restamped:
            write_atomically(meta, lambda f: f.write(_record_text(record)))
        return True

    def _remove_parts(self, stem: str) -> None:
        """Removes the part files that killed decodes left in the cache folder: those of ``stem``
        (whose lock this process holds), and those of any other cache whose lock no process holds."""
        for part in sorted(self.folder.glob(".*.part")):
            found = re.fullmatch(r"\.(.+)\.(?:npy|json)\.\d+\.part", part.name)
            if found is None:
                continue
            if found.group(1) != stem and not _free(self.folder / f"{found.group(1)}.lock"):
                continue  # another process is writing it, or it cannot be told
            try:
                size = part.stat().st_size
                part.unlink()
            except OSError:
                continue
            _say(f"  removed {shown(part)} ({_size(size)}), left by a decode that was killed", True)

    def _build(
        self,
        paths: Sequence[Path],
        shape: tuple[int, ...],
        npy: Path,
        meta: Path,
        what: str,
        identity: str,
        skip_bad: bool,
    ) -> dict[str, Any]:
        with writing(npy):
            self.folder.mkdir(parents=True, exist_ok=True)
        needed = int(np.prod(shape)) + 4096
        free = shutil.disk_usage(self.folder).free
        if needed > free:
            raise ConfigError(
                f"{self.option} {shown(self.folder)}: decoding {what} needs {_size(needed)} there, and the disk has "
                f"{_size(free)} free; give {self.option} on a disk with room"
            )
        _say(f"{what}: decoding {len(paths)} images to {shape[1]}x{shape[2]}x{shape[3]}, once, into {shown(npy)}", True)
        last = [time.monotonic()]

        def progress(done: int, total: int, seconds: float) -> None:
            if done < total and time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                left = seconds * (total - done) / max(done, 1)
                _say(f"  {done}/{total} decoded ({done / seconds:.0f} images/s), about {left:.0f} s left", True)

        start = time.perf_counter()
        seen: list[Seen] = [(None, None)] * len(paths)
        try:
            with _sigterm_raises(), atomic_file(npy) as f:
                # the array is mapped, by name, onto the file `f` has open beside `npy`; the file is
                # then synced to disk and renamed into place
                out = np.lib.format.open_memmap(f.name, mode="w+", dtype=np.uint8, shape=shape)
                try:
                    failed = decode_into(paths, out, skip_bad, progress, seen)
                    out.flush()
                finally:
                    del out
        except (KeyboardInterrupt, _Terminated) as stop:
            # after a Ctrl-C, the command's own line says what to run
            by, then = ("SIGTERM", ": run the same command again") if isinstance(stop, _Terminated) else ("Ctrl-C", "")
            print(
                f"lit-ssgan: {what}: decode stopped by {by}; its part file is removed (the next run decodes "
                f"the folder from the start{then})",
                file=sys.stderr,
                flush=True,
            )
            if isinstance(stop, _Terminated):
                raise SystemExit(SIGTERM_STATUS) from None
            raise
        seconds = time.perf_counter() - start
        record = {
            "format": FORMAT,
            "identity": identity,
            "decoder": DECODER,
            "shape": list(shape),
            "failed": {str(i): message for i, message in failed.items()},
            "seconds": round(seconds, 2),
            "files": [_entry(s) for s in seen],
        }
        write_atomically(meta, lambda f: f.write(_record_text(record)))
        _say(
            f"{what}: {len(paths)} images decoded in {seconds:.1f} s ({len(paths) / max(seconds, 1e-9):.0f}/s); "
            f"the cache takes {_size(npy.stat().st_size)}",
            True,
        )
        self._remove_outdated(identity, shape, keep=meta)
        return record

    def _remove_outdated(self, identity: str, shape: tuple[int, ...], keep: Path) -> None:
        """Removes the caches built for the same images at the same size from other files."""
        for other in self.folder.glob("*.json"):
            if other == keep:
                continue
            try:
                record = json.loads(other.read_text())
            except (OSError, ValueError):
                continue
            if record.get("identity") == identity and record.get("shape", [])[1:] == list(shape[1:]):
                npy = other.with_suffix(".npy")
                freed = npy.stat().st_size if npy.exists() else 0
                other.unlink(missing_ok=True)
                npy.unlink(missing_ok=True)
                other.with_suffix(".lock").unlink(missing_ok=True)
                _say(f"  removed the outdated cache {shown(npy)} ({_size(freed)})", True)

    @staticmethod
    @contextmanager
    def _locked(path: Path, what: str) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; a race only decodes twice (each cache lands whole)
            yield
            return
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path, "a")  # noqa: SIM115
        with lock as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(f"{what}: waiting for another process decoding it into {shown(path.parent)}", True)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _entry(seen: Seen) -> str:
    """A file's line in a cache's record: the digest of its bytes (``-``: unread), then its :func:`stamp`."""
    return f"{seen[1] or '-'} {stamp(seen[0])}"


def _record_text(record: dict[str, Any]) -> bytes:
    """A cache's record as JSON (ASCII: a name that is not UTF-8 is kept escaped, and reads back as it was)."""
    return json.dumps(record, indent=1).encode()


class _Terminated(Exception):
    """A SIGTERM, raised in the main thread while a decode runs."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within: a SIGTERM raises :class:`_Terminated` in the main thread, where it would have ended
    the process on the spot (no handler of Python's set), so that the ``with`` blocks around clean
    up; the handler that was there is put back after."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    raised = [False]

    def handler(signum: int, frame: Any) -> None:
        if not raised[0]:  # once: a second SIGTERM does not break the cleanup the first began
            raised[0] = True
            raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _free(lock: Path) -> bool:
    """Whether the lock file ``lock`` exists and no process holds it (False where it cannot be told)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        with open(lock, "r+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return True
    except OSError:
        return False


def _say(line: str, every_process: bool = False) -> None:
    """A line on the console: from the first process only, unless it concerns what this process does."""
    if every_process or getattr(rank_zero_only, "rank", 0) == 0:
        print(line, flush=True)


def _size(n: float) -> str:
    """Bytes for a person: ``_size(4.9e9)`` is ``'4.9 GB'``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} bytes"
