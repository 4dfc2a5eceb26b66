"""Errors a user can cause and fix: a bad option, a missing or damaged file, a checkpoint that
does not fit, a run that diverged.

Each is a :class:`UserError`, so the ``lit-ssgan`` command prints its message alone, without a
traceback (``LIT_SSGAN_TRACEBACK=1`` shows it). Each also derives from the built-in exception
Python code would expect (``ValueError``, ``FileNotFoundError``, ``RuntimeError``).

Example:
    >>> try:
    ...     raise ConfigError("batch_size must be positive, got 0")
    ... except ValueError as err:
    ...     print(isinstance(err, UserError), err)
    True batch_size must be positive, got 0
"""

from __future__ import annotations


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
