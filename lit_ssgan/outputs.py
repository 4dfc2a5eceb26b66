"""Output paths, checked before the work that fills them: a CSV, a picture or a run folder that
cannot be written is refused at the start, naming the option, not after an hour of training."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from lit_ssgan.errors import ConfigError


def check_output_file(path: str | Path, option: str, suffixes: Iterable[str] | None = None) -> Path:
    """``path`` if a file can be written there (its folders may not exist yet).

    Raises:
        ConfigError: naming ``option``, if ``path`` is a folder, lies under a file, cannot be
            written, or (with ``suffixes``) does not end in one of them.

    Example:
        >>> check_output_file("/proc/predictions.csv", "--predictions_csv")
        Traceback (most recent call last):
        ...
        lit_ssgan.errors.ConfigError: --predictions_csv: /proc/predictions.csv cannot be written: ...
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in (allowed := tuple(suffixes)):
        raise ConfigError(f"{option}: {path} must end in {' or '.join(allowed)}")
    if path.is_dir():
        raise ConfigError(f"{option}: {path} is a folder; give the file to write")
    _check_writable_under(path, path.parent, option)
    return path


def check_output_folder(path: str | Path, option: str) -> Path:
    """``path`` if it is a folder, or one can be made there, and files can be written in it.

    Raises:
        ConfigError: naming ``option``, if ``path`` is a file, lies under a file or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}: {path} is a file, not a folder")
    _check_writable_under(path, path, option)
    return path


def _check_writable_under(path: Path, folder: Path, option: str) -> None:
    """Writes (and removes) a file in the nearest existing folder above ``path``, making nothing."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option}: {path} cannot be written: {existing} is a file")
    try:
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"{option}: {path} cannot be written: {err.strerror or err}") from None
