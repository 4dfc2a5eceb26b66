"""MNIST with 100 labels: accuracy and speed of lit_ssgan, through the code users run.

Each run builds the model, data module and Trainer from ``configs/mnist.yaml`` exactly as
``lit-ssgan fit`` does, trains for ``--epochs``, and records per epoch the training time
(first batch to last, without validation and checkpointing) and the test error of the raw
and of the EMA-averaged weights. Before each run, a plain PyTorch loop (no Lightning) does
the identical work for ``--plain-batches`` batches — the package's networks, losses, fused
Adam, EMA update and batch composition — so the ratio shows what the package costs on top.

    python benchmarks/mnist.py --data-dir ../shared/data/mnist --epochs 20 --seeds 1 2 3
    python benchmarks/mnist.py --data-dir ../shared/data/mnist --epochs 2 --precision bf16-mixed
    python benchmarks/mnist.py ... --supervised   # the same networks on the 100 labels alone
    python benchmarks/mnist.py --epochs 300 --seeds 1 --resume   # again after a stop: goes on where it stopped

Results go to ``--out`` (one JSON per run); ``benchmarks/plot.py`` draws the error curves. Each
run keeps its checkpoints and its curve so far in ``--out``/runs/NAME, which ``--resume`` reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_ssgan import losses
from lit_ssgan.callbacks import EMA, ema_with_warmup
from lit_ssgan.cli import cli
from lit_ssgan.models.layers import frozen_weights, init_weight_norm_from_data

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
            # the discriminator is the classifier (MNIST: no explicit fake class, so its logits)
            self.averaged = [copy.deepcopy(pl_module.discriminator) for _ in self.ema_decays]
            self.num_averaged = torch.tensor(0)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
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
        ema = find_ema(trainer)
        if ema is not None and ema._average_model is not None:
            record["test_error_ema"] = self.error(ema._average_model.module)
        for decay, model in zip(self.ema_decays, self.averaged, strict=True):
            classifier = Logits(model)
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
        was_training = model.training
        model.eval()
        wrong = sum(
            (model(x).argmax(1) != y).sum().item() for x, y in zip(images.split(1000), labels.split(1000), strict=True)
        )
        model.train(was_training)
        return wrong / len(labels)


class Logits(torch.nn.Module):
    """A discriminator's class logits."""

    def __init__(self, discriminator: torch.nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x).logits


def plain_loop(model: Any, dm: Any, ema_decay: float | None, num_batches: int, precision: str) -> float:
    """Seconds for ``num_batches`` of the module's training step (after 20 untimed warm-up
    batches), written as a plain PyTorch loop: same networks, losses (the consistency term
    included; not the conditional entropy), optimizers, EMA update and batch composition. The
    epoch must hold ``num_batches + 20`` batches."""
    D, G, hp = model.discriminator, model.generator, model.hparams
    (make_d_opt, _), (make_g_opt, _) = model._optimizer_factories
    d_opt, g_opt = make_d_opt(D.parameters()), make_g_opt(G.parameters())
    if ema_decay is not None:
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(ema_decay), use_buffers=True)
    loaders = dm.train_dataloader()
    warmup = 20  # untimed, like the package's first epoch
    if len(loaders["unlabeled"]) < warmup + num_batches:
        raise ValueError(f"--plain-batches {num_batches} needs epochs of at least {warmup + num_batches} batches")
    autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    noise = torch.Generator().manual_seed(0)
    batches = zip(*loaders.values(), strict=True)
    for i, ((x_lab, y_lab), (x_unl, _), (x_unl_g, _)) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + num_batches:
            break
        if i == 0 and hp.data_dependent_init:
            init_weight_norm_from_data(D, torch.cat([x_lab, x_unl]))
        for p in G.parameters():
            p.requires_grad_(False)
        with autocast:
            with torch.no_grad():
                x_fake = G(G.sample_latent(len(x_unl), noise))
            images = [x_lab, x_unl, x_fake, *([x_unl] if hp.unlabeled_consistency_weight else [])]
            logits = D(torch.cat(images)).logits
            logits_lab, logits_unl, logits_fake, *logits_unl_again = logits.split([len(x) for x in images])
            d_loss = losses.d_loss_labeled(logits_lab, y_lab) + hp.unlabeled_weight * (
                losses.d_loss_real(losses.gan_logits(logits_unl), hp.d_label_smooth)
                + losses.d_loss_fake(losses.gan_logits(logits_fake))
            )
            if hp.unlabeled_consistency_weight:
                d_loss = d_loss + hp.unlabeled_consistency_weight * losses.consistency(logits_unl, logits_unl_again[0])
        d_loss.backward()
        d_opt.step()
        d_opt.zero_grad(set_to_none=True)
        for p in G.parameters():
            p.requires_grad_(True)
        for p in D.parameters():
            p.requires_grad_(False)
        with autocast:
            x_fake = G(G.sample_latent(len(x_unl_g), noise))
            with frozen_weights(D):
                with torch.no_grad():
                    real_features = D(x_unl_g).features
                fake_features = D(x_fake).features
            g_loss = losses.feature_matching(real_features, fake_features, hp.feature_distance)
        g_loss.backward()
        g_opt.step()
        g_opt.zero_grad(set_to_none=True)
        for p in D.parameters():
            p.requires_grad_(True)
        if ema_decay is not None:
            ema.update_parameters(model)
    return time.perf_counter() - start


def find_ema(trainer: Trainer) -> EMA | None:
    return next((c for c in trainer.callbacks if isinstance(c, EMA)), None)  # type: ignore[attr-defined]


def build(args: argparse.Namespace, seed: int, out: Path) -> Any:
    overrides = [
        f"--seed_everything={seed}",
        f"--data.data_seed={seed}",
        f"--data.data_dir={args.data_dir}",
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.precision={args.precision}",
        f"--trainer.default_root_dir={out / 'runs'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if args.supervised:
        overrides.append("--model.unlabeled_weight=0")
    return cli(["--config", str(args.config), *overrides, *args.extra], run=False)


def run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    name = f"{'supervised' if args.supervised else 'ssgan'}-{args.precision}-e{args.epochs}-s{seed}"
    # the run's checkpoints and its curve so far, which --resume goes on from
    checkpoints, curve = out / "runs" / name / "checkpoints", out / "runs" / name / "curve.json"
    last = checkpoints / "last.ckpt"
    resume = args.resume and last.exists()
    curve.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        curve.unlink(missing_ok=True)
    plain_seconds = None
    if args.plain_batches and not resume:
        reference = build(args, seed, out)  # a fresh model and data, untouched by the Lightning run
        reference.datamodule.setup("fit")
        ema = find_ema(reference.trainer)
        plain_seconds = plain_loop(
            reference.model, reference.datamodule, ema and ema.decay, args.plain_batches, args.precision
        )

    made = build(args, seed, out)
    dm = made.datamodule
    dm.setup("test")
    recorder = EpochRecorder(*dm.test.__getitems__(range(len(dm.test))), args.ema_decays, curve)
    made.trainer.callbacks.append(recorder)
    if made.trainer.checkpoint_callback is not None:  # a known place, for --resume
        made.trainer.checkpoint_callback.dirpath = str(checkpoints.resolve())
    made.trainer.fit(made.model, datamodule=dm, ckpt_path=last if resume else None)
    (final,) = made.trainer.test(made.model, datamodule=dm, verbose=False)  # the EMA weights, if EMA is on

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
    parser.add_argument("--supervised", action="store_true", help="unlabeled_weight 0: the labeled data alone")
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
