"""Errors a user can cause and fix: a bad option, a missing or damaged file, a checkpoint that
does not fit, a run that diverged.

Each is a :class:`UserError`, so the ``lit-ssgan`` command prints its message alone, without a
traceback (``LIT_SSGAN_TRACEBACK=1`` shows it). Each also derives from the built-in exception
Python code would expect (``ValueError``, ``FileNotFoundError``, ``OSError``, ``RuntimeError``).

Options are checked where the object that takes them is built, for the command line and Python
alike, with the checks below: each raises a :class:`ConfigError` naming the option.

Example:
    >>> try:
    ...     raise ConfigError("batch_size must be positive, got 0")
    ... except ValueError as err:
    ...     print(isinstance(err, UserError), err)
    True batch_size must be positive, got 0
    >>> check_choice("generator_loss", "feature_matchin", ("feature_matching", "sigmoid_kl"))
    Traceback (most recent call last):
    ...
    lit_ssgan.errors.ConfigError: generator_loss must be one of 'feature_matching', 'sigmoid_kl'; got 'feature_matchin'
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

#: set to anything to see the traceback behind a user's error (for a bug report)
TRACEBACK_VARIABLE = "LIT_SSGAN_TRACEBACK"
#: the exit status of a command stopped by Ctrl-C: 128 + SIGINT, what a shell reports for an
#: interrupted process (a retry loop that reruns on SIGTERM's 143 does not rerun it)
INTERRUPTED_EXIT_STATUS = 128 + signal.SIGINT


class UserError(Exception):
    """An error in what the user asked for; its message names the option or file to fix."""


class ConfigError(UserError, ValueError):
    """An option's value is invalid, or does not fit the data or the other options."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class BadFileError(UserError, ValueError):
    """A data file exists but cannot be read: truncated, or not in the expected format."""


class DownloadError(UserError, RuntimeError):
    """A dataset could not be downloaded, or did not match its checksum."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be used."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds Python objects that only arbitrary unpickling (which can run code) rebuilds."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated or is not a checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the networks the config builds."""


class DivergenceError(UserError, RuntimeError):
    """A loss became NaN or infinite: training stops, the last good checkpoint stays."""


class WriteError(UserError, OSError):
    """A file could not be written: the disk or quota is full, the folder is read-only or not a
    folder, permission is denied. ``str()`` is one line: ``cannot write`` the file (``what``,
    e.g. ``the checkpoint``, before it), the cause, and ``note`` (for a checkpoint: which one on
    disk is intact, and how to resume from it). ``errno``, ``strerror`` and ``filename`` are the
    ``OSError``'s.

    Example:
        >>> import errno
        >>> err = WriteError("runs/last.ckpt", os.strerror(errno.ENOSPC), errno.ENOSPC, "the checkpoint")
        >>> print(err)
        cannot write the checkpoint runs/last.ckpt: No space left on device
        >>> isinstance(err, OSError), err.errno == errno.ENOSPC, err.filename
        (True, True, 'runs/last.ckpt')
    """

    def __init__(
        self, path: str | os.PathLike, reason: str, code: int | None = None, what: str = "", note: str = ""
    ) -> None:
        super().__init__(code, reason, os.fspath(path))
        self.path, self.reason, self.what, self.note = os.fspath(path), reason, what, note

    def __str__(self) -> str:
        what = f"{self.what} " if self.what else ""
        note = f". {self.note}" if self.note else ""
        return f"cannot write {what}{self.path}: {self.reason}{note}"

    def __reduce__(self) -> tuple:  # the arguments of __init__, not OSError's
        return type(self), (self.path, self.reason, self.errno, self.what, self.note)


T = TypeVar("T")


def check_choice(option: str, value: T, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices`` (the values of a ``Literal``: a hint Python does not check)."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_probability(option: str, value: object) -> float:
    """``value`` as a float, if it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{option} must be a float in [0, 1], got {value!r}")
    return float(value)


def check_non_negative(option: str, value: float) -> float:
    if value < 0:
        raise ConfigError(f"{option} must be 0 or more, got {value}")
    return value


def check_positive(option: str, value: float | None, optional: bool = False) -> float | None:
    """``value`` if it is above 0 (or None, where ``optional``)."""
    if value is None and optional:
        return None
    if value is None or value <= 0:
        raise ConfigError(f"{option} must be positive{' or None' if optional else ''}, got {value}")
    return value


def user_error(err: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``err``, if any: jsonargparse and Lightning wrap the errors
    raised while they build and run the classes into their own."""
    for current in _chain(err):
        if isinstance(current, UserError):
            return current
    return None


#: the causes of an ``OSError`` that only a write meets, and that only the machine can cure
WRITE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EROFS) if code is not None
)


def failed_write(err: BaseException) -> WriteError | None:
    """A write that failed behind ``err`` for a cause of :data:`WRITE_ERRNOS` (a full disk or
    quota, a file too large, a read-only file system), as a :class:`WriteError` naming the file
    where the ``OSError`` names one; else None. Such an error is never a bug of the program, wherever
    it was raised: in lit_ssgan's own writers it is a :class:`WriteError` already, and this finds it
    where a library (Lightning's loggers, jsonargparse) wrote the file."""
    for current in _chain(err):
        if isinstance(current, OSError) and current.errno in WRITE_ERRNOS:
            if isinstance(current, WriteError):
                return current
            path = current.filename if current.filename is not None else f"a file ({TRACEBACK_VARIABLE}=1 shows which)"
            return WriteError(path, os.strerror(current.errno or 0), current.errno)
    return None


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, each once."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """For a console command: a :class:`UserError` (also one wrapped in another exception), or a
    write that failed for lack of room or a read-only file system (:func:`failed_write`), ends the
    program with its message alone and exit status 1; anything else, a bug, keeps its traceback.
    ``LIT_SSGAN_TRACEBACK=1`` shows the traceback of a user's error too."""
    try:
        yield
    except Exception as err:
        cause = user_error(err) or failed_write(err)
        if cause is None or os.environ.get(TRACEBACK_VARIABLE):
            raise
        if isinstance(cause, OSError) and cause.errno is not None and cause.errno in WRITE_ERRNOS:
            atexit.register(_quiet_at_exit, cause.errno)  # before the exit hooks registered so far run
        sys.exit(f"{prog}: error: {cause}")


def _quiet_at_exit(code: int) -> None:
    """Run as the program exits, after the line that names a write failed for a full disk (or a
    read-only file system): a library that meets the same cause again then (a logger flushing its
    events in an ``atexit`` hook, and its writer thread, whose file is then closed) says nothing
    more, so the line stays the last thing printed."""
    previous, previous_in_thread = sys.unraisablehook, threading.excepthook

    def consequence(err: BaseException | None) -> bool:
        return isinstance(err, OSError) and err.errno in (code, None)

    def hook(unraisable: Any) -> None:
        if not consequence(unraisable.exc_value):
            previous(unraisable)

    def hook_in_thread(args: Any) -> None:
        if not consequence(args.exc_value):
            previous_in_thread(args)

    sys.unraisablehook, threading.excepthook = hook, hook_in_thread
