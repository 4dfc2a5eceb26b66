"""MNIST with 100 labels: accuracy and speed of lit_ssgan, through the code users run.

Each run builds the model, data module and Trainer from ``configs/mnist.yaml`` exactly as
``lit-ssgan fit`` does, trains for ``--epochs``, and records per epoch the training time
(first batch to last, without validation and checkpointing) and the test error of the raw
and of the EMA-averaged weights. Before each run, a plain PyTorch loop (no Lightning) runs the
module's own loss code (``discriminator_losses``, ``generator_losses``) for ``--plain-batches``
batches, with its optimizers, the EMA update and the same batches — so the ratio shows what
Lightning and the module's bookkeeping cost on top of the same algorithm.

    python benchmarks/mnist.py --data-dir ../shared/data/mnist --epochs 20 --seeds 1 2 3
    python benchmarks/mnist.py --data-dir ../shared/data/mnist --epochs 2 --precision bf16-mixed
    python benchmarks/mnist.py ... --supervised   # the same networks on the 100 labels alone
    python benchmarks/mnist.py --epochs 300 --seeds 1 --resume   # again after a stop: goes on where it stopped

Results go to ``--out`` (one JSON per run, with the run's labeled examples and the record of its
split, ``labeled_examples.csv``, which ``--data.split_from`` trains on again); ``benchmarks/plot.py``
draws the error curves. Each run keeps its checkpoints and its curve so far in ``--out``/runs/NAME,
which ``--resume`` reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_ssgan import SemiSupervisedGAN
from lit_ssgan.averaging import ExponentialMovingAverage
from lit_ssgan.callbacks import EMA, LabeledExamples, ema_with_warmup
from lit_ssgan.callbacks.reports import TestReport
from lit_ssgan.cli import cli
from lit_ssgan.data.datasets import file_digest
from lit_ssgan.draws import LABELS_ONLY
from lit_ssgan.models.base import evaluating
from lit_ssgan.models.layers import init_weight_norm_from_data

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist.yaml"


class EpochRecorder(Callback):
    """Per epoch: seconds from the first batch's start to the last batch's end, the test error
    of the raw weights and of the EMA average (evaluated on the side, in eval mode), and the
    validation error the run logged (``val/error``: of the EMA weights when EMA is on), the
    figure to choose settings by."""

    def __init__(
        self, test_images: torch.Tensor, test_labels: torch.Tensor, ema_decays: list[float], curve: Path
    ) -> None:
        self.test_images, self.test_labels = test_images, test_labels
        # the records so far, rewritten after each epoch: a resumed run (--resume) goes on from them
        self.curve = curve
        self.epochs: list[dict[str, float]] = json.loads(curve.read_text()) if curve.exists() else []
        # more averages of the same run, to choose the EMA horizon on the validation set
        self.ema_decays, self.averages = ema_decays, [ema_with_warmup(d) for d in ema_decays]
        self.averaged: list[torch.nn.Module] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.ema_decays:
            self.val_images, self.val_labels = trainer.datamodule.val.__getitems__(range(len(trainer.datamodule.val)))
            self.averaged = [copy.deepcopy(pl_module.discriminator) for _ in self.ema_decays]
            self.num_averaged = torch.tensor(0)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if args[-1] == trainer.num_training_batches - 1:  # on a GPU: the epoch's work done, not only queued
            synchronize(pl_module.device)
        self.end = time.perf_counter()
        if self.averaged:
            net = pl_module.discriminator
            current = [*net.parameters(), *net.buffers()]
            for average, model in zip(self.averages, self.averaged, strict=True):
                average([*model.parameters(), *model.buffers()], current, self.num_averaged)
            self.num_averaged += 1

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {"epoch": trainer.current_epoch + 1, "seconds": self.end - self.start}
        if "val/error" in trainer.callback_metrics:
            record["val_error"] = float(trainer.callback_metrics["val/error"])
        record["test_error"] = self.error(pl_module)
        average = ema_weights(trainer, pl_module)
        if average is not None:
            averaged = copy.deepcopy(pl_module.discriminator)
            averaged.load_state_dict(
                {k.removeprefix("discriminator."): v for k, v in average.items() if k.startswith("discriminator.")}
            )
            record["test_error_ema"] = self.error(Classifier(pl_module, averaged))
        for decay, model in zip(self.ema_decays, self.averaged, strict=True):
            classifier = Classifier(pl_module, model)
            record[f"val_error_ema_{decay}"] = self.error(classifier, self.val_images, self.val_labels)
            record[f"test_error_ema_{decay}"] = self.error(classifier)
        self.epochs.append(record)
        self.curve.write_text(json.dumps(self.epochs, indent=1))
        print(json.dumps(record), flush=True)

    @torch.no_grad()
    def error(self, model: torch.nn.Module, images: torch.Tensor | None = None, labels: Any = None) -> float:
        """The error on ``images`` and ``labels`` (default: the test set)."""
        if images is None or labels is None:
            images, labels = self.test_images, self.test_labels
        device = next(model.parameters()).device  # the test images stay on the CPU
        with evaluating(model):
            wrong = sum(
                (model(x.to(device)).argmax(1) != y.to(device)).sum().item()
                for x, y in zip(images.split(1000), labels.split(1000), strict=True)
            )
        return wrong / len(labels)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing on the CPU), so that a time taken after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Classifier(torch.nn.Module):
    """Another copy of the model's discriminator as the model classifies with it (its heads)."""

    def __init__(self, model: LightningModule, discriminator: torch.nn.Module) -> None:
        super().__init__()
        self.heads, self.discriminator = model.heads, discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.discriminator(x).logits).predicted


@contextmanager
def frozen(network: torch.nn.Module) -> Iterator[None]:
    """No gradients for ``network`` inside the block (what ``toggled_optimizer`` does for the other one)."""
    for p in network.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in network.parameters():
            p.requires_grad_(True)


def plain_loop(model: SemiSupervisedGAN, dm: Any, ema_decay: float | None, num_batches: int, precision: str) -> float:
    """Seconds for ``num_batches`` of the module's training step without Lightning (after 20
    untimed warm-up batches): the module's own ``discriminator_losses`` and ``generator_losses``
    (so its networks, heads and every loss term the config turns on), its optimizers, plain
    backward and step, the EMA update, and the data module's batches. The epoch must hold
    ``num_batches + 20`` batches.

    It does not clip or multiply gradients (in the module that is Lightning's ``clip_gradients``),
    so it refuses configs that do, rather than time a different algorithm.
    """
    if any(policy.clip_val is not None or policy.matched for policy in model.gradients.values()):
        raise ValueError("the plain twin does not clip or multiply gradients: use --plain-batches 0 with this config")
    D, G = model.discriminator, model.generator
    d_opt, g_opt = model.make_optimizers()
    if ema_decay is not None:
        ema = ExponentialMovingAverage(model, ema_decay)  # the EMA callback's average: the same update
    loaders = dm.train_dataloader()
    warmup = 20  # untimed, like the package's first epoch
    if len(loaders["unlabeled"]) < warmup + num_batches:
        raise ValueError(f"--plain-batches {num_batches} needs epochs of at least {warmup + num_batches} batches")
    autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    model.noise_rng = torch.Generator().manual_seed(0)
    batches = zip(*loaders.values(), strict=True)
    for i, ((x_lab, y_lab), (x_unl, _), (x_unl_g, _)) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + num_batches:
            break
        if i == 0 and model.training_options.data_dependent_init:
            init_weight_norm_from_data(D, torch.cat([x_lab, x_unl]))
        with frozen(G):
            with autocast:
                d_loss, _ = model.discriminator_losses(x_lab, y_lab, x_unl)
            d_loss.total.backward()
        d_opt.step()
        d_opt.zero_grad(set_to_none=True)
        with frozen(D):
            with autocast:
                g_loss = model.generator_losses(x_unl_g)
            g_loss.total.backward()
        g_opt.step()
        g_opt.zero_grad(set_to_none=True)
        if ema_decay is not None:
            ema.update_parameters(model)
    return time.perf_counter() - start


def find_ema(trainer: Trainer) -> EMA | None:
    return next((c for c in trainer.callbacks if isinstance(c, EMA)), None)  # type: ignore[attr-defined]


def ema_weights(trainer: Trainer, pl_module: LightningModule) -> dict[str, torch.Tensor] | None:
    """The EMA average of the weights, as a checkpoint holds it (through the callback's public
    ``on_save_checkpoint``, which puts the average in ``state_dict``), or None without EMA."""
    ema = find_ema(trainer)
    if ema is None:
        return None
    checkpoint: dict[str, Any] = {"state_dict": pl_module.state_dict()}
    ema.on_save_checkpoint(trainer, pl_module, checkpoint)
    return checkpoint["state_dict"] if "current_model_state" in checkpoint else None


def build(args: argparse.Namespace, seed: int, root: Path) -> Any:
    """The run's model, data and Trainer, as ``lit-ssgan fit`` builds them, logging under ``root``
    (one folder a run: runs of other seeds or settings may share ``--out`` and run at once)."""
    overrides = [
        f"--seed_everything={seed}",
        f"--data.data_seed={seed}",
        f"--data.data_dir={args.data_dir}",
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.precision={args.precision}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if args.supervised:
        overrides += LABELS_ONLY
    return cli(["--config", str(args.config), *overrides, *args.extra], run=False)


def run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    name = f"{'supervised' if args.supervised else 'ssgan'}-{args.precision}-e{args.epochs}-s{seed}"
    # the run's checkpoints and its curve so far, which --resume goes on from
    root = out / "runs" / name
    checkpoints, curve = root / "checkpoints", root / "curve.json"
    last = checkpoints / "last.ckpt"
    resume = args.resume and last.exists()
    curve.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        curve.unlink(missing_ok=True)
    plain_seconds = None
    if args.plain_batches and not resume:
        reference = build(args, seed, root)  # a fresh model and data, untouched by the Lightning run
        if reference.trainer.strategy.root_device.type != "cpu":
            raise SystemExit("the plain twin runs on the CPU only: --plain-batches 0 for a run on another device")
        reference.datamodule.setup("fit")
        ema = find_ema(reference.trainer)
        plain_seconds = plain_loop(
            reference.model, reference.datamodule, ema and ema.decay, args.plain_batches, args.precision
        )

    made = build(args, seed, root)
    dm = made.datamodule
    dm.setup("test")
    recorder = EpochRecorder(*dm.test.__getitems__(range(len(dm.test))), args.ema_decays, curve)
    report = TestReport()  # the final test's confusion matrix (picture and counts), as `lit-ssgan test` writes it
    made.trainer.callbacks.extend([recorder, report])
    if made.trainer.checkpoint_callback is not None:  # a known place, for --resume
        made.trainer.checkpoint_callback.dirpath = str(checkpoints.resolve())
    made.trainer.fit(made.model, datamodule=dm, ckpt_path=last if resume else None)
    (final,) = made.trainer.test(made.model, datamodule=dm, verbose=False)  # the EMA weights, if EMA is on
    # the run's draw, as the module's LabeledExamples wrote it (--data.split_from RECORD trains on it
    # again); the test's confusion_matrix.png beside it
    (record,) = [c.written for c in made.trainer.callbacks if isinstance(c, LabeledExamples)]
    assert record is not None

    batches = dm.hparams.batches_per_epoch or len(dm.unlabeled) // dm.hparams.batch_size
    # the first epoch pays for warm-up (allocator, thread pools): the median of the rest
    steady = [e["seconds"] for e in recorder.epochs[1:]] or [recorder.epochs[0]["seconds"]]
    epoch_seconds = statistics.median(steady)
    result = {
        "seed": seed,
        "precision": args.precision,
        "supervised": args.supervised,
        "epochs": args.epochs,
        "batches_per_epoch": batches,
        "epoch_seconds": epoch_seconds,
        "unlabeled_images_per_second": batches * dm.hparams.batch_size / epoch_seconds,
        "val_error": recorder.epochs[-1].get("val_error"),
        "test_error": recorder.epochs[-1]["test_error"],
        "test_error_ema": recorder.epochs[-1].get("test_error_ema"),
        "test_error_final_checkpoint": final["test/error"],
        "labeled_examples_csv": str(record),
        "labeled_examples_sha256": file_digest(record, "sha256"),
        "labeled_examples": dm.labeled_examples["labeled"],
        "test_confusion": report.matrix.compute().tolist() if report.matrix is not None else None,
        "curve": recorder.epochs,
        "torch_threads": torch.get_num_threads(),
    }
    if plain_seconds is not None:
        plain_epoch = plain_seconds / args.plain_batches * batches
        result |= {"plain_epoch_seconds": plain_epoch, "overhead_ratio": epoch_seconds / plain_epoch}
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--config", default=str(CONFIG), help="the lit-ssgan config (default: configs/mnist.yaml)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--supervised", action="store_true", help="every unlabeled term off: the labeled data alone")
    parser.add_argument("--plain-batches", type=int, default=300, help="batches of the plain loop (0: skip it)")
    parser.add_argument(
        "--ema-decays", type=float, nargs="*", default=[], help="more EMA decays to evaluate (val and test) each epoch"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from the last checkpoint and the per-epoch records of an interrupted run with the same settings",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("extra", nargs="*", help="more lit-ssgan options, e.g. --trainer.max_steps=50 (after --)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\).*")
    if args.resume and args.ema_decays:
        parser.error("--resume cannot go on with --ema-decays: the extra averages are not in the checkpoints")
    Path(args.out).mkdir(parents=True, exist_ok=True)

    results = [run(args, seed) for seed in args.seeds]
    print(f"\nMNIST-100, {args.epochs} epochs, precision {args.precision}, {torch.get_num_threads()} threads")
    print(f"  seeds                       {args.seeds}")
    for r in results:
        digest = r["labeled_examples_sha256"][:12]
        print(f"  seed {r['seed']}'s draw             {r['labeled_examples_csv']} (sha256 {digest})")
    for key, label in [
        ("epoch_seconds", "train seconds / epoch"),
        ("unlabeled_images_per_second", "unlabeled images / s"),
        ("plain_epoch_seconds", "plain loop seconds / epoch"),
        ("overhead_ratio", "package / plain loop"),
        ("val_error", "validation error (logged)"),
        ("test_error", "test error (raw weights)"),
        ("test_error_ema", "test error (EMA weights)"),
    ]:
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            print(f"  {label:27s} {mean_std(values)}")


if __name__ == "__main__":
    main()
