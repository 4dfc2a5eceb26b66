"""The LightningModule: one discriminator step and one generator step per batch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lit_ssgan import losses
from lit_ssgan.checkpoint import load_checkpoint_file
from lit_ssgan.images import make_grid, save_png
from lit_ssgan.models import Discriminator, Generator
from lit_ssgan.models.layers import init_weight_norm_from_data

Batch = dict[str, tuple[Tensor, Tensor]]


# Checkpoints every N batches hold the weights after that batch's steps, with the progress counted
# to match, which is what an exact resume needs; Lightning 2.6 warns about it under manual optimization.
warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization and every_n_train_steps")


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite: training stops, the last good checkpoint stays."""


class SemiSupervisedGAN(LightningModule):
    """Semi-supervised GAN training (Salimans et al. 2016): the discriminator's K class
    logits classify labeled data and, through ``gan_logits``, tell real from generated.

    Args:
        discriminator: gives ``(logits, features)``; its class logits are the classifier.
        generator: maps latent codes to images in [0, 1].
        d_optimizer: builds the discriminator's optimizer from its parameters (any
            ``torch.optim`` class; the paper: Adam, lr 3e-3, betas (0.5, 0.999)).
        g_optimizer: builds the generator's optimizer from its parameters.
        d_lr_scheduler: optional LR scheduler for the discriminator's optimizer.
        g_lr_scheduler: optional LR scheduler for the generator's optimizer.
        lr_scheduler_interval: step the schedulers every ``"epoch"`` or every ``"step"`` (batch).
        unlabeled_weight: weight of ``d_loss_real + d_loss_fake`` in the discriminator loss
            (0 trains the classifier on the labeled data alone).
        d_label_smooth: one-sided label smoothing: unlabeled data's target P(real) is
            ``1 - d_label_smooth``.
        generator_target_prob: with ``generator_loss="sigmoid_kl"``, the P(real) the
            generator aims for on its samples.
        generator_loss: ``"feature_matching"`` or ``"sigmoid_kl"``.
        feature_distance: ``"squared"`` (OpenAI) or ``"absolute"`` (tefla) feature matching.
        d_clip_val: clip the discriminator's gradients to this norm or value (None: off).
        g_clip_val: clip the generator's gradients to this norm or value (None: off).
        clip_algorithm: ``"norm"`` (global norm of each network) or ``"value"``.
        num_sample_images: generated images in the grid written each epoch (0: none).
        data_dependent_init: before the first step, set the discriminator's weight-normalised
            layers from the first labeled and unlabeled batch so each unit starts at mean 0 and
            unit variance (Salimans & Kingma 2016; OpenAI's code does this).
        weights_from: warm start (tefla's ``weights_from``): when training starts from scratch
            (not when resuming), copy from this checkpoint or state-dict file the tensors whose
            names and shapes match; loaded with ``weights_only=True``. Replaces the
            data-dependent initialisation.
        on_nonfinite: when a loss is NaN or infinite: ``"stop"`` raises
            :class:`DivergenceError` naming the step and the loss term (no checkpoint is written
            after it, so the last good one stays); ``"skip"`` drops that batch's steps and
            counts it in ``train/skipped_steps``.

    Checkpoints hold only plain hyperparameters, so they load with ``weights_only=True``.
    From a CLI run they include the networks' config and ``load_from_checkpoint(path)``
    rebuilds everything; from Python, pass the networks again:
    ``load_from_checkpoint(path, discriminator=D, generator=G)``.
    """

    def __init__(
        self,
        discriminator: Discriminator,
        generator: Generator,
        d_optimizer: OptimizerCallable = torch.optim.Adam,
        g_optimizer: OptimizerCallable = torch.optim.Adam,
        d_lr_scheduler: LRSchedulerCallable | None = None,
        g_lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        unlabeled_weight: float = 1.0,
        d_label_smooth: float = 0.0,
        generator_target_prob: float = 1.0,
        generator_loss: Literal["feature_matching", "sigmoid_kl"] = "feature_matching",
        feature_distance: losses.FeatureDistance = "squared",
        d_clip_val: float | None = None,
        g_clip_val: float | None = None,
        clip_algorithm: Literal["norm", "value"] = "norm",
        num_sample_images: int = 100,
        data_dependent_init: bool = False,
        weights_from: str | None = None,
        on_nonfinite: Literal["stop", "skip"] = "stop",
    ) -> None:
        super().__init__()
        losses._check_probability("d_label_smooth", d_label_smooth)
        losses._check_probability("generator_target_prob", generator_target_prob)
        if unlabeled_weight < 0:
            raise ValueError(f"unlabeled_weight must be 0 or more, got {unlabeled_weight}")
        for name, value in (("d_clip_val", d_clip_val), ("g_clip_val", g_clip_val)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if discriminator.image_shape != generator.image_shape:
            raise ValueError(
                f"image_shape differs: the discriminator takes {discriminator.image_shape} but the generator "
                f"makes {generator.image_shape}"
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        # Under LightningCLI the hparams hold the networks' and optimizers' *config*; from Python
        # they would hold the objects themselves, which a weights_only checkpoint cannot hold:
        # leave those out (pass them again to `load_from_checkpoint`).
        for name in [name for name, value in self.hparams.items() if not _is_plain(value)]:
            del self.hparams[name]
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.generator = generator
        self._optimizer_factories = ((d_optimizer, d_lr_scheduler), (g_optimizer, g_lr_scheduler))
        self.configure_metrics()
        self.noise_rng: torch.Generator | None = None  # latent codes; created on the device at train start
        self._rng_to_restore: dict[str, Tensor] | None = None
        self.skipped_steps = 0  # batches dropped for a non-finite loss (on_nonfinite="skip"); checkpointed

    def configure_metrics(self) -> None:
        k = self.discriminator.num_classes
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(k, average="micro"),
                # tefla's `v-loss`: 1 - top-1 accuracy
                "error": 1 - MulticlassAccuracy(k, average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def setup(self, stage: str) -> None:
        """Refuses, before any step, data the networks were not built for."""
        datamodule = getattr(self.trainer, "datamodule", None)
        built_for = {"image_shape": self.discriminator.image_shape, "num_classes": self.discriminator.num_classes}
        for name, ours in built_for.items():
            theirs = getattr(datamodule, name, None)
            if theirs is not None and (tuple(theirs) if name == "image_shape" else theirs) != ours:
                raise ValueError(f"the data has {name} {theirs} but the discriminator was built for {ours}")

    def configure_optimizers(self) -> Any:
        (make_d_opt, make_d_sched), (make_g_opt, make_g_sched) = self._optimizer_factories
        d_opt, g_opt = make_d_opt(self.discriminator.parameters()), make_g_opt(self.generator.parameters())
        schedulers = [make(opt) for make, opt in ((make_d_sched, d_opt), (make_g_sched, g_opt)) if make is not None]
        for scheduler in schedulers:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise ValueError("ReduceLROnPlateau is not supported: the module steps schedulers without a metric")
        return [d_opt, g_opt], schedulers

    # -- the discriminator as classifier --------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """``(N, K)`` class logits of images ``(N, C, H, W)``."""
        return losses.class_logits(self.discriminator(x).logits, self.discriminator.explicit_fake)

    # -- training -------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x_lab, y_lab = batch["labeled"]
        x_unl, _ = batch["unlabeled"]
        x_unl_g, _ = batch["unlabeled_g"]
        d_opt, g_opt = self.optimizers()
        hp, explicit_fake = self.hparams, self.discriminator.explicit_fake
        n_lab, n_unl = len(x_lab), len(x_unl)
        log_now = self._logging_now()
        if hp.data_dependent_init and not hp.weights_from and self.global_step == 0:
            init_weight_norm_from_data(self.discriminator, torch.cat([x_lab, x_unl]))

        # Discriminator step: one forward over labeled, unlabeled and (detached) generated images.
        with self._training(d_opt):
            with torch.no_grad():
                x_fake = self.generator(self.generator.sample_latent(n_unl, self.noise_rng))
            logits = self.discriminator(torch.cat([x_lab, x_unl, x_fake])).logits
            logits_lab, logits_unl, logits_fake = logits.split([n_lab, n_unl, n_unl])
            gan_unl = losses.gan_logits(logits_unl, explicit_fake)
            gan_fake = losses.gan_logits(logits_fake, explicit_fake)
            class_lab = losses.class_logits(logits_lab, explicit_fake)
            d_loss_class = losses.d_loss_class(class_lab, y_lab)
            d_loss_real = losses.d_loss_real(gan_unl, hp.d_label_smooth)
            d_loss_fake = losses.d_loss_fake(gan_fake)
            d_loss = d_loss_class + hp.unlabeled_weight * (d_loss_real + d_loss_fake)
            terms = {"d_loss_class": d_loss_class, "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake}
            if not self._finite(d_loss, terms):
                return
            self.manual_backward(d_loss)
            d_opt.step()

        # Generator step, on an independent unlabeled batch; D is frozen.
        with self._training(g_opt):
            x_fake = self.generator(self.generator.sample_latent(len(x_unl_g), self.noise_rng))
            if hp.generator_loss == "feature_matching":
                with torch.no_grad():  # the real side needs no backward pass
                    real_features = self.discriminator(x_unl_g).features
                fake_features = self.discriminator(x_fake).features
                g_loss = losses.feature_matching(real_features, fake_features, hp.feature_distance)
            else:
                gan_g = losses.gan_logits(self.discriminator(x_fake).logits, explicit_fake)
                g_loss = losses.g_loss_sigmoid_kl(gan_g, hp.generator_target_prob)
            if not self._finite(g_loss, {"g_loss": g_loss}):
                return
            self.manual_backward(g_loss)
            with _not_counted(g_opt):  # one global step per batch, not per optimizer step
                g_opt.step()

        if hp.lr_scheduler_interval == "step":
            self._step_schedulers()
        if log_now:
            d_real = torch.sigmoid(gan_unl).mean()
            d_fake = torch.sigmoid(gan_fake).mean()
            train_acc = (class_lab.argmax(1) == y_lab).float().mean()
            self.log_dict(
                {
                    "train/d_loss_class": d_loss_class,
                    "train/d_loss_real": d_loss_real,
                    "train/d_loss_fake": d_loss_fake,
                    "train/g_loss": g_loss,
                    "train/acc": train_acc,
                    "train/d_real": d_real,
                    "train/d_fake": d_fake,
                    "train/d_lr": d_opt.param_groups[0]["lr"],
                    "train/g_lr": g_opt.param_groups[0]["lr"],
                    "train/skipped_steps": float(self.skipped_steps),
                },
                prog_bar=False,
            )

    def _finite(self, loss: Tensor, terms: dict[str, Tensor]) -> bool:
        """Whether ``loss`` is finite (one host sync per step); if not, stops or skips the batch."""
        if torch.isfinite(loss):
            return True
        bad = ", ".join(f"{name} = {value.item()}" for name, value in terms.items() if not torch.isfinite(value))
        batch = self.trainer.fit_loop.epoch_loop.batch_idx
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch})"
        if self.hparams.on_nonfinite == "stop":
            raise DivergenceError(
                f"non-finite loss at {where}: {bad or f'total {loss.item()}'}. Training stopped; the last checkpoint "
                "written before this step is intact. Lower the learning rates, clip gradients (d_clip_val, "
                "g_clip_val), or set on_nonfinite: skip."
            )
        self.skipped_steps += 1
        rank_zero_warn(f"skipped {where}: non-finite {bad} ({self.skipped_steps} skipped so far)")
        return False

    @contextmanager
    def _training(self, opt: LightningOptimizer) -> Iterator[None]:
        """Only ``opt``'s network gets gradients; they are cleared after its step."""
        with self.toggled_optimizer(opt):
            yield
        opt.zero_grad(set_to_none=True)

    def _logging_now(self) -> bool:
        """Whether the logger will write this batch's values (Lightning's own rule, checked at
        the start of the step): each self.log call costs ~0.3 ms however often it writes."""
        every: int = self.trainer.log_every_n_steps
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Here the AMP scaler has already unscaled the gradients (not so in training_step).
        d_opt, _ = self.trainer.optimizers
        clip_val = self.hparams.d_clip_val if optimizer is d_opt else self.hparams.g_clip_val
        if clip_val is not None:
            algorithm = self.hparams.clip_algorithm
            self.clip_gradients(optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=algorithm)

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        return schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []

    def _step_schedulers(self) -> None:
        for scheduler in self._schedulers():
            scheduler.step()  # never ReduceLROnPlateau: refused in configure_optimizers

    def on_train_epoch_end(self) -> None:
        if self.hparams.lr_scheduler_interval == "epoch":
            self._step_schedulers()
        self._write_samples()

    def on_fit_start(self) -> None:
        if self.hparams.weights_from and self.trainer.ckpt_path is None:
            self.load_matching_weights(self.hparams.weights_from)

    def load_matching_weights(self, path: str) -> list[str]:
        """Copies into this model the tensors of the checkpoint or state-dict file at ``path``
        whose names and shapes match (the file is loaded with ``weights_only=True``).

        Returns:
            The names of the tensors copied.

        Raises:
            ValueError: naming the file, if no tensor matches.
        """
        source = load_checkpoint_file(path)
        if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
            source = source["state_dict"]
        own = self.state_dict()
        matching = {
            name: tensor
            for name, tensor in source.items()
            if name in own and isinstance(tensor, Tensor) and tensor.shape == own[name].shape
        }
        if not matching:
            raise ValueError(f"weights_from: no tensor in {path} matches this model's names and shapes")
        self.load_state_dict(matching, strict=False)
        rank_zero_info(f"weights_from: {len(matching)} of {len(own)} tensors loaded from {path}")
        return sorted(matching)

    # -- randomness: latent codes from our own generator; both checkpointed -----------------
    def on_train_start(self) -> None:
        # A checkpoint saved after an epoch's last batch, but before the epoch's end, resumes into
        # the next epoch without running that end: catch its scheduler step up (exact resume).
        if self.hparams.lr_scheduler_interval == "epoch":
            for scheduler in self._schedulers():
                while scheduler.last_epoch < self.current_epoch:
                    scheduler.step()
        self.noise_rng = torch.Generator(device=self.device)
        self.noise_rng.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        if self._rng_to_restore is not None:
            # restored here, after the sanity check, so that nothing can draw from it first
            self.noise_rng.set_state(self._rng_to_restore["noise"])
            torch.set_rng_state(self._rng_to_restore["torch"])
            if "cuda" in self._rng_to_restore and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng_to_restore["cuda"])
            self._rng_to_restore = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, tensor in self.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise DivergenceError(
                    f"{name} holds NaN or infinite values at step {self.global_step}: no checkpoint is written over "
                    "the last good one"
                )
        checkpoint["skipped_steps"] = self.skipped_steps
        if self.noise_rng is None:
            return
        state = {"noise": self.noise_rng.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        checkpoint["rng_states"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")
        self.skipped_steps = checkpoint.get("skipped_steps", 0)

    # -- images -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self, n: int, seed: int = 0) -> Tensor:
        """``(n, C, H, W)`` generated images from fixed latent codes (eval mode: BN running stats)."""
        was_training = self.generator.training
        self.generator.eval()
        z = torch.rand(n, self.generator.latent_dim, generator=torch.Generator().manual_seed(seed))
        images = self.generator(z.to(self.device))
        self.generator.train(was_training)
        return images

    def _write_samples(self) -> None:
        n = self.hparams.num_sample_images
        if n <= 0 or self.trainer.sanity_checking:
            return
        grid = make_grid(self.sample_images(n).float())
        for logger in self.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("samples", grid, self.current_epoch)
        if self.trainer.is_global_zero and self.trainer.log_dir:
            path = Path(self.trainer.log_dir) / "samples" / f"epoch={self.current_epoch:03d}.png"
            save_png(grid, path, scale=max(1, 32 // self.generator.image_shape[-1]))  # small images: enlarge

    # -- evaluation -------------------------------------------------------------------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self(x), y)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self(x), y)
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``(N, K)`` class probabilities."""
        return self(batch[0]).softmax(dim=1)


@contextmanager
def _not_counted(opt: LightningOptimizer) -> Iterator[None]:
    """Steps ``opt`` without advancing ``trainer.global_step``.

    Under manual optimization every optimizer step advances the global step (Lightning
    issue #17958), so a GAN would count two per batch and ``max_steps``, checkpoint names
    and log steps would mean half what users expect. The progress hooks that Lightning sets
    on each optimizer for the batch are switched off for this one step.
    """
    hooks = opt._on_before_step, opt._on_after_step
    opt._on_before_step = opt._on_after_step = _do_nothing
    try:
        yield
    finally:
        opt._on_before_step, opt._on_after_step = hooks


def _do_nothing() -> None:
    pass


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is made of the plain types a ``weights_only`` checkpoint can hold."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))
