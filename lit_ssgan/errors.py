"""Errors a user can cause and fix: a bad option, a missing or damaged file, a checkpoint that
does not fit, a run that diverged.

Each is a :class:`UserError`, so the ``lit-ssgan`` command prints its message alone, without a
traceback (``LIT_SSGAN_TRACEBACK=1`` shows it). Each also derives from the built-in exception
Python code would expect (``ValueError``, ``FileNotFoundError``, ``RuntimeError``).

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

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

#: set to anything to see the traceback behind a user's error (for a bug report)
TRACEBACK_VARIABLE = "LIT_SSGAN_TRACEBACK"


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
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """For a console command: a :class:`UserError` (also one wrapped in another exception) ends the
    program with its message alone and exit status 1; anything else, a bug, keeps its traceback.
    ``LIT_SSGAN_TRACEBACK=1`` shows the traceback of a user's error too."""
    try:
        yield
    except Exception as err:
        cause = user_error(err)
        if cause is None or os.environ.get(TRACEBACK_VARIABLE):
            raise
        sys.exit(f"{prog}: error: {cause}")
