"""Speed of one MNIST-100 training batch, in one run on this machine: the naive plain PyTorch
loop (``../shared/reference/naive_mnist_step.py``), then the package in fp32 and in bf16-mixed
through ``benchmarks/mnist.py`` (the code users run), each ``--repeats`` times, interleaved, one
process at a time. Prints the CPU model, milliseconds per batch and the two ratios the targets
are set on: package fp32 / naive loop and package bf16 / package fp32.

    python benchmarks/speed.py --data-dir ../shared/data/mnist
    python benchmarks/speed.py --config configs/mnist_fast.yaml --repeats 3
    DEV=cuda python benchmarks/speed.py --device cuda --no-twin --batches 200 --json speed.json   # on a GPU

``--device cuda`` runs the naive loop (``DEV=cuda``) and the package (``--trainer.accelerator=gpu``)
on the GPU; the plain twin, a CPU loop, is then left out.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAIVE = ROOT.parent / "shared" / "reference" / "naive_mnist_step.py"


#: the CPU flags of native bf16, fastest first, and how :func:`cpu_model` names them
FLAG_NAMES = [("amx_bf16", "with AMX"), ("avx512_bf16", "avx512_bf16, no AMX")]


def cpu_model() -> str:
    """The CPU's model and what sets bf16's speed on it: AMX, AVX-512's bf16, or else the vector
    instructions torch dispatches to, and whether bf16 is slow there (:mod:`lit_ssgan.precision`'s rule)."""
    import torch

    from lit_ssgan.precision import cpu_bf16_is_slow

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.findall(r"\b(amx_bf16|avx512_bf16)\b", info))
    capability = f"torch: {torch.backends.cpu.get_cpu_capability()}{', bf16 is slow' if cpu_bf16_is_slow() else ''}"
    kind = next((name for flag, name in FLAG_NAMES if flag in flags), capability)
    return f"{model.group(1) if model else 'unknown CPU'} ({kind})"


def gpu_model() -> str:
    import torch

    return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"


def run_checked(command: list[str], env: dict[str, str] | None = None) -> str:
    """The command's output; on failure, the end of what it printed, then exit."""
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return out.stdout


def naive_ms(batches: int, device: str | None = None) -> float:
    env = os.environ | {"DEV": device} if device else None  # the reference loop's own switch
    out = run_checked([sys.executable, str(NAIVE), str(batches)], env)
    return float(re.search(r"([\d.]+) ms/iteration", out).group(1))  # type: ignore[union-attr]


def package_ms(args: argparse.Namespace, precision: str) -> tuple[float, float | None]:
    """Milliseconds per batch: the package's (median over the epochs after the first of ``--epochs``) and
    its plain PyTorch twin's (``benchmarks/mnist.py``'s plain loop: the same work, no Lightning;
    None with ``--no-twin``)."""
    device = [f"--trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"] if args.device else []
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, str(ROOT / "benchmarks" / "mnist.py"), "--data-dir", args.data_dir,
            "--config", args.config, "--epochs", str(args.epochs), "--seeds", "1", "--precision", precision,
            "--plain-batches", str(0 if args.no_twin else args.batches - 20), "--out", out, "--",
            f"--data.batches_per_epoch={args.batches}", "--trainer.limit_val_batches=0", *device, *args.extra,
        ]  # fmt: skip
        run_checked(command)
        (result,) = (json.loads(p.read_text()) for p in Path(out).glob("*.json"))
    batches = result["batches_per_epoch"]
    plain = result.get("plain_epoch_seconds")
    return 1000 * result["epoch_seconds"] / batches, None if plain is None else 1000 * plain / batches


def print_ratios(median: dict[str, float], ratios: dict[str, tuple[str, str]]) -> None:
    """Prints each ``label: a / b`` of ``ratios`` whose two figures were measured."""
    measured = {label: pair for label, pair in ratios.items() if all(name in median for name in pair)}
    if measured:
        print("ratios:")
    width = max((len(label) for label in measured), default=0) + 2
    for label, (a, b) in measured.items():
        print(f"  {label + ':':{width}s} {median[a] / median[b]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist.yaml"))
    parser.add_argument("--batches", type=int, default=300, help="batches per timed epoch and of the naive loop")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of a package run (the first is not timed)")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="where the naive loop and the package run (default: the naive loop on the CPU, the package on the "
        "config's accelerator); cuda leaves the plain twin out (it runs on the CPU only)",
    )
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], choices=["32-true", "bf16-mixed"])
    parser.add_argument("--no-naive", action="store_true", help="leave the naive loop out")
    parser.add_argument("--no-twin", action="store_true", help="leave the plain twin out")
    parser.add_argument("--json", help="also write the medians (ms per batch) to this file")
    parser.add_argument("extra", nargs="*", help="more lit-ssgan options for the package runs (after --)")
    args = parser.parse_args()
    args.no_twin = args.no_twin or args.device == "cuda"

    where = f"GPU: {gpu_model()}" if args.device == "cuda" else f"CPU: {cpu_model()}"
    print(f"{where}; config {Path(args.config).name}; {args.batches} batches per measure", flush=True)
    short = {"32-true": "fp32", "bf16-mixed": "bf16"}
    names = [] if args.no_naive else ["naive loop, fp32"]
    for precision in args.precisions:
        names.append(f"package, {'fp32' if precision == '32-true' else precision}")
        names += [] if args.no_twin else [f"plain twin, {short[precision]}"]
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        if not args.no_naive:
            times["naive loop, fp32"].append(naive_ms(args.batches, args.device))
        for precision in args.precisions:
            package, plain = package_ms(args, precision)
            times[f"package, {'fp32' if precision == '32-true' else precision}"].append(package)
            if plain is not None:
                times[f"plain twin, {short[precision]}"].append(plain)
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in times.items()), flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    print("\nms per batch (median of repeats):")
    for name, value in median.items():
        print(f"  {name:20s} {value:6.1f}   ({600 * value / 1000:.1f} s per 600-batch epoch)")
    ratios = {
        "package fp32 / naive loop": ("package, fp32", "naive loop, fp32"),
        "package bf16 / package fp32": ("package, bf16-mixed", "package, fp32"),
        "package / plain twin, fp32": ("package, fp32", "plain twin, fp32"),
        "package / plain twin, bf16": ("package, bf16-mixed", "plain twin, bf16"),
    }
    print_ratios(median, ratios)
    if args.json:
        Path(args.json).write_text(json.dumps({"where": where, "batches": args.batches, "ms_per_batch": median}))


if __name__ == "__main__":
    main()
