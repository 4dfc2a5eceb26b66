"""Every place where lit_ssgan touches a private part of Lightning, gathered here.

Each entry names the upstream issue it works around and the Lightning version it was checked
against; ``tests/test_internals.py`` fails loudly when an upgrade breaks one. Everything else in
the package uses Lightning's public API only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.optim import Optimizer
from torch.optim.swa_utils import AveragedModel

# torch's dispatch modes (what lit_ssgan.callbacks.StepCounts counts ops with) have no public module:
# the documented home of ``TorchDispatchMode`` (the ``__torch_dispatch__`` docs) is this private one
from torch.utils._python_dispatch import TorchDispatchMode

CHECKED_WITH_LIGHTNING = "2.6.6"

__all__ = [
    "TorchDispatchMode",
    "mark_stepped",
    "move_root_dir",
    "set_average_model",
    "step_not_counted",
    "stop_as_on_sigterm",
]


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


def set_average_model(callback: WeightAveraging, averaged: AveragedModel) -> None:
    """Gives ``callback`` the average it keeps, in place of the ``AveragedModel`` its ``setup``
    would build.

    ``WeightAveraging`` builds a plain ``torch.optim.swa_utils.AveragedModel`` in ``setup``, with no
    way to choose the class; that class's ``update_parameters`` reads its update count from the
    device twice per batch (a GPU stall each time). The callback keeps the average in
    ``_average_model``, which every one of its hooks reads; this sets it. Checked with Lightning 2.6.6.
    """
    if not hasattr(callback, "_average_model"):
        raise RuntimeError(
            f"lit_ssgan's average-model patch no longer fits this Lightning version; it was checked with "
            f"{CHECKED_WITH_LIGHTNING}"
        )
    callback._average_model = averaged


def mark_stepped(optimizer: Optimizer) -> None:
    """Marks ``optimizer`` as having stepped in this process, as torch's step wrapper does: on a
    resume it did step, before the checkpoint, and an epoch schedule's first step may come before
    this process's first optimizer step (an epoch's end after a rerun validation). torch would warn
    of that as a misuse ("lr_scheduler.step() before optimizer.step()", pytorch/pytorch#20124, the
    check added in #21460); there is no public way to tell it."""
    optimizer._opt_called = True  # type: ignore[attr-defined]


def move_root_dir(trainer: Any, folder: Path) -> None:
    """Makes ``folder`` ``trainer``'s ``default_root_dir``: where a run without a logger writes its
    config, checkpoints, pictures and results (its ``log_dir``).

    Without a logger Lightning versions nothing: every run on one root writes into the root itself
    (Lightning issue #14188: "If you don't use a logger, i.e., no versioning of experiments, then we
    can't avoid conflicts. The LightningCLI can handle this by itself."). The Trainer takes its root
    only when built and has no setter; it keeps it in ``_default_root_dir``, which its
    ``default_root_dir`` and ``log_dir`` and the checkpoint callback's folder read. Checked with
    Lightning 2.6.6.
    """
    if not hasattr(trainer, "_default_root_dir"):
        raise RuntimeError(
            f"lit_ssgan's run-folder patch (Lightning issue #14188) no longer fits this Lightning version; it "
            f"was checked with {CHECKED_WITH_LIGHTNING}"
        )
    trainer._default_root_dir = str(folder)


def stop_as_on_sigterm(trainer: Any) -> None:
    """Makes ``trainer`` stop after the batch in progress as Lightning stops on a SIGTERM: its fit
    loop raises ``SIGTERMException`` at the batch's end, and the callbacks' ``on_exception`` runs.

    Under DDP, Lightning's SIGTERM handler broadcasts from inside the signal handler, wherever the
    process happens to be, and each process checks its own flag at the batch's end: a SIGTERM to the
    first process alone (Kubernetes' to a pod's main process) hung a CPU DDP run here, each process
    waiting in a different collective (Lightning issue #20806, open; its #20825 added the broadcast).
    :class:`~lit_ssgan.callbacks.Preemption` notes the signal itself, agrees on it across processes at
    one point of every batch, and then sets the flag Lightning reads, ``received_sigterm`` of the
    Trainer's ``_signal_connector``, which has no setter. Checked with Lightning 2.6.6.
    """
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or not hasattr(connector, "received_sigterm"):
        raise RuntimeError(
            f"lit_ssgan's SIGTERM patch (Lightning issue #20806) no longer fits this Lightning version; it was "
            f"checked with {CHECKED_WITH_LIGHTNING}"
        )
    connector.received_sigterm = True
