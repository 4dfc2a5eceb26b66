"""What several test files share: paths, small CLI runs, small models, weight comparison, and a
network that diverges on purpose (importable by ``class_path`` from a CLI subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback
from torch import Tensor

from lit_ssgan import SemiSupervisedGAN
from lit_ssgan.models import DiscriminatorOutput, MLPDiscriminator, MLPGenerator

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# The real datasets sit beside the checkout (../shared/data), never in the repository.
SHARED_DATA = Path(os.environ.get("LIT_SSGAN_DATA", ROOT.parent / "shared" / "data"))

# Small networks for the digits config: a run of a few batches takes a fraction of a second.
SMALL_NETWORKS = ["--model.discriminator.init_args.hidden", "[64, 32]", "--model.generator.init_args.hidden", "[32]"]
# Checkpoints every 2 batches, all kept.
EVERY_2_STEPS = ["--trainer.callbacks.init_args.every_n_train_steps=2", "--trainer.callbacks.init_args.save_top_k=-1"]


def digits_args(root: Path, *extra: str, subcommand: str = "fit", networks: list[str] = SMALL_NETWORKS) -> list[str]:
    """The command line of a small, quick run of ``configs/digits.yaml`` under ``root``: 4
    batches of 20 an epoch, no progress bar; ``fit`` does not test at the end."""
    args = [subcommand, "--config", str(CONFIGS / "digits.yaml"), *networks]
    if subcommand == "fit":
        args += ["--data.init_args.batch_size", "20", "--data.init_args.batches_per_epoch", "4"]
        args += ["--test_after_fit", "false"]
    args += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    return [*args, "--trainer.enable_model_summary", "false", *extra]


#: two CPU processes under DDP
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def ddp_args(root: Path, *extra: str) -> list[str]:
    """``digits_args`` under DDP on two CPU processes, each epoch's checkpoint kept."""
    return digits_args(root, *DDP, "--trainer.callbacks.init_args.save_top_k=-1", *extra)


def ddp_run(root: Path, *extra: str) -> subprocess.CompletedProcess:
    """``ddp_args`` run as a subprocess, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "lit_ssgan", *ddp_args(root, *extra)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def folder_args(folders: Path, run: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    """configs/image_folder.yaml with the folders, 16x16 grey, and small MLP networks (quick on a CPU)."""
    args = [subcommand, "--config", str(CONFIGS / "image_folder.yaml"), "--trainer.default_root_dir", str(run)]
    args += ["--data.image_size", "16", "--data.channels", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--model.discriminator", "lit_ssgan.models.MLPDiscriminator"]
    args += [
        "--model.discriminator.init_args.hidden",
        "[256, 128]",
        "--model.discriminator.init_args.input_noise",
        "0.2",
    ]
    args += ["--model.generator", "lit_ssgan.models.MLPGenerator", "--model.generator.init_args.hidden", "[128]"]
    args += ["--model.d_optimizer.init_args.lr", "0.003", "--model.g_optimizer.init_args.lr", "0.003"]
    args += ["--model.d_lr_scheduler.init_args.rates", "{0: 0.003, 10: 0.001}"]
    args += ["--model.g_lr_scheduler.init_args.rates", "{0: 0.003, 10: 0.001}"]
    if subcommand == "fit":
        args += ["--data.labeled_dir", str(folders / "labeled"), "--data.unlabeled_dir", str(folders / "unlabeled")]
        args += ["--data.val_size", "0", "--data.batch_size", "50", "--data.train_transforms", "null"]
        args += ["--test_after_fit", "false"]  # the config tests after fit: it needs a test_dir
    return [*args, *extra]


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def checkpoint_weights(path: Path) -> dict[str, Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(want: dict[str, Tensor], got: dict[str, Tensor]) -> None:
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def make_model(hidden: tuple[int, ...] = (64, 32), **kwargs) -> SemiSupervisedGAN:
    """A small model for the digits (8×8, 10 classes), Adam as in the paper."""
    kwargs.setdefault("d_optimizer", partial(torch.optim.Adam, lr=3e-3, betas=(0.5, 0.999)))
    kwargs.setdefault("g_optimizer", partial(torch.optim.Adam, lr=3e-3, betas=(0.5, 0.999)))
    return SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=hidden), MLPGenerator((1, 8, 8), hidden=(32,)), **kwargs
    )


def make_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    """A quiet Trainer: no logger, checkpoints, progress bar or sanity check unless asked."""
    kwargs.setdefault("max_steps", 3)
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


class DivergingDiscriminator(MLPDiscriminator):
    """An MLP discriminator whose logits turn NaN from its ``nan_after``-th training forward on
    (three forwards a batch: the D step, then the G step's real and generated features)."""

    def __init__(self, nan_after: int = 15, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        out = super().forward(x)
        if not self.training:
            return out
        self.calls += 1
        return out._replace(logits=out.logits * float("nan")) if self.calls > self.nan_after else out


class StepRecorder(Callback):
    """Records every optimizer step of a fit through torch's public optimizer hooks: which network
    stepped, both networks' weights before and after, and the gradients the step used (after the
    module's multipliers and clipping, which run inside ``step``)."""

    nets = ("discriminator", "generator")

    def __init__(self) -> None:
        self.steps: list[tuple[str, dict, dict, dict]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        for optimizer in trainer.optimizers:
            before: dict = {}
            optimizer.register_step_pre_hook(lambda opt, *_, before=before: before.update(self.snapshot(pl_module)))
            optimizer.register_step_post_hook(lambda opt, *_, before=before: self._record(pl_module, opt, before))

    def _record(self, pl_module, optimizer, before: dict) -> None:
        grads = {
            net: [None if p.grad is None else p.grad.clone() for p in getattr(pl_module, net).parameters()]
            for net in self.nets
        }
        self.steps.append((pl_module.network_of(optimizer), dict(before), self.snapshot(pl_module), grads))

    def snapshot(self, pl_module) -> dict[str, list[Tensor]]:
        return {net: [p.detach().clone() for p in getattr(pl_module, net).parameters()] for net in self.nets}

    def of(self, net: str) -> list[tuple[str, dict, dict, dict]]:
        return [step for step in self.steps if step[0] == net]


class RateRecorder(Callback):
    """The learning rate of each optimizer at the start of every training epoch, and after the
    run (``trainer.callbacks+=tests.helpers.RateRecorder`` on the command line)."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.rates.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])

    def on_train_end(self, trainer, pl_module) -> None:
        self.rates.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])


class StepLosses(Callback):
    """The discriminator loss each training step returns, by epoch."""

    def __init__(self):
        self.by_epoch = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.by_epoch.setdefault(trainer.current_epoch, []).append(outputs["loss"].item())


class TermDuringValidation(Callback):
    """Sends this process a SIGTERM (what a scheduler sends) in the middle of epoch 2's validation."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.current_epoch == 1 and batch_idx == 3 and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


def signalled_after_first_epoch(
    args: list[str],
    signum: int,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    group: bool = False,
) -> tuple[int, str]:
    """Runs ``lit-ssgan ARGS`` in a process of its own, sends it ``signum`` once its first epoch
    line is out, and returns its exit status and standard error. ``group``: the process leads a
    process group of its own, and the signal goes to the whole group, as a terminal's Ctrl-C does."""
    run = subprocess.Popen(
        [sys.executable, "-m", "lit_ssgan", *args],
        cwd=ROOT,
        env=env if env is not None else {**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
        start_new_session=group,
    )
    deadline = time.monotonic() + 120
    while run.stdout is not None and "Epoch 1 [" not in run.stdout.readline() and time.monotonic() < deadline:
        pass
    if group:
        os.killpg(run.pid, signum)
    else:
        run.send_signal(signum)
    _, stderr = run.communicate(timeout=120)
    return run.returncode, stderr
