"""The LightningModule: one discriminator step and one generator step per batch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast, get_args

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_ssgan import gradients, losses
from lit_ssgan.averaging import ExponentialMovingAverage
from lit_ssgan.callbacks.labeled_examples import LabeledExamples
from lit_ssgan.callbacks.preemption import Preemption
from lit_ssgan.callbacks.random_state import RandomState
from lit_ssgan.checkpoint import check_checkpoint_fits, load_matching_weights, non_plain_hparams
from lit_ssgan.compiling import CompileOption, compile_options, uses_cuda_graphs
from lit_ssgan.data.datasets import Batch
from lit_ssgan.divergence import NonFiniteGuard, OnNonFinite, apply_void, check_finite_weights
from lit_ssgan.errors import ConfigError, check_choice, check_positive, check_probability
from lit_ssgan.internals import step_not_counted
from lit_ssgan.losses import Heads, LossParts
from lit_ssgan.lr_schedulers import RunLengthSchedule, resume_at, run_length
from lit_ssgan.metrics import validation_scores
from lit_ssgan.models import Discriminator, Generator
from lit_ssgan.models.base import check_pair
from lit_ssgan.models.layers import frozen_weights, init_weight_norm_from_data

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
#: the data module's training batch: ``labeled``, ``unlabeled`` (for D) and ``unlabeled_g`` (for G)
TrainingBatch = dict[str, Batch]
SchedulerInterval = Literal["epoch", "step"]
Network = Literal["discriminator", "generator"]


class SemiSupervisedGAN(LightningModule):
    """Semi-supervised GAN training (Salimans et al. 2016): the discriminator's K class
    logits classify labeled data and, through ``gan_logits``, tell real from generated.

    Args:
        discriminator: gives ``(logits, features)``; its class logits are the classifier (for
            regression: a value and a real/fake logit, ``regression=True``).
        generator: maps latent codes to images in [0, 1].
        d_optimizer: builds the discriminator's optimizer from its parameters (any
            ``torch.optim`` class; the paper: Adam, lr 3e-3, betas (0.5, 0.999)).
        g_optimizer: builds the generator's optimizer from its parameters.
        d_lr_scheduler: optional LR scheduler for the discriminator's optimizer.
        g_lr_scheduler: optional LR scheduler for the generator's optimizer.
        lr_scheduler_interval: step the schedulers every ``"epoch"`` or every ``"step"`` (batch).
        resume_lr: when resuming from a checkpoint, both networks continue at this rate (their
            schedulers rescaled to continue from it); None keeps the saved rates.
        classification: K classes (cross entropy on labeled data) or, if false, regression of
            the label read as a number (mean squared error); the GAN terms are the same.
        validation_scores: names of the scores logged as ``val/<name>`` and ``test/<name>``
            (:func:`~lit_ssgan.metrics.validation_scores`; default ``acc``, ``error`` or, for
            regression, ``mae``, ``rmse``, ``kappa``).
        unlabeled_weight: weight of ``d_loss_real + d_loss_fake`` in the discriminator loss
            (0 trains the classifier on the labeled data alone).
        unlabeled_entropy_weight: weight of the conditional entropy of the class prediction on
            unlabeled data (Dai et al. 2017) in the discriminator loss; 0: off. Classification only.
        unlabeled_consistency_weight: weight of the Π-model's consistency term (Laine & Aila 2017)
            in the discriminator loss: the unlabeled batch goes through the discriminator a second
            time, under other noise, and the two class distributions are pulled together
            (:func:`losses.consistency`); 0: off. Classification only; needs a discriminator with
            noise (or dropout), else both passes agree and the term is 0.
        mean_teacher_decay: where the consistency term's second pass goes. None: through the
            discriminator itself (the Π-model: both passes get gradients). A decay: through an
            exponential moving average of the discriminator's weights with this decay (after the
            warm-up of :func:`~lit_ssgan.averaging.ema_with_warmup`), whose class distribution
            is the target the discriminator is pulled toward (Mean Teacher, Tarvainen & Valpola
            2017). The average is updated before each discriminator step, sees other noise and
            input shifts, and is saved in the checkpoints (``teacher.*``). Needs
            ``unlabeled_consistency_weight`` > 0.
        pseudo_label_threshold: the consistency term as FixMatch's (Sohn et al. 2020): cross
            entropy against the second pass's (or the teacher's) most probable class, counted
            where its probability reaches this threshold (:func:`losses.pseudo_label`); None: the
            squared distance between the two class distributions. Needs
            ``unlabeled_consistency_weight`` > 0.
        d_label_smooth: one-sided label smoothing: unlabeled data's target P(real) is
            ``1 - d_label_smooth``.
        generator_target_prob: with ``generator_loss="sigmoid_kl"``, the P(real) the
            generator aims for on its samples.
        generator_loss: ``"feature_matching"`` or ``"sigmoid_kl"``.
        feature_distance: ``"squared"`` (OpenAI) or ``"absolute"`` (tefla) feature matching.
        d_clip_val: clip the discriminator's gradients to this norm or value (None: off).
        g_clip_val: clip the generator's gradients to this norm or value (None: off).
        clip_algorithm: ``"norm"`` (global norm of each network), ``"value"``, or
            ``"norm_per_tensor"`` (each gradient tensor to the norm on its own: tefla's default).
        d_gradient_multipliers: ``{pattern: factor}``: scale the gradients of the discriminator's
            parameters whose names match the pattern (``fnmatch``, e.g. ``"hidden.0.*"``).
        g_gradient_multipliers: the same for the generator.
        data_dependent_init: before the first step, set the discriminator's weight-normalised
            layers from the first labeled and unlabeled batch so each unit starts at mean 0 and
            unit variance (Salimans & Kingma 2016; OpenAI's code does this).
        weights_from: warm start (tefla's ``weights_from``): when training starts from scratch
            (not when resuming), copy from this checkpoint or state-dict file the tensors whose
            names and shapes match (:func:`~lit_ssgan.checkpoint.load_matching_weights`).
            Replaces the data-dependent initialisation.
        on_nonfinite: when a loss is NaN or infinite: ``"stop"`` raises
            :class:`~lit_ssgan.errors.DivergenceError` naming the step and the loss term (no
            checkpoint is written after it, so the last good one stays); ``"skip"`` drops that
            batch's steps and counts it in ``train/skipped_steps``. Either way the batch's steps
            change nothing, decided on the device (:class:`~lit_ssgan.divergence.NonFiniteGuard`),
            and the host learns of it on the next logging step, at the epoch's end or before the
            next checkpoint.
        compile: compile the training step's two loss computations (the networks' forward and
            backward passes and the losses) with ``torch.compile``: ``true`` (its defaults), a mode
            (``"reduce-overhead"``: also CUDA graphs on a GPU; ``"default"``, ``"max-autotune"``), or
            its arguments (``{mode: ..., backend: ...}``); false or null: eager. The first batches
            take the compile time (a minute or more); see the README for when it pays.

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
        lr_scheduler_interval: SchedulerInterval = "epoch",
        resume_lr: float | None = None,
        classification: bool = True,
        validation_scores: list[str] | None = None,
        unlabeled_weight: float = 1.0,
        unlabeled_entropy_weight: float = 0.0,
        unlabeled_consistency_weight: float = 0.0,
        mean_teacher_decay: float | None = None,
        pseudo_label_threshold: float | None = None,
        d_label_smooth: float = 0.0,
        generator_target_prob: float = 1.0,
        generator_loss: losses.GeneratorLossKind = "feature_matching",
        feature_distance: losses.FeatureDistance = "squared",
        d_clip_val: float | None = None,
        g_clip_val: float | None = None,
        clip_algorithm: gradients.ClipAlgorithm = "norm",
        d_gradient_multipliers: dict[str, float] | None = None,
        g_gradient_multipliers: dict[str, float] | None = None,
        data_dependent_init: bool = False,
        weights_from: str | None = None,
        on_nonfinite: OnNonFinite = "stop",
        compile: CompileOption = None,
    ) -> None:
        super().__init__()
        # every option is checked here, or by the object below that takes it, for Python and the command alike
        check_pair(discriminator, generator, classification)
        check_choice("lr_scheduler_interval", lr_scheduler_interval, get_args(SchedulerInterval))
        check_choice("clip_algorithm", clip_algorithm, get_args(gradients.ClipAlgorithm))
        self.compile_options = compile_options(compile)
        for name, value in (("d_clip_val", d_clip_val), ("g_clip_val", g_clip_val), ("resume_lr", resume_lr)):
            check_positive(name, value, optional=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        # Under LightningCLI the hparams hold the networks' and optimizers' *config*; from Python
        # they hold the objects themselves, which a weights_only checkpoint cannot hold.
        for name in non_plain_hparams(dict(self.hparams)):
            del self.hparams[name]
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.generator = generator
        self.configure_losses()
        self.teacher = self.make_teacher()
        self.optimizer_factories = {
            "discriminator": (d_optimizer, d_lr_scheduler),
            "generator": (g_optimizer, g_lr_scheduler),
        }
        self.configure_gradients()
        self.guard = NonFiniteGuard(on_nonfinite)
        self._stepping = LossParts(torch.zeros(()), {})  # the loss of the optimizer step under way, for the guard
        self.noise_rng: torch.Generator | None = None  # latent codes; created on the device when fit starts
        self.data_init_pending = False  # data_dependent_init: set when fit starts, cleared once done
        self._compiled: dict[Network, Any] | None = None  # model.compile: the loss computations, when fit starts
        self.configure_metrics()

    def configure_losses(self) -> None:
        """The discriminator's and the generator's loss, with their weights (each checks its own)."""
        hp = self.hparams
        self.d_loss = losses.DiscriminatorLoss(
            hp["classification"],
            hp["unlabeled_weight"],
            hp["unlabeled_entropy_weight"],
            hp["unlabeled_consistency_weight"],
            hp["d_label_smooth"],
            hp["pseudo_label_threshold"],
        )
        self.g_loss = losses.GeneratorLoss(hp["generator_loss"], hp["feature_distance"], hp["generator_target_prob"])

    def make_teacher(self) -> ExponentialMovingAverage | None:
        """``mean_teacher_decay``: the moving average of the discriminator that gives the
        consistency term its target; None for the Π-model."""
        decay = self.hparams["mean_teacher_decay"]
        if decay is None:
            return None
        check_probability("mean_teacher_decay", decay)
        if not self.d_loss.needs_second_pass:
            raise ConfigError(
                "mean_teacher_decay needs unlabeled_consistency_weight > 0: the teacher gives that term its target"
            )
        return ExponentialMovingAverage(self.discriminator, decay).requires_grad_(False)

    def configure_gradients(self) -> None:
        """tefla's gradient multipliers, matched to each network's parameters (a pattern that
        matches nothing is refused)."""
        self.multipliers = {
            net: gradients.matched_multipliers(
                getattr(self, net),
                self.hparams[f"{net[0]}_gradient_multipliers"] or {},
                f"model.{net[0]}_gradient_multipliers",
            )
            for net in ("discriminator", "generator")
        }

    def configure_metrics(self) -> None:
        hp = self.hparams
        metrics = validation_scores(self.discriminator.num_classes, hp["validation_scores"], hp["classification"])
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def configure_callbacks(self) -> list[Callback]:
        # exact resume needs the RNG states in every checkpoint, a preempted run its last place, and
        # every run the record of its labeled examples (once each: fit then test reuse the Trainer)
        present = getattr(self.trainer, "callbacks", [])
        kinds = (RandomState, Preemption, LabeledExamples)
        return [kind() for kind in kinds if not any(isinstance(c, kind) for c in present)]

    def setup(self, stage: str) -> None:
        """Refuses, before any step, data the networks were not built for."""
        built_for, datamodule = self._data(), getattr(self.trainer, "datamodule", None)
        for name in ("image_shape", "num_classes"):
            ours, theirs = built_for[name], getattr(datamodule, name, None)
            if theirs is not None and (tuple(theirs) if name == "image_shape" else theirs) != ours:
                raise ConfigError(f"the data has {name} {theirs} but the discriminator was built for {ours}")
        if stage == "fit" and getattr(datamodule, "hparams", {}).get("batch_size") == 1:
            for net in ("discriminator", "generator"):
                if any(isinstance(m, BATCH_NORMS) for m in getattr(self, net).modules()):
                    raise ConfigError(f"data.batch_size 1: the {net}'s batch norm needs batches of 2 or more images")

    def _data(self) -> dict[str, Any]:
        """What the networks were built for, and the data module feeding them (if any)."""
        try:
            datamodule = getattr(self.trainer, "datamodule", None)
        except RuntimeError:  # not attached to a Trainer: load_from_checkpoint
            datamodule = None
        return {
            "datamodule": type(datamodule).__name__ if datamodule is not None else None,
            "image_shape": self.discriminator.image_shape,
            "num_classes": self.discriminator.num_classes,
            "class_names": getattr(datamodule, "class_names", None),
        }

    def make_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """The discriminator's and the generator's optimizers, from the configured factories."""
        (make_d, _), (make_g, _) = self.optimizer_factories.values()
        return make_d(self.discriminator.parameters()), make_g(self.generator.parameters())

    def configure_optimizers(self) -> Any:
        optimizers = self.make_optimizers()
        factories = [make for _, make in self.optimizer_factories.values()]
        schedulers = [make(opt) for make, opt in zip(factories, optimizers, strict=True) if make is not None]
        for scheduler in schedulers:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise ConfigError("ReduceLROnPlateau is not supported: the module steps schedulers without a metric")
            if isinstance(scheduler, RunLengthSchedule):
                scheduler.set_run_length(run_length(self.trainer, self.hparams["lr_scheduler_interval"]))
        return list(optimizers), schedulers

    def network_of(self, optimizer: torch.optim.Optimizer) -> Network:
        """Which network ``optimizer`` (one of ``trainer.optimizers``, as hooks receive it) steps."""
        d_opt, g_opt = self.trainer.optimizers
        if optimizer is d_opt:
            return "discriminator"
        if optimizer is g_opt:
            return "generator"
        raise ValueError("not one of this model's optimizers")

    def forward(self, x: Tensor) -> Tensor:
        """``(N, K)`` class logits (regression: ``(N,)`` values) of images ``(N, C, H, W)``."""
        return self.heads(self.discriminator(x).logits).predicted

    def heads(self, logits: Tensor) -> Heads:
        """The discriminator output's prediction head and real/fake logit (:func:`losses.heads`)."""
        return losses.heads(logits, self.hparams["classification"], self.discriminator.explicit_fake)

    # -- training -------------------------------------------------------------------------
    def training_step(self, batch: TrainingBatch, batch_idx: int) -> Tensor | None:
        """One discriminator step, then one generator step on an independent unlabeled batch.

        Nothing in it reads from the device unless it logs: a batch whose loss or gradients are not
        finite changes nothing (:class:`~lit_ssgan.divergence.NonFiniteGuard`, decided on the
        device), and the host learns of it at the next check.

        Returns:
            The discriminator's loss (tefla's t-loss, for the epoch line; NaN or infinite for a
            batch the guard dropped).
        """
        (x_lab, y_lab), (x_unl, _), (x_unl_g, _) = batch["labeled"], batch["unlabeled"], batch["unlabeled_g"]
        d_opt, g_opt = cast(list[LightningOptimizer], self.optimizers())
        if uses_cuda_graphs(self.compile_options):
            torch.compiler.cudagraph_mark_step_begin()  # this batch's graphs may overwrite the last batch's outputs
        self.guard.start_batch(f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})")
        log_now = self._logging_now()  # before the steps advance global_step
        if self.data_init_pending:
            self.init_from_data(x_lab, x_unl)
        with self._training(d_opt):
            d_loss, heads = self.discriminator_losses(x_lab, y_lab, x_unl)
            self._optimize(d_opt, d_loss)
        with self._training(g_opt):
            g_loss = self.generator_losses(x_unl_g)
            self._optimize(g_opt, g_loss, counted=False)
        if self.hparams["lr_scheduler_interval"] == "step":
            self._step_schedulers()
        if log_now:
            self.guard.check()
            self._log_training(d_loss, g_loss, heads, y_lab, d_opt, g_opt)
        return d_loss.total.detach()

    def discriminator_losses(self, x_lab: Tensor, y_lab: Tensor, x_unl: Tensor) -> tuple[LossParts, dict[str, Heads]]:
        """The discriminator's loss, from one forward over the labeled, unlabeled and generated
        (detached) images, and the unlabeled ones again, under other noise, for the consistency
        term (through the teacher, with ``mean_teacher_decay``, its average first brought up to D's
        current weights: at the first step, after the data-dependent initialisation, a copy); and the
        heads of each part (``labeled``, ``unlabeled``, ``fake``, ``unlabeled_again``)."""
        z = self.generator.sample_latent(len(x_unl), self.noise_rng)
        if self.teacher is not None:
            self.teacher.update_parameters(self.discriminator)
        losses = self._discriminator_losses if self._compiled is None else self._compiled["discriminator"]
        return cast(tuple[LossParts, dict[str, Heads]], losses(x_lab, y_lab, x_unl, z))

    def _discriminator_losses(
        self, x_lab: Tensor, y_lab: Tensor, x_unl: Tensor, z: Tensor
    ) -> tuple[LossParts, dict[str, Heads]]:
        with torch.no_grad(), frozen_weights(self.generator):
            x_fake = self.generator(z)
        images = {"labeled": x_lab, "unlabeled": x_unl, "fake": x_fake}
        if self.d_loss.needs_second_pass and self.teacher is None:
            images["unlabeled_again"] = x_unl
        with frozen_weights(self.discriminator):  # its weight norms computed together, for the pass
            logits = self.discriminator(torch.cat(list(images.values()))).logits
        parts = logits.split([len(x) for x in images.values()])
        heads = {name: self.heads(part) for name, part in zip(images, parts, strict=True)}
        if self.teacher is not None:
            heads["unlabeled_again"] = self.teacher_heads(x_unl)
        loss = self.d_loss(heads["labeled"], y_lab, heads["unlabeled"], heads["fake"], heads.get("unlabeled_again"))
        return loss, heads

    @torch.no_grad()
    def teacher_heads(self, x_unl: Tensor) -> Heads:
        """The teacher's heads on the unlabeled batch."""
        assert self.teacher is not None
        with frozen_weights(self.teacher):
            return self.heads(self.teacher(x_unl).logits)

    def generator_losses(self, x_unl_g: Tensor) -> LossParts:
        """The generator's loss on fresh samples: feature matching against the unlabeled batch
        ``x_unl_g`` (D's normalised weights computed once for its two passes), or D's P(real)."""
        z = self.generator.sample_latent(len(x_unl_g), self.noise_rng)
        losses = self._generator_losses if self._compiled is None else self._compiled["generator"]
        return cast(LossParts, losses(x_unl_g, z))

    def _generator_losses(self, x_unl_g: Tensor, z: Tensor) -> LossParts:
        with frozen_weights(self.generator):
            x_fake = self.generator(z)
        if not self.g_loss.matches_features:
            return self.g_loss(None, None, self.heads(self.discriminator(x_fake).logits).gan)
        with frozen_weights(self.discriminator):
            with torch.no_grad():  # the real side needs no backward pass
                real_features = self.discriminator(x_unl_g).features
            fake_features = self.discriminator(x_fake).features
        return self.g_loss(real_features, fake_features, None)

    def init_from_data(self, x_lab: Tensor, x_unl: Tensor) -> None:
        """``data_dependent_init``: D's weight-normalised layers set from the first batch, once."""
        init_weight_norm_from_data(self.discriminator, torch.cat([x_lab, x_unl]))
        self.data_init_pending = False

    def _optimize(self, opt: LightningOptimizer, loss: LossParts, counted: bool = True) -> None:
        """Backward and step (a step the guard voids in ``on_before_optimizer_step`` changes nothing)."""
        self._stepping = loss
        # under DDP, each network's gradients are averaged once, in on_before_optimizer_step
        with gradients.no_ddp_sync(self.trainer):
            self.manual_backward(loss.total)
        if counted:
            opt.step()
        else:
            with step_not_counted(opt):  # one global step per batch, not per optimizer step
                opt.step()

    @contextmanager
    def _training(self, opt: LightningOptimizer) -> Iterator[None]:
        """Only ``opt``'s network gets gradients; they are cleared after its step."""
        with self.toggled_optimizer(opt):
            yield
        opt.zero_grad(set_to_none=True)

    def _logging_now(self) -> bool:
        """Whether the logger will write this batch's values (Lightning's own rule): each
        ``self.log`` call costs ~0.3 ms however rarely it writes."""
        every: int = getattr(self.trainer, "log_every_n_steps", 0)
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def _log_training(
        self,
        d_loss: LossParts,
        g_loss: LossParts,
        heads: dict[str, Heads],
        labels: Tensor,
        d_opt: LightningOptimizer,
        g_opt: LightningOptimizer,
    ) -> None:
        predicted = heads["labeled"].predicted
        if self.hparams["classification"]:
            labeled = {"train/acc": (predicted.argmax(1) == labels).float().mean()}
        else:
            labeled = {"train/mae": (predicted - labels).abs().mean()}
        self.log_dict(
            {
                **{f"train/{name}": value for name, value in {**d_loss.terms, **g_loss.terms}.items()},
                **labeled,
                "train/d_real": torch.sigmoid(heads["unlabeled"].gan).mean(),
                "train/d_fake": torch.sigmoid(heads["fake"].gan).mean(),
                "train/d_lr": d_opt.param_groups[0]["lr"],
                "train/g_lr": g_opt.param_groups[0]["lr"],
                "train/skipped_steps": float(self.guard.skipped),
            },
            sync_dist=self.trainer.world_size > 1,
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Here the AMP scaler has already unscaled the gradients (not so in training_step).
        net = self.network_of(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        gradients.ddp_average(params, self.trainer)
        gradients.multiply(self.multipliers[net])
        clip_val, algorithm = self.hparams[f"{net[0]}_clip_val"], self.hparams["clip_algorithm"]
        if clip_val is not None and algorithm == "norm_per_tensor":
            gradients.clip_per_tensor(params, clip_val)
        elif clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=algorithm)
        loss, grads = self._stepping, [p.grad for p in params if p.grad is not None]
        void = self.guard.void(net, loss.total, loss.terms, grads, distributed=self.trainer.world_size > 1)
        apply_void(optimizer, void, params)

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        return schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []

    def _step_schedulers(self) -> None:
        for scheduler in self._schedulers():
            scheduler.step()  # never ReduceLROnPlateau: refused in configure_optimizers

    def on_train_epoch_end(self) -> None:
        self.guard.check()
        if self.hparams["lr_scheduler_interval"] == "epoch":
            self._step_schedulers()

    def on_fit_start(self) -> None:
        self.noise_rng = torch.Generator(device=self.device)  # each process its own latent codes
        self.noise_rng.manual_seed(int(torch.randint(0, 2**62, ()).item()) + self.global_rank)
        fresh, hp = self.trainer.ckpt_path is None, self.hparams
        if hp["weights_from"] and fresh:
            load_matching_weights(self, hp["weights_from"])
        # once, before the first step of a run from scratch (weights_from replaces it)
        self.data_init_pending = (
            hp["data_dependent_init"] and not hp["weights_from"] and fresh and self.global_step == 0
        )
        if self.compile_options is not None:  # discriminator_losses and generator_losses call these from now on
            self._compiled = {
                "discriminator": torch.compile(self._discriminator_losses, **self.compile_options),
                "generator": torch.compile(self._generator_losses, **self.compile_options),
            }

    def on_train_start(self) -> None:
        # A checkpoint saved after an epoch's last batch, but before the epoch's end, resumes into
        # the next epoch without running that end: catch its scheduler step up (exact resume).
        if self.hparams["lr_scheduler_interval"] == "epoch":
            for scheduler in self._schedulers():
                while scheduler.last_epoch < self.current_epoch:
                    scheduler.step()
        if self.hparams["resume_lr"] is not None and self.trainer.ckpt_path is not None:
            for optimizer in self.trainer.optimizers:
                resume_at(self.hparams["resume_lr"], optimizer, self._schedulers())

    def on_train_end(self) -> None:
        self.guard.check()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.check()
        check_finite_weights(self.state_dict(), self.global_step)
        checkpoint["skipped_steps"] = self.guard.skipped
        checkpoint["data"] = self._data()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_fits(checkpoint, self, self._data())
        self.guard.skipped = checkpoint.get("skipped_steps", 0)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.val_metrics.update(*self._evaluated(batch))
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Returns the predictions (for reports such as the confusion matrix)."""
        predicted, target = self._evaluated(batch)
        self.test_metrics.update(predicted, target)
        self.log_dict(self.test_metrics)
        return predicted

    def _evaluated(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        return self(x), y if self.hparams["classification"] else y.float()

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``(N, K)`` class probabilities (regression: ``(N,)`` values)."""
        return self(batch[0]).softmax(dim=1) if self.hparams["classification"] else self(batch[0])
