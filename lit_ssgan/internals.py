"""Every place where lit_ssgan touches a private part of Lightning, gathered here.

Each entry names the upstream issue it works around and the Lightning version it was checked
against; ``tests/test_internals.py`` fails loudly when an upgrade breaks one. Everything else in
the package uses Lightning's public API only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.core.optimizer import LightningOptimizer

CHECKED_WITH_LIGHTNING = "2.6.6"


@contextmanager
def step_not_counted(opt: LightningOptimizer) -> Iterator[None]:
    """Steps ``opt`` inside this block without advancing ``trainer.global_step``.

    Under manual optimization every optimizer step advances the global step (Lightning issue
    #17958), so a GAN's two steps a batch would count twice and ``max_steps``, checkpoint names
    and log steps would mean half what users expect. Lightning sets two progress callbacks,
    ``_on_before_step`` and ``_on_after_step``, on each ``LightningOptimizer``; no public API
    turns them off, so they are switched off for this one step. Checked with Lightning 2.6.6.
    """
    try:
        hooks = opt._on_before_step, opt._on_after_step
    except AttributeError as err:  # an upgrade renamed them: say so rather than double-count silently
        raise RuntimeError(
            f"lit_ssgan's step-count patch (Lightning issue #17958) no longer fits this Lightning version; "
            f"it was checked with {CHECKED_WITH_LIGHTNING}"
        ) from err
    opt._on_before_step = opt._on_after_step = _do_nothing
    try:
        yield
    finally:
        opt._on_before_step, opt._on_after_step = hooks


def _do_nothing() -> None:
    pass
