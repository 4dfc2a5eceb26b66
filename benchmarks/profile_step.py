"""What one training step of the package costs on the device, as ``lit-ssgan fit`` runs it
(``configs/mnist.yaml`` by default): three windows of ``--steps`` batches each, after ``--start``
batches of warm-up, one precision after another in this process.

1. wall milliseconds a step (median; on a GPU this is when a step's work was queued, not done);
2. tensor ops dispatched a step and host reads a step (``aten::_local_scalar_dense``: ``.item()``,
   ``bool()`` of a tensor) under a ``TorchDispatchMode``, and on a GPU the synchronisations torch
   reports a step (``torch.cuda.set_sync_debug_mode``, as ``tests/test_cuda.py`` counts them);
3. on a GPU only, the torch profiler: kernels a step (copies and memsets included) and the GPU's
   busy milliseconds a step (the chip's floor), with the busiest kernels.

On the CPU, windows 1 and 2 only: the ops dispatched and the CPU's milliseconds stand in for the
kernels and the GPU's time. The steps of the windows do not log (``log_every_n_steps`` 100).

    python benchmarks/profile_step.py --data-dir ../shared/data/mnist --device cuda --json profile.json
    python benchmarks/profile_step.py --device cpu --start 5 --steps 3 --precisions 32-true
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_ssgan.callbacks.step_counts import DispatchCount
from lit_ssgan.cli import cli

ROOT = Path(__file__).resolve().parents[1]


class StepProfile(Callback):
    """The three windows (the module docstring), one after another from batch ``start`` on."""

    def __init__(self, start: int, steps: int, cuda: bool) -> None:
        self.start, self.steps, self.cuda = start, steps, cuda
        self.seen = 0
        self.wall: list[float] = []
        self.ops: list[int] = []
        self.reads: list[int] = []
        self.syncs: list[int] = []
        self.by_op: Counter[str] = Counter()
        self.kernels = self.gpu_ms = None
        self.top: list[tuple[str, int, float]] = []

    def window(self) -> int:
        """1, 2 or 3 for a batch in one of the windows, else 0."""
        offset = self.seen - self.start
        return offset // self.steps + 1 if 0 <= offset < 3 * self.steps else 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        window = self.window()
        if window == 2:
            self.counter = DispatchCount()
            if self.cuda:
                torch.cuda.set_sync_debug_mode("warn")
                self.caught = warnings.catch_warnings(record=True)
                self.records = self.caught.__enter__()
                warnings.simplefilter("always")
            self.counter.__enter__()
        if window == 3 and self.cuda and self.seen == self.start + 2 * self.steps:
            torch.cuda.synchronize()
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        window = self.window()
        if window == 1:
            self.wall.append(time.perf_counter() - self.t0)
        if window == 2:
            self.counter.__exit__(None, None, None)
            self.ops.append(sum(self.counter.ops.values()))
            self.reads.append(self.counter.reads)
            self.by_op += self.counter.ops
            if self.cuda:
                torch.cuda.set_sync_debug_mode("default")
                self.caught.__exit__(None, None, None)
                self.syncs.append(sum("synchroniz" in str(r.message) for r in self.records))
        self.seen += 1
        if window == 3 and self.cuda and self.seen == self.start + 3 * self.steps:
            torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            events = self.profiler.key_averages()
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            self.kernels = sum(e.count for e in kernels) / self.steps
            self.gpu_ms = sum(e.self_device_time_total for e in kernels) / self.steps / 1000
            busiest = sorted(kernels, key=lambda e: -e.self_device_time_total)[:15]
            self.top = [(e.key[:80], e.count, e.self_device_time_total / self.steps) for e in busiest]


def profile(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    cuda = args.device == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "--data.data_dir", args.data_dir, "--trainer.precision", precision,
            "--trainer.accelerator", "gpu" if cuda else "cpu",
            "--trainer.max_steps", str(args.start + (3 if cuda else 2) * args.steps),
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", tmp,
        ]  # fmt: skip
        built = cli(["--config", args.config, *overrides, *args.extra], run=False)
        probe = StepProfile(args.start, args.steps, cuda)
        built.trainer.callbacks.append(probe)  # type: ignore[attr-defined]
        built.trainer.fit(built.model, datamodule=built.datamodule)
    if len(probe.ops) < args.steps:
        raise SystemExit(f"{precision}: the run stopped after {probe.seen} batches, before the windows ended")
    result: dict[str, Any] = {
        "precision": precision,
        "device": args.device,
        "wall_ms": 1000 * statistics.median(probe.wall),
        "ops": statistics.median(probe.ops),
        "host_reads": statistics.median(probe.reads),
        "host_reads_max": max(probe.reads),
        "top_ops": [(op, n / args.steps) for op, n in probe.by_op.most_common(args.top)],
    }
    if cuda:
        result |= {"syncs": statistics.median(probe.syncs), "syncs_max": max(probe.syncs)}
        result |= {"kernels": probe.kernels, "gpu_busy_ms": probe.gpu_ms, "top_kernels": probe.top}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist.yaml"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--start", type=int, default=40, help="batches of warm-up before the windows")
    parser.add_argument("--steps", type=int, default=20, help="batches in each window")
    parser.add_argument("--top", type=int, default=12, help="the most frequent ops (and busiest kernels) to print")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("extra", nargs="*", help="more lit-ssgan options (after --)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*args parameter is intended to run from within Python.*")
    results = []
    for precision in args.precisions:
        r = profile(args, precision)
        results.append(r)
        line = f"PROFILE {precision} on {args.device}: wall {r['wall_ms']:.2f} ms a step (median)"
        line += f", {r['ops']:.0f} ops dispatched a step, {r['host_reads']:.0f} host reads a step"
        if args.device == "cuda":
            line += f", {r['syncs']:.0f} syncs a step (most {r['syncs_max']})"
            line += f", {r['kernels']:.0f} kernels a step, GPU busy {r['gpu_busy_ms']:.3f} ms a step"
        print(line, flush=True)
        print("  most frequent ops a step: " + ", ".join(f"{op} {n:.0f}" for op, n in r["top_ops"]))
        for name, count, us in r.get("top_kernels", []):
            print(f"  {us:9.1f} us a step  {count / args.steps:5.1f}x  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
