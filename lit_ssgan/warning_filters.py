"""What the ``lit-ssgan`` command does to warnings, in one call (:func:`install`): the ones a user of
the command cannot act on (:data:`NOISE`) are filtered, each by its message and the module that
raises it, and lit_ssgan's own print as one line, ``lit-ssgan: warning: <message>``.

Importing this module, or the package, changes no filter and no format: a library leaves them to
the application, and the command is lit_ssgan's.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

__all__ = ["NOISE", "Noise", "OneLineFormat", "filter_noise", "install"]


class Noise(NamedTuple):
    """A warning the command filters: ``message``, a regular expression its text starts with;
    ``module``, the module that raises it (exactly); ``subcommands``, the subcommands it is filtered
    in (None: all)."""

    message: str
    module: str
    subcommands: tuple[str, ...] | None = None


#: the warnings a user of the command cannot act on; each is a UserWarning
NOISE: tuple[Noise, ...] = (
    # resume, validate, test, predict: each run has a new version folder, never the checkpoint's (Lightning PR #12045)
    Noise("The dirpath has changed from ", "lightning.pytorch.callbacks.model_checkpoint"),
    # mixed precision keeps fp32 weights: the 32 bits the size estimate falls back to are right (Lightning #20598)
    Noise(
        r"Precision \S+-mixed is not supported by the model summary",
        "lightning.pytorch.utilities.model_summary.model_summary",
    ),
    # a fit without validation: the data module's val_dataloader is [], Lightning's way to skip it (Lightning #17193)
    Noise(
        "Total length of `list` across ranks is zero",
        "lightning.pytorch.utilities.data",
        ("fit",),  # kept in validate, where it is the one sign that there was nothing to validate
    ),
    # validate, test, predict from a fit's checkpoint: the epoch line is a callback of fit alone
    Noise(
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided "
        r"during `Trainer` instantiation. Please add the following callbacks: \['EpochLine'\]",
        "lightning.pytorch.trainer.call",
        ("validate", "test", "predict"),
    ),
)


def filter_noise(subcommand: str | None = None) -> None:
    """Adds a filter ignoring each warning of :data:`NOISE` that holds in ``subcommand`` (None:
    those of every subcommand) to the front of ``warnings.filters``. Calling it again adds none twice."""
    for noise in NOISE:
        if noise.subcommands is None or subcommand in noise.subcommands:
            warnings.filterwarnings("ignore", noise.message, UserWarning, re.escape(noise.module) + r"\Z")


#: what ``warnings.formatwarning`` is: (message, category, filename, lineno, line) -> the text to print
FormatWarning = Callable[[Warning | str, type[Warning], str, int, "str | None"], str]

#: the package's folder: a warning attributed to a file under it is lit_ssgan's
PACKAGE = Path(__file__).resolve().parent


class OneLineFormat:
    """A ``warnings.formatwarning``: a UserWarning attributed to a file of the package (the caller
    of ``rank_zero_warn`` or ``warnings.warn``) as ``lit-ssgan: warning: <message>`` and a newline;
    any other warning as ``previous`` formats it."""

    def __init__(self, previous: FormatWarning) -> None:
        self.previous = previous

    def __call__(
        self, message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(PACKAGE):
            return f"lit-ssgan: warning: {message}\n"
        return self.previous(message, category, filename, lineno, line)


def install(subcommand: str | None = None) -> None:
    """The command's treatment of warnings, for the rest of the process: :func:`filter_noise` for
    ``subcommand`` and lit_ssgan's warnings in one line (:class:`OneLineFormat`, wrapping the format
    in place). Calling it again wraps nothing twice."""
    filter_noise(subcommand)
    if not isinstance(warnings.formatwarning, OneLineFormat):
        warnings.formatwarning = OneLineFormat(warnings.formatwarning)
