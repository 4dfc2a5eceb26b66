"""Speed of one MNIST-100 training batch, in one run on this machine: the naive plain PyTorch
loop (``../shared/reference/naive_mnist_step.py``), then the package in fp32 and in bf16-mixed
through ``benchmarks/mnist.py`` (the code users run), each ``--repeats`` times, interleaved, one
process at a time. Prints the CPU model, milliseconds per batch and the two ratios the targets
are set on: package fp32 / naive loop and package bf16 / package fp32.

    python benchmarks/speed.py --data-dir ../shared/data/mnist
    python benchmarks/speed.py --config configs/mnist_fast.yaml --repeats 3
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAIVE = ROOT.parent / "shared" / "reference" / "naive_mnist_step.py"


def cpu_model() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    amx = "with AMX" if "amx_bf16" in info else "without AMX"
    return f"{model.group(1) if model else 'unknown CPU'} ({amx})"


def naive_ms(batches: int) -> float:
    out = subprocess.run([sys.executable, str(NAIVE), str(batches)], capture_output=True, text=True, check=True)
    return float(re.search(r"([\d.]+) ms/iteration", out.stdout).group(1))  # type: ignore[union-attr]


def package_ms(args: argparse.Namespace, precision: str) -> tuple[float, float]:
    """Milliseconds per batch: the package's (median over the epochs after the first of 3) and
    its plain PyTorch twin's (``benchmarks/mnist.py``'s plain loop: the same work, no Lightning)."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, str(ROOT / "benchmarks" / "mnist.py"), "--data-dir", args.data_dir,
            "--config", args.config, "--epochs", "3", "--seeds", "1", "--precision", precision,
            "--plain-batches", str(args.batches - 20), "--out", out, "--", f"--data.batches_per_epoch={args.batches}",
            "--trainer.limit_val_batches=0", *args.extra,
        ]  # fmt: skip
        subprocess.run(command, capture_output=True, text=True, check=True)
        (result,) = (json.loads(p.read_text()) for p in Path(out).glob("*.json"))
    batches = result["batches_per_epoch"]
    return 1000 * result["epoch_seconds"] / batches, 1000 * result["plain_epoch_seconds"] / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist.yaml"))
    parser.add_argument("--batches", type=int, default=300, help="batches per timed epoch and of the naive loop")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more lit-ssgan options for the package runs (after --)")
    args = parser.parse_args()

    print(f"CPU: {cpu_model()}; config {Path(args.config).name}; {args.batches} batches per measure", flush=True)
    names = ["naive loop, fp32", "package, fp32", "plain twin, fp32", "package, bf16-mixed", "plain twin, bf16"]
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        times["naive loop, fp32"].append(naive_ms(args.batches))
        for precision, short in (("32-true", "fp32"), ("bf16-mixed", "bf16")):
            package, plain = package_ms(args, precision)
            times[f"package, {precision if short == 'bf16' else short}"].append(package)
            times[f"plain twin, {short}"].append(plain)
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in times.items()), flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    print("\nms per batch (median of repeats):")
    for name, value in median.items():
        print(f"  {name:20s} {value:6.1f}   ({600 * value / 1000:.1f} s per 600-batch epoch)")
    print("ratios:")
    print(f"  package fp32 / naive loop:   {median['package, fp32'] / median['naive loop, fp32']:.2f}")
    print(f"  package bf16 / package fp32: {median['package, bf16-mixed'] / median['package, fp32']:.2f}")
    print(f"  package / plain twin, fp32:  {median['package, fp32'] / median['plain twin, fp32']:.2f}")
    print(f"  package / plain twin, bf16:  {median['package, bf16-mixed'] / median['plain twin, bf16']:.2f}")


if __name__ == "__main__":
    main()
