"""What one training step asks of the machine: the tensor ops it dispatches and its host reads."""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import lightning
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback

from lit_ssgan.internals import TorchDispatchMode

#: ops that make the host wait for the device's result: a value read (``.item()``, ``bool(t)``,
#: ``int(t)``) or an output whose size depends on the data
HOST_READS = frozenset(
    {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.masked_select.default,
        torch.ops.aten._unique2.default,
    }
)


class DispatchCount(TorchDispatchMode):
    """Inside this mode, counts the aten ops dispatched (:attr:`ops`, by name) and the host reads
    among them (:attr:`reads`, :data:`HOST_READS`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.reads = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func.overloadpacket.__name__)] += 1
        self.reads += func in HOST_READS
        return func(*args, **(kwargs or {}))


class StepCount(NamedTuple):
    """One training step's counts."""

    step: int
    """``trainer.global_step`` before the step."""
    ops: int
    """aten ops dispatched (on a GPU, each is about one kernel launch; views and metadata ops launch none)."""
    host_reads: int
    """ops in :data:`HOST_READS`: on a GPU, each waits for the device to finish all queued work."""
    logged: bool
    """whether the step wrote the logs (those read their values on purpose)."""
    by_op: Counter[str]


class StepCounts(Callback):
    """Counts, under a ``TorchDispatchMode``, the aten ops each training step dispatches (forward,
    backward, the optimizer steps and the callbacks' per-batch work) and its host reads, from the
    start of a batch to its end. On a CPU they are the proxies of a GPU step's kernel launches and
    synchronisations. Put it last among the callbacks (``--trainer.callbacks+=...`` on the command
    line) so that the other callbacks' batch-end work is counted.

    Args:
        print_summary: print, when training ends, the median counts of the steps that did not log.

    Example:
        >>> from lit_ssgan.callbacks import StepCounts
        >>> counts = StepCounts()  # Trainer(callbacks=[..., counts]); then counts.steps[i].host_reads
    """

    def __init__(self, print_summary: bool = False) -> None:
        self.print_summary = print_summary
        self.steps: list[StepCount] = []
        self._mode: DispatchCount | None = None

    def on_train_batch_start(
        self, trainer: lightning.Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        every: int = getattr(trainer, "log_every_n_steps", 0)
        self._logged = every > 0 and (trainer.global_step + 1) % every == 0
        self._step = trainer.global_step
        self._mode = DispatchCount()
        self._mode.__enter__()

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: LightningModule, *args: Any) -> None:
        mode, self._mode = self._mode, None
        if mode is None:
            return
        mode.__exit__(None, None, None)
        self.steps.append(StepCount(self._step, sum(mode.ops.values()), mode.reads, self._logged, mode.ops))

    def on_exception(self, trainer: lightning.Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def quiet_steps(self) -> list[StepCount]:
        """The steps after the first (which initialises optimizer states) that did not log."""
        return [s for s in self.steps[1:] if not s.logged]

    def on_train_end(self, trainer: lightning.Trainer, pl_module: LightningModule) -> None:
        quiet = sorted(self.quiet_steps(), key=lambda s: s.ops)
        if self.print_summary and quiet:
            middle = quiet[len(quiet) // 2]
            print(
                f"lit-ssgan: a training step dispatches {middle.ops} ops and reads the device {middle.host_reads} times"
            )
