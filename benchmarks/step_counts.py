"""Tensor ops dispatched and host reads in one training step, for every shipped config, on this
machine's CPU (the proxies of a GPU step's kernel launches and synchronisations): each config runs
a few batches through ``lit-ssgan fit``'s own builder under :class:`lit_ssgan.callbacks.StepCounts`,
and the median step that does not log is reported with its most frequent ops.

    python benchmarks/step_counts.py                       # every config in configs/
    python benchmarks/step_counts.py --configs mnist.yaml --top 30 -- --model.training.compile true

The MNIST configs read ``--mnist-dir`` and ``--fashion-mnist-dir``; the image-folder configs run on
small folders of random PNGs written to a temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from lit_ssgan.callbacks import StepCounts
from lit_ssgan.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def write_folders(root: Path, size: int) -> dict[str, str]:
    """Two classes of 8 labeled colour PNGs and 256 unlabeled ones, of ``size`` px."""
    rng = np.random.default_rng(0)
    for folder, n in (("labeled/a", 8), ("labeled/b", 8), ("unlabeled", 256)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / folder / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return {"labeled_dir": str(root / "labeled"), "unlabeled_dir": str(root / "unlabeled")}


def config_args(config: Path, args: argparse.Namespace, work: Path) -> list[str]:
    """The command line of a short run of ``config`` under ``work``: ``--steps`` batches, none logged."""
    command = ["--config", str(config), "--trainer.max_steps", str(args.steps), "--trainer.logger", "false"]
    command += ["--trainer.log_every_n_steps", str(10 * args.steps), "--trainer.limit_val_batches", "0"]
    command += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    command += ["--trainer.enable_checkpointing", "false", "--test_after_fit", "false"]
    command += ["--trainer.default_root_dir", str(work / "run")]
    text = config.read_text()
    if "MNISTDataModule" in text or "FashionMNISTDataModule" in text:
        data_dir = args.fashion_mnist_dir if "FashionMNIST" in text else args.mnist_dir
        command += ["--data.data_dir", data_dir]
    if "ImageFolderDataModule" in text:
        folders = write_folders(work / "folders", args.image_size)
        command += ["--data.labeled_dir", folders["labeled_dir"], "--data.unlabeled_dir", folders["unlabeled_dir"]]
        command += ["--data.cache_dir", str(work / "cache"), "--data.image_size", str(args.image_size)]
    if "ModelCheckpoint" in text:  # the config's checkpoint callback needs checkpointing on
        command[command.index("--trainer.enable_checkpointing") + 1] = "true"
    return [*command, *args.extra]


def count(config: Path, args: argparse.Namespace, work: Path | None = None) -> StepCounts:
    """The counts of a short run of ``config`` (under ``work``, default a temporary directory)."""
    with tempfile.TemporaryDirectory() as temporary:
        run = cli(config_args(config, args, work or Path(temporary)), run=False)
        counts = StepCounts()
        run.trainer.callbacks.append(counts)  # type: ignore[attr-defined]
        run.trainer.fit(run.model, datamodule=run.datamodule)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="file names in configs/ (default: all)")
    parser.add_argument("--steps", type=int, default=6, help="training batches a config runs")
    parser.add_argument("--top", type=int, default=0, help="list the N most frequent ops of each config's step")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--mnist-dir", default=str(SHARED / "mnist"))
    parser.add_argument("--fashion-mnist-dir", default=str(SHARED / "fashion_mnist"))
    parser.add_argument("extra", nargs="*", help="more lit-ssgan fit options for every config (after --)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the runs' options go to LightningCLI as args, not read again from the command line
    torch.set_num_threads(1)

    configs = (
        [ROOT / "configs" / name for name in args.configs] if args.configs else sorted(ROOT.glob("configs/*.yaml"))
    )
    rows = []
    for config in configs:
        quiet = sorted(count(config, args).quiet_steps(), key=lambda s: s.ops)
        if not quiet:
            sys.exit(f"{config.name}: no step to count (raise --steps)")
        middle = quiet[len(quiet) // 2]
        rows.append((config.name, middle.ops, max(s.host_reads for s in quiet)))
        if args.top:
            print(f"{config.name}: " + ", ".join(f"{op} {n}" for op, n in middle.by_op.most_common(args.top)))
    print(
        f"\n{'config':24s} {'ops a step':>10s} {'host reads':>10s}   (median step that does not log; reads: the most)"
    )
    for name, ops, reads in rows:
        print(f"{name:24s} {ops:10d} {reads:10d}")


if __name__ == "__main__":
    main()
