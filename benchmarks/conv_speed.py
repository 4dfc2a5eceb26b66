"""Speed of one training step of the convolutional pair, in one run on this machine: the package
(``configs/image_folder.yaml`` as users run it, through ``lit-ssgan fit``'s own builder, the module
and the Trainer, on a folder of random 32x32 RGB images, batch 64) against the naive plain PyTorch
step (``../shared/reference/naive_conv_step.py``), fp32 and bf16, interleaved, one process at a
time, and the floor set by this CPU's measured convolution throughput and the step's FLOPs.

    python benchmarks/conv_speed.py --repeats 2
    python benchmarks/conv_speed.py --image-size 64 --batches 3 --no-naive   # other sizes: package only

Prints the CPU model, seconds per step (median of repeats) and the package / naive ratios.
"""

from __future__ import annotations

import argparse
import json
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
from speed import cpu_model  # noqa: E402


class StepTimer(Callback):
    """Wall seconds of each training batch (the D step and the G step), after ``warmup`` batches."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.seconds, self._start = warmup, [], 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step > self.warmup:
            self.seconds.append(time.perf_counter() - self._start)


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
            "--trainer.precision", args.precision, "--trainer.max_steps", str(args.batches + 2),
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(folder / "run"),
            "--data.train_transforms", "null", "--data.balance_ratio", "null",
        ]  # fmt: skip
        built = cli(["--config", args.config, *overrides, *args.extra], run=False)
        timer = StepTimer(warmup=2)
        built.trainer.callbacks.append(timer)  # type: ignore[attr-defined]
        built.trainer.fit(built.model, datamodule=built.datamodule)
    print(json.dumps({"seconds": statistics.median(timer.seconds), "all": timer.seconds}))


def naive_step(batches: int, *flags: str) -> float:
    out = subprocess.run([sys.executable, str(NAIVE), str(batches), *flags], capture_output=True, text=True, check=True)
    return float(re.search(r"([\d.]+) ms/iteration", out.stdout).group(1)) / 1000  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="compare", choices=["compare", "package"])
    parser.add_argument("--config", default=str(ROOT / "configs" / "image_folder.yaml"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="timed steps per measure (after 2 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--no-naive", action="store_true", help="the package only (the naive step is 32 px only)")
    parser.add_argument("extra", nargs="*", help="more lit-ssgan options for the package runs (after --)")
    args, more = parser.parse_known_args()  # options after -- (argparse keeps them apart from "extra")
    args.extra += [option for option in more if option != "--"]
    if args.command == "package":
        run_package(args)
        return
    print(f"CPU: {cpu_model()}; {Path(args.config).name} at {args.image_size} px, batch 64; torch {torch.__version__}")
    cases = [("32-true", ()), ("bf16-mixed", ("--bf16",))]
    times: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for precision, flags in cases:
            if not args.no_naive:
                times.setdefault(f"naive {flags[0][2:] if flags else 'fp32'}", []).append(
                    naive_step(args.batches, *flags)
                )
            times.setdefault(f"package {precision}", []).append(package_step(args, precision))
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    print("\nseconds per step (median of repeats):")
    for name, value in median.items():
        print(f"  {name:22s} {value:6.2f}")
    if not args.no_naive:
        print("ratios:")
        print(f"  package fp32 / naive fp32:       {median['package 32-true'] / median['naive fp32']:.2f}")
        print(f"  package bf16-mixed / naive bf16: {median['package bf16-mixed'] / median['naive bf16']:.2f}")


if __name__ == "__main__":
    main()
