"""The console commands: ``lit-ssgan`` (also ``python -m lit_ssgan``) and ``lit-ssgan-samples``.

Each imports its command's module inside the function: those imports (torch, Lightning) take
seconds, and a Ctrl-C typed in them, as one typed during the command's work, ends it in one line
and exit status 130 (128 + SIGINT), not a traceback (``LIT_SSGAN_TRACEBACK=1`` shows it).
``import lit_ssgan`` itself imports none of them (the package loads its names when first used)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lit_ssgan.errors import INTERRUPTED_EXIT_STATUS, TRACEBACK_VARIABLE


def main() -> None:
    """``lit-ssgan``: :func:`lit_ssgan.cli.main` on the command line."""
    with _ctrl_c_ends("lit-ssgan"):
        from lit_ssgan.cli import main as command

        command()


def samples() -> None:
    """``lit-ssgan-samples``: :func:`lit_ssgan.sample_grid.main` on the command line."""
    with _ctrl_c_ends("lit-ssgan-samples"):
        from lit_ssgan.sample_grid import main as command

        command()


@contextmanager
def _ctrl_c_ends(prog: str) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"{prog}: stopped by Ctrl-C", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT_STATUS)


if __name__ == "__main__":
    main()
