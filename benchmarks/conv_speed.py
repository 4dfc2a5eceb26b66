"""Speed of one training step of the convolutional pair, in one run on this machine: the package
(``configs/image_folder.yaml`` as users run it, through ``lit-ssgan fit``'s own builder, the module
and the Trainer, on a folder of random 32x32 RGB images, batch 64) against the naive plain PyTorch
step (``../shared/reference/naive_conv_step.py``), fp32 and bf16, interleaved, one process at a
time, and the floor set by this CPU's measured convolution throughput and the step's FLOPs.

    python benchmarks/conv_speed.py --repeats 2
    python benchmarks/conv_speed.py --image-size 64 --batches 3 --no-naive   # other sizes: package only
    python benchmarks/conv_speed.py --device cuda --batches 100 --repeats 1 --json conv.json   # on a GPU

Prints the CPU model, seconds per step (median of repeats) and the package / naive ratios.
``--device cuda`` runs both on the GPU (the naive step with ``DEV=cuda``); there a measure is the
mean step over ``--batches`` steps in one epoch, the GPU's queue drained at both ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

ROOT = Path(__file__).resolve().parents[1]
NAIVE = ROOT.parent / "shared" / "reference" / "naive_conv_step.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from speed import cpu_model, gpu_model, print_ratios  # noqa: E402


class StepTimer(Callback):
    """Wall seconds of each training batch (the D step and the G step), after ``warmup`` batches.
    On a GPU also ``window``: the seconds of the ``steps`` batches after the warm-up, from an empty
    queue to an empty queue (a step's own wall time there is when its work was queued, not done)."""

    def __init__(self, warmup: int, steps: int = 0) -> None:
        self.warmup, self.seconds, self._start = warmup, [], 0.0
        self.steps, self.seen, self.window, self._window_start = steps, 0, None, 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.seen == self.warmup and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            self._window_start = time.perf_counter()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step > self.warmup:
            self.seconds.append(time.perf_counter() - self._start)
        self.seen += 1
        if self.seen == self.warmup + self.steps and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            self.window = time.perf_counter() - self._window_start


def write_random_folder(root: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    for name, count in (("labeled/a", 32), ("labeled/b", 32), ("unlabeled", 256)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def package_step(args: argparse.Namespace, precision: str) -> float:
    """Median seconds a step of the package, in a process of its own (``package`` subcommand)."""
    command = [sys.executable, __file__, "package", "--precision", precision, "--batches", str(args.batches)]
    command += [
        "--image-size",
        str(args.image_size),
        "--config",
        args.config,
        "--warmup",
        str(args.warmup),
        *(["--device", args.device] if args.device else []),
        *(["--", *args.extra] if args.extra else []),
    ]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-2000:] + out.stderr[-3000:])
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def run_package(args: argparse.Namespace) -> None:
    from lit_ssgan.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_random_folder(folder, args.image_size)
        overrides = [
            "--data.labeled_dir", str(folder / "labeled"), "--data.unlabeled_dir", str(folder / "unlabeled"),
            "--data.image_size", str(args.image_size), "--data.cache_dir", str(folder / "cache"),
            "--trainer.precision", args.precision,
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(folder / "run"),
            "--data.train_transforms", "null", "--data.balance_ratio", "null",
            "--trainer.max_steps", str(args.batches + args.warmup),
        ]  # fmt: skip
        if args.device:  # on a GPU, one epoch for warm-up and measure: no loader restarts in the window
            overrides += [f"--trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"]
            overrides += [f"--data.batches_per_epoch={args.batches + args.warmup + 2}"]
        built = cli(["--config", args.config, *overrides, *args.extra], run=False)
        timer = StepTimer(warmup=args.warmup, steps=args.batches)
        built.trainer.callbacks.append(timer)  # type: ignore[attr-defined]
        built.trainer.fit(built.model, datamodule=built.datamodule)
    # on a GPU the mean over the drained window; on the CPU the median step, as before
    seconds = timer.window / args.batches if timer.window is not None else statistics.median(timer.seconds)
    print(json.dumps({"seconds": seconds, "all": timer.seconds}))


def naive_step(batches: int, *flags: str, device: str | None = None) -> float:
    env = os.environ | {"DEV": device} if device else None  # the reference step's own switch
    out = subprocess.run([sys.executable, str(NAIVE), str(batches), *flags], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{NAIVE.name} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return float(re.search(r"([\d.]+) ms/iteration", out.stdout).group(1)) / 1000  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="compare", choices=["compare", "package"])
    parser.add_argument("--config", default=str(ROOT / "configs" / "image_folder.yaml"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="timed steps per measure (after the warm-up steps)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of the package first")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="32-true", help="the package subcommand's")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], choices=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="where both run (default: the naive step on the CPU, the package on the config's accelerator)",
    )
    parser.add_argument("--no-naive", action="store_true", help="the package only (the naive step is 32 px only)")
    parser.add_argument("--json", help="also write the medians (seconds per step) to this file")
    parser.add_argument("extra", nargs="*", help="more lit-ssgan options for the package runs (after --)")
    args, more = parser.parse_known_args()  # options after -- (argparse keeps them apart from "extra")
    args.extra += [option for option in more if option != "--"]
    if args.command == "package":
        run_package(args)
        return
    where = f"GPU: {gpu_model()}" if args.device == "cuda" else f"CPU: {cpu_model()}"
    print(f"{where}; {Path(args.config).name} at {args.image_size} px, batch 64; torch {torch.__version__}")
    cases = [(p, ("--bf16",) if p == "bf16-mixed" else ()) for p in args.precisions]
    times: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for precision, flags in cases:
            if not args.no_naive:
                times.setdefault(f"naive {flags[0][2:] if flags else 'fp32'}", []).append(
                    naive_step(args.batches, *flags, device=args.device)
                )
            times.setdefault(f"package {precision}", []).append(package_step(args, precision))
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    print("\nseconds per step (median of repeats):")
    for name, value in median.items():
        print(f"  {name:22s} {value:6.2f}")
    ratios = {
        "package fp32 / naive fp32": ("package 32-true", "naive fp32"),
        "package bf16-mixed / naive bf16": ("package bf16-mixed", "naive bf16"),
    }
    print_ratios(median, ratios)
    if args.json:
        Path(args.json).write_text(json.dumps({"where": where, "image_size": args.image_size, "seconds": median}))


if __name__ == "__main__":
    main()
