"""The LightningModule: one discriminator step and one generator step per batch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, cast

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_ssgan import gradients, lr_schedulers, random_state, resuming
from lit_ssgan.checkpoint import check_checkpoint_fits, load_matching_weights
from lit_ssgan.compiling import uses_cuda_graphs
from lit_ssgan.data.datasets import Batch
from lit_ssgan.data.loaders import TRAINING_STREAMS
from lit_ssgan.divergence import NonFiniteGuard, apply_void, check_finite_weights
from lit_ssgan.errors import ConfigError
from lit_ssgan.evaluation import DiscriminatorEvaluation
from lit_ssgan.gradients import GradientPolicy
from lit_ssgan.internals import step_not_counted
from lit_ssgan.losses import DiscriminatorLoss, FeatureMatching, GeneratorLoss, Heads, LossParts
from lit_ssgan.metrics import training_logs
from lit_ssgan.models import Discriminator, Generator
from lit_ssgan.models.base import built_for, check_data, check_pair
from lit_ssgan.models.layers import frozen_weights, init_weight_norm_from_data
from lit_ssgan.parts import built, keep_plain
from lit_ssgan.precision import warn_if_bf16_is_slow
from lit_ssgan.protocols import GANModule, Network
from lit_ssgan.training import Training, upgraded_checkpoint

#: the data module's training batch: ``labeled``, ``unlabeled`` (for D) and ``unlabeled_g`` (for G), of
#: those the module reads (:attr:`SemiSupervisedGAN.training_streams`)
TrainingBatch = dict[str, Batch]


class SemiSupervisedGAN(DiscriminatorEvaluation):
    """Semi-supervised GAN training (Salimans et al. 2016): the discriminator's K class logits
    classify labeled data and, through ``gan_logits``, tell real from generated. Built from parts,
    each chosen by ``class_path`` in a config (or passed as an object from Python).

    Args:
        discriminator: gives ``(logits, features)``; its class logits are the classifier. Its
            ``regression`` sets the task: a value and a real/fake logit, the label read as a number.
        generator: maps latent codes to images in [0, 1].
        d_optimizer: builds the discriminator's optimizer from its parameters (the paper: Adam,
            lr 3e-3, betas (0.5, 0.999)).
        g_optimizer: builds the generator's optimizer from its parameters.
        d_lr_scheduler: optional LR scheduler for the discriminator's optimizer.
        g_lr_scheduler: optional LR scheduler for the generator's optimizer.
        d_loss: the discriminator's loss and its weights (default :class:`DiscriminatorLoss`).
        g_loss: the generator's loss (default :class:`~lit_ssgan.losses.FeatureMatching`).
        d_gradients: the discriminator's gradient multipliers and clipping (default: none).
        g_gradients: the generator's.
        validation_scores: names of the scores logged as ``val/<name>`` and ``test/<name>``
            (:func:`~lit_ssgan.metrics.validation_scores`).
        training: the run's plain options (:class:`~lit_ssgan.training.Training`).

    Checkpoints hold plain hyperparameters (a part as its class and arguments): ``load_from_checkpoint(path)``
    rebuilds a CLI run's model; from Python, pass the networks again (``discriminator=D, generator=G``).
    """

    def __init__(
        self,
        discriminator: Discriminator,
        generator: Generator,
        d_optimizer: OptimizerCallable = torch.optim.Adam,
        g_optimizer: OptimizerCallable = torch.optim.Adam,
        d_lr_scheduler: LRSchedulerCallable | None = None,
        g_lr_scheduler: LRSchedulerCallable | None = None,
        d_loss: DiscriminatorLoss | None = None,
        g_loss: GeneratorLoss | None = None,
        d_gradients: GradientPolicy | None = None,
        g_gradients: GradientPolicy | None = None,
        validation_scores: list[str] | None = None,
        training: Training | None = None,
    ) -> None:
        super().__init__()
        check_pair(discriminator, generator)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        keep_plain(self.hparams)
        self.automatic_optimization = False
        self.discriminator, self.generator = discriminator, generator
        self.d_loss = (built(d_loss, DiscriminatorLoss, "d_loss") or DiscriminatorLoss()).for_task(self.classification)
        self.g_loss = built(g_loss, GeneratorLoss, "g_loss") or FeatureMatching()
        policies = {"discriminator": ("d_gradients", d_gradients), "generator": ("g_gradients", g_gradients)}
        self.gradients = {
            net: (built(policy, GradientPolicy, option) or GradientPolicy()).bind(getattr(self, net), f"model.{option}")
            for net, (option, policy) in policies.items()
        }
        self.training_options = built(training, Training, "training") or Training()
        self.compile_options = self.training_options.compile_options
        consistency = self.d_loss.consistency
        self.teacher = consistency.make_teacher(discriminator) if consistency is not None else None
        self.optimizer_factories = {
            "discriminator": (d_optimizer, d_lr_scheduler),
            "generator": (g_optimizer, g_lr_scheduler),
        }
        # without d_loss_fake nothing the generator does reaches D's loss: the labels-only twin trains D alone
        self.networks: tuple[Network, ...] = (
            ("discriminator", "generator") if self.d_loss.uses_generated else ("discriminator",)
        )
        # the streams of the training batch the step reads; the data module loads only these (the twin: labeled)
        d_loss = self.d_loss  # the fakes are as many as the unlabeled images
        reads_unlabeled = d_loss.uses_unlabeled or d_loss.uses_generated or d_loss.consistency is not None
        self.training_streams: tuple[str, ...] = tuple(
            name
            for name, read in zip(TRAINING_STREAMS, (True, reads_unlabeled, "generator" in self.networks), strict=True)
            if read
        )
        self.guard = NonFiniteGuard(self.training_options.on_nonfinite, self.networks)
        self._stepping = LossParts(torch.zeros(()), {})  # the loss of the optimizer step under way, for the guard
        self.noise_rng: torch.Generator | None = None  # latent codes; created on the device when fit starts
        self.data_init_pending = False  # data_dependent_init: set when fit starts, cleared once done
        self._compiled: dict[Network, Any] | None = None  # training.compile: the loss computations, when fit starts
        self._rng_states: dict[str, Tensor] | None = None  # from the checkpoint, restored when training starts
        self.configure_metrics(validation_scores)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's, for checkpoints of lit_ssgan before 0.2.0 too (their options mapped to parts)."""
        return super().load_from_checkpoint(upgraded_checkpoint(checkpoint_path), *args, **kwargs)

    def setup(self, stage: str) -> None:
        warn_if_bf16_is_slow(self.trainer)
        datamodule = getattr(self.trainer, "datamodule", None)
        check_data(self.discriminator, self.generator, datamodule, stage)
        batch_size = getattr(datamodule, "hparams", {}).get("batch_size")
        if stage == "fit" and batch_size == 1 and getattr(self.g_loss, "pull_away_weight", 0):
            raise ConfigError(
                "data.batch_size 1: model.g_loss's pull_away_weight compares pairs of generated images, as many a "
                "step as the batch's; it needs batches of 2 or more"
            )

    def _data(self) -> dict[str, Any]:
        try:
            datamodule = getattr(self.trainer, "datamodule", None)
        except RuntimeError:  # not attached to a Trainer: load_from_checkpoint
            datamodule = None
        return built_for(self.discriminator, datamodule)

    def make_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """The discriminator's and the generator's optimizers, from the configured factories."""
        (make_d, _), (make_g, _) = self.optimizer_factories.values()
        return make_d(self.discriminator.parameters()), make_g(self.generator.parameters())

    def configure_optimizers(self) -> Any:
        optimizers = self.make_optimizers()
        makers = [make for _, make in self.optimizer_factories.values()]
        schedulers = [make(opt) for make, opt in zip(makers, optimizers, strict=True) if make is not None]
        lr_schedulers.prepare(schedulers, self.trainer, self.training_options.lr_scheduler_interval)
        return list(optimizers), schedulers

    def network_of(self, optimizer: torch.optim.Optimizer) -> Network:
        """Which network ``optimizer`` (one of ``trainer.optimizers``, as hooks receive it) steps."""
        nets: tuple[Network, ...] = ("discriminator", "generator")
        return next(net for net, opt in zip(nets, self.trainer.optimizers, strict=True) if opt is optimizer)

    def training_step(self, batch: TrainingBatch, batch_idx: int) -> Tensor | None:
        """One discriminator step, then one generator step on an independent unlabeled batch (none when
        D's loss has no term on generated images: see :attr:`networks`); no read from the device unless it
        logs (:class:`~lit_ssgan.divergence.NonFiniteGuard` decides there). Returns the discriminator's
        loss (tefla's t-loss; not finite for a batch the guard dropped)."""
        (x_lab, y_lab), x_unl = batch["labeled"], batch["unlabeled"][0] if "unlabeled" in batch else None
        d_opt, g_opt = cast(list[LightningOptimizer], self.optimizers())
        if uses_cuda_graphs(self.compile_options):
            torch.compiler.cudagraph_mark_step_begin()  # this batch's graphs may overwrite the last batch's outputs
        self.guard.start_batch(f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})")
        log_now = self._logging_now()  # before the steps advance global_step
        if self.data_init_pending:
            init_weight_norm_from_data(self.discriminator, x_lab if x_unl is None else torch.cat([x_lab, x_unl]))
            self.data_init_pending = False
        with self._training(d_opt):
            d_loss, heads = self.discriminator_losses(x_lab, y_lab, x_unl)
            self._optimize(d_opt, d_loss)
        g_loss = None
        if "generator" in self.networks:
            with self._training(g_opt):
                g_loss = self.generator_losses(batch["unlabeled_g"][0])
                self._optimize(g_opt, g_loss, counted=False)
        if self.training_options.lr_scheduler_interval == "step":
            lr_schedulers.step(self._schedulers())
        if log_now:
            self.guard.check()
            rates = {net[0]: opt.param_groups[0]["lr"] for net, opt in zip(self.networks, (d_opt, g_opt), strict=False)}
            logs = training_logs(d_loss, g_loss, heads, y_lab, self.classification, rates, self.guard.skipped)
            self.log_dict(logs, sync_dist=self.trainer.world_size > 1)
        return d_loss.total.detach()

    def discriminator_losses(
        self, x_lab: Tensor, y_lab: Tensor, x_unl: Tensor | None
    ) -> tuple[LossParts, dict[str, Heads]]:
        """D's loss from one forward over the labeled, unlabeled and generated (detached) images, and the
        unlabeled again for the consistency term (through D under other noise, or the teacher, first
        brought up to D's weights); and the heads of ``labeled``, ``unlabeled``, ``fake``, ``unlabeled_again``.
        Only the images a term of ``d_loss`` needs pass (the labels-only twin: ``labeled`` alone; ``x_unl``
        is None where no term reads it: :attr:`training_streams`)."""
        z = None
        if self.d_loss.uses_generated and x_unl is not None:  # as many fakes as unlabeled images
            z = self.generator.sample_latent(len(x_unl), self.noise_rng)
        if self.teacher is not None:
            self.teacher.update_parameters(self.discriminator)
        compute = self._discriminator_losses if self._compiled is None else self._compiled["discriminator"]
        return cast(tuple[LossParts, dict[str, Heads]], compute(x_lab, y_lab, x_unl, z))

    def _discriminator_losses(
        self, x_lab: Tensor, y_lab: Tensor, x_unl: Tensor | None, z: Tensor | None
    ) -> tuple[LossParts, dict[str, Heads]]:
        images = {"labeled": x_lab}
        if self.d_loss.uses_unlabeled and x_unl is not None:
            images["unlabeled"] = x_unl
        if z is not None:
            with torch.no_grad(), frozen_weights(self.generator):
                images["fake"] = self.generator(z)
        consistency = self.d_loss.consistency
        if consistency is not None and self.d_loss.needs_second_pass and x_unl is not None:
            images["unlabeled_again"] = consistency.second_look(x_unl)  # the Π-model's strong view
        with frozen_weights(self.discriminator):  # its weight norms computed together, for the pass
            logits = self.discriminator(torch.cat(list(images.values()))).logits
        parts = logits.split([len(x) for x in images.values()])
        heads = {name: self.heads(part) for name, part in zip(images, parts, strict=True)}
        if self.teacher is not None and x_unl is not None:
            with torch.no_grad(), frozen_weights(self.teacher):
                heads["unlabeled_again"] = self.heads(self.teacher(x_unl).logits)
        loss = self.d_loss(
            heads["labeled"], y_lab, heads.get("unlabeled"), heads.get("fake"), heads.get("unlabeled_again")
        )
        return loss, heads

    def generator_losses(self, x_unl_g: Tensor) -> LossParts:
        """The generator's loss on fresh samples: feature matching against the unlabeled batch
        ``x_unl_g`` (D's normalised weights computed once for its two passes), or D's P(real)."""
        z = self.generator.sample_latent(len(x_unl_g), self.noise_rng)
        compute = self._generator_losses if self._compiled is None else self._compiled["generator"]
        return cast(LossParts, compute(x_unl_g, z))

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

    def _optimize(self, opt: LightningOptimizer, loss: LossParts, counted: bool = True) -> None:
        """Backward and step (a step the guard voids in ``on_before_optimizer_step`` changes nothing)."""
        self._stepping = loss
        # under DDP, each network's gradients are averaged once, in on_before_optimizer_step
        with gradients.no_ddp_sync(self.trainer):
            self.manual_backward(loss.total)
        with step_not_counted(opt) if not counted else nullcontext():  # one global step per batch
            opt.step()

    @contextmanager
    def _training(self, opt: LightningOptimizer) -> Iterator[None]:
        """Only ``opt``'s network gets gradients; they are cleared after its step."""
        with self.toggled_optimizer(opt):
            yield
        opt.zero_grad(set_to_none=True)

    def _logging_now(self) -> bool:
        """Whether the logger writes this batch's values (Lightning's rule): ``self.log`` is not free."""
        every: int = getattr(self.trainer, "log_every_n_steps", 0)
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Here the AMP scaler has already unscaled the gradients (not so in training_step).
        net = self.network_of(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        gradients.ddp_average(params, self.trainer)
        self.gradients[net].apply(self, optimizer, params)
        loss, grads = self._stepping, [p.grad for p in params if p.grad is not None]
        void = self.guard.void(net, loss.total, loss.terms, grads, distributed=self.trainer.world_size > 1)
        apply_void(optimizer, void, params)

    def _schedulers(self) -> list[Any]:
        """The schedulers of the networks that train (:attr:`networks`): a network that never steps
        keeps its rate, as its optimizer's state."""
        schedulers = self.lr_schedulers()
        listed = schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []
        training = [
            opt.optimizer
            for opt, _ in zip(cast(list[LightningOptimizer], self.optimizers()), self.networks, strict=False)
        ]
        return [scheduler for scheduler in listed if any(scheduler.optimizer is opt for opt in training)]

    def on_train_epoch_end(self) -> None:
        self.guard.check()
        if self.training_options.lr_scheduler_interval == "epoch":
            lr_schedulers.step(self._schedulers())

    def on_fit_start(self) -> None:
        self.noise_rng = torch.Generator(device=self.device)  # each process its own latent codes
        self.noise_rng.manual_seed(int(torch.randint(0, 2**62, ()).item()) + self.global_rank)
        fresh, options = self.trainer.ckpt_path is None, self.training_options
        weights = options.weights_file() if fresh else None  # checked here: a resume does not read it
        if weights is not None:
            load_matching_weights(self, weights)
        # once, before the first step of a run from scratch (weights_from replaces it)
        self.data_init_pending = (
            options.data_dependent_init and not options.weights_from and fresh and self.global_step == 0
        )
        if self.compile_options is not None:  # discriminator_losses and generator_losses call these from now on
            compute: dict[Network, Any] = {
                "discriminator": self._discriminator_losses,
                "generator": self._generator_losses,
            }
            self._compiled = {net: torch.compile(fn, **self.compile_options) for net, fn in compute.items()}

    def on_train_start(self) -> None:
        if self._rng_states is not None and self.noise_rng is not None:  # exact resume: after the sanity check
            random_state.restore(self._rng_states, self.noise_rng, self.trainer)
            self._rng_states = None
        resuming.resume_schedules(self.trainer, self._schedulers(), self.training_options)

    def on_train_end(self) -> None:
        self.guard.check()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.check()
        check_finite_weights(self.state_dict(), self.global_step)
        checkpoint["skipped_steps"] = self.guard.skipped
        checkpoint["data"] = self._data()
        if self.noise_rng is not None:  # training: the states a resume continues from
            checkpoint["rng_states"] = random_state.captured(self.trainer, self.noise_rng, self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_fits(checkpoint, self, self._data())
        resuming.on_load(checkpoint, self._trainer)  # fit: a finished run stops; an interrupted validation reruns
        self.guard.skipped = checkpoint.get("skipped_steps", 0)
        self._rng_states = checkpoint.get("rng_states")


if TYPE_CHECKING:  # the module is what the callbacks take it for
    _fits: type[GANModule] = SemiSupervisedGAN
