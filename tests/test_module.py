"""The LightningModule through the Python Trainer API: the D and G steps, clipping, schedulers,
step counting, evaluation, and refusals."""

import csv
import inspect
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor

import lit_ssgan.module
from lit_ssgan import DigitsDataModule, SemiSupervisedGAN, losses
from lit_ssgan.consistency import MeanTeacher, PiModel
from lit_ssgan.errors import ConfigError
from lit_ssgan.gradients import GradientPolicy
from lit_ssgan.models import MLPDiscriminator, MLPGenerator
from lit_ssgan.models.base import evaluating
from lit_ssgan.parts import config_of
from lit_ssgan.training import Training
from tests.helpers import StepRecorder, make_model, make_trainer


class BatchStreams(Callback):
    """The streams of each training batch the step receives."""

    def __init__(self) -> None:
        self.streams: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.streams.append(sorted(batch))


def test_each_step_changes_only_its_own_network(tmp_path):
    recorder, streams = StepRecorder(), BatchStreams()
    make_trainer(tmp_path, max_steps=2, callbacks=[recorder, streams]).fit(make_model(), DigitsDataModule())
    assert streams.streams == [["labeled", "unlabeled", "unlabeled_g"]] * 2  # G's batch apart from D's
    names = [name for name, *_ in recorder.steps]
    assert names == ["discriminator", "generator"] * 2  # one D step then one G step per batch
    for name, before, after, grads in recorder.steps:
        other = "generator" if name == "discriminator" else "discriminator"
        assert all(torch.equal(a, b) for a, b in zip(before[other], after[other], strict=True)), other
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after[name], strict=True)), name
        # the frozen network got no gradients at all
        assert all(g is None for g in grads[other])
        assert all(g is not None for g in grads[name])


@pytest.mark.parametrize(
    "d_loss, d_sees",
    [
        (losses.DiscriminatorLoss(unlabeled_weight=0), ["labeled"]),  # the labels-only twin of lit-ssgan draws
        (losses.DiscriminatorLoss(unlabeled_weight=0, unlabeled_entropy_weight=1.0), ["labeled", "unlabeled"]),
    ],
)
def test_without_d_loss_fake_the_generator_does_not_train_and_d_sees_only_what_its_terms_need(tmp_path, d_loss, d_sees):
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    schedules = {
        "d_lr_scheduler": step_lr,
        "g_lr_scheduler": step_lr,
        "training": Training(lr_scheduler_interval="step"),
    }
    model, recorder, streams = make_model(d_loss=d_loss, **schedules), StepRecorder(), BatchStreams()
    d_inputs: list[int] = []
    model.discriminator.register_forward_pre_hook(
        lambda _, args: d_inputs.append(len(args[0])) if model.training else None
    )
    logger = CSVLogger(tmp_path)
    trainer = make_trainer(tmp_path, max_steps=4, logger=logger, log_every_n_steps=1, callbacks=[recorder, streams])
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer.fit(model, DigitsDataModule(batch_size=50))
    assert [name for name, *_ in recorder.steps] == ["discriminator"] * 4
    first, last = recorder.steps[0][1]["generator"], recorder.steps[-1][2]["generator"]
    assert all(torch.equal(a, b) for a, b in zip(first, last, strict=True))  # G as initialised
    assert d_inputs == [50 * len(d_sees)] * 4  # one pass a step, of the images the terms need
    assert streams.streams == [d_sees] * 4  # and no batch loaded for nothing
    d_opt, g_opt = trainer.optimizers
    assert d_opt.param_groups[0]["lr"] == pytest.approx(3e-3 * 0.5**4) and g_opt.param_groups[0]["lr"] == 3e-3
    assert not [w for w in said if "lr_scheduler.step()" in str(w.message)]  # G's scheduler is not stepped
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = {name for row in csv.DictReader(f) for name, value in row.items() if value}
    assert {"train/d_loss_class", "train/acc", "train/d_lr"} <= logged
    assert not logged & {"train/g_loss", "train/g_lr", "train/d_loss_fake", "train/d_loss_real", "train/d_fake"}
    assert ("train/d_real" in logged) == ("unlabeled" in d_sees)


@pytest.mark.parametrize("algorithm, clip", [("value", 1e-4), ("norm", 1e-3)])
def test_gradient_clipping_per_network(tmp_path, algorithm, clip):
    model = make_model(d_gradients=GradientPolicy(clip, algorithm), g_gradients=GradientPolicy(clip * 10, algorithm))
    recorder = StepRecorder()
    make_trainer(tmp_path, max_steps=2, callbacks=[recorder]).fit(model, DigitsDataModule())
    assert len(recorder.steps) == 4
    for name, _, _, grads in recorder.steps:
        limit = clip if name == "discriminator" else clip * 10
        g = torch.cat([x.flatten() for x in grads[name]])
        size = g.abs().max() if algorithm == "value" else g.norm()
        assert size <= limit * 1.001


def test_gradient_clipping_under_bf16_mixed_precision(tmp_path):
    # bf16 autocast keeps fp32 weights and gradients: the clip must hold on them exactly as in fp32
    model, recorder = make_model(d_gradients=GradientPolicy(1e-3), g_gradients=GradientPolicy(1e-2)), StepRecorder()
    make_trainer(tmp_path, max_steps=2, precision="bf16-mixed", callbacks=[recorder]).fit(model, DigitsDataModule())
    assert [name for name, *_ in recorder.steps] == ["discriminator", "generator"] * 2
    for name, _, _, grads in recorder.steps:
        g = torch.cat([x.flatten() for x in grads[name]])
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
        assert g.norm() <= (1e-3 if name == "discriminator" else 1e-2) * 1.001, name


@pytest.mark.parametrize("interval, steps, expected_halvings", [("epoch", 6, 2), ("step", 5, 5)])
def test_lr_schedulers_are_stepped_by_the_module(tmp_path, interval, steps, expected_halvings):
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = make_model(
        d_lr_scheduler=step_lr, g_lr_scheduler=step_lr, training=Training(lr_scheduler_interval=interval)
    )
    make_trainer(tmp_path, max_steps=steps).fit(model, DigitsDataModule(batches_per_epoch=3))
    for opt in model.trainer.optimizers:
        assert opt.param_groups[0]["lr"] == pytest.approx(3e-3 * 0.5**expected_halvings)


def test_fit_test_predict(tmp_path):
    model, dm = make_model(), DigitsDataModule()
    trainer = make_trainer(tmp_path, max_epochs=1, max_steps=-1)
    trainer.fit(model, dm)
    (results,) = trainer.test(model, datamodule=dm, verbose=False)
    assert results["test/acc"] + results["test/error"] == pytest.approx(1.0)
    probs = torch.cat(trainer.predict(model, datamodule=dm))
    assert probs.shape == (500, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(500))


def test_explicit_fake_output_is_trained_as_the_fake_class_and_never_predicted(tmp_path):
    discriminator = MLPDiscriminator(10, (1, 8, 8), hidden=(32,), explicit_fake=True)
    model = SemiSupervisedGAN(
        discriminator,
        MLPGenerator((1, 8, 8), hidden=(32,)),
        d_optimizer=partial(torch.optim.SGD, lr=0.1),
        g_loss=losses.SigmoidKL(target_prob=0.9),
        d_loss=losses.DiscriminatorLoss(d_label_smooth=0.1),
    )
    fake_row = discriminator.classifier.v[10].detach().clone()
    class_rows = discriminator.classifier.v[:10].detach().clone()
    trainer = make_trainer(tmp_path, max_steps=3)
    trainer.fit(model, DigitsDataModule())
    # the (K+1)-th output is trained (by the real/fake terms: no label names it)
    assert not torch.equal(discriminator.classifier.v[10], fake_row)
    assert not torch.equal(discriminator.classifier.v[:10], class_rows)
    # P(real) uses it: logsumexp of the K class logits minus the fake logit
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    logits = discriminator(x).logits
    torch.testing.assert_close(losses.gan_logits(logits, True), logits[:, :10].logsumexp(1) - logits[:, 10])
    # and predictions are over the K real classes only
    probs = torch.cat(trainer.predict(model, datamodule=DigitsDataModule()))
    assert probs.shape == (500, 10)
    with torch.no_grad():
        sample = torch.rand(3, 1, 8, 8)
        torch.testing.assert_close(model.predict_step((sample,), 0), discriminator(sample).logits[:, :10].softmax(1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (lambda: {"d_loss": losses.DiscriminatorLoss(d_label_smooth=1.5)}, "d_label_smooth"),
        (lambda: {"g_loss": losses.SigmoidKL(target_prob=1.01)}, "target_prob"),
        (lambda: {"d_gradients": GradientPolicy(clip_val=0.0)}, "clip_val"),
        # a misspelled choice is refused by name, from Python as from the command line
        (lambda: {"g_loss": losses.FeatureMatching("L2")}, "distance must be one of 'absolute', 'squared'"),
        (lambda: {"training": Training(lr_scheduler_interval="Step")}, "lr_scheduler_interval must be one of"),
        (lambda: {"training": Training(on_nonfinite="Stop")}, "on_nonfinite must be one of 'stop', 'skip'; got 'Stop'"),
        (lambda: {"training": Training(compile="fast")}, "compile must be one of"),
        (
            lambda: {"d_gradients": GradientPolicy(clip_algorithm="Norm")},
            "clip_algorithm must be one of 'norm', 'value'",
        ),
        (lambda: {"g_loss": losses.DiscriminatorLoss()}, "g_loss must be a GeneratorLoss"),
        (lambda: {"training": {"class_path": "os.system"}}, "Training"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, match):
    with pytest.raises((ConfigError, TypeError), match=match):
        make_model(**kwargs())


def test_data_dependent_init_runs_once_even_when_the_first_batch_is_skipped(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(lit_ssgan.module, "init_weight_norm_from_data", lambda net, x: calls.append(len(x)))

    class NonFiniteFirst(losses.DiscriminatorLoss):
        seen = 0

        def forward(self, *args, **kwargs):
            parts, NonFiniteFirst.seen = super().forward(*args, **kwargs), NonFiniteFirst.seen + 1
            return parts._replace(total=parts.total * float("nan")) if NonFiniteFirst.seen == 1 else parts

    model = make_model(training=Training(data_dependent_init=True, on_nonfinite="skip"))
    model.d_loss = NonFiniteFirst()
    with pytest.warns(UserWarning, match="skipped step 0"):
        make_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule())
    assert model.guard.skipped == 1 and calls == [100]  # once, on the first batch (50 labeled + 50 unlabeled)


def test_mismatched_networks_and_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="image_shape"):
        SemiSupervisedGAN(MLPDiscriminator(10, (1, 8, 8)), MLPGenerator((1, 28, 28)))
    model = SemiSupervisedGAN(MLPDiscriminator(10, (1, 28, 28)), MLPGenerator((1, 28, 28)))
    with pytest.raises(ValueError, match=r"the data has image_shape \(1, 8, 8\)"):
        make_trainer(tmp_path).fit(model, DigitsDataModule())
    model = SemiSupervisedGAN(MLPDiscriminator(7, (1, 8, 8)), MLPGenerator((1, 8, 8)))
    with pytest.raises(ValueError, match="the data has num_classes 10"):
        make_trainer(tmp_path).fit(model, DigitsDataModule())


def regression_model(**kwargs) -> SemiSupervisedGAN:
    return SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=(64, 32), regression=True),
        MLPGenerator((1, 8, 8), hidden=(32,)),
        d_optimizer=partial(torch.optim.Adam, lr=3e-3, betas=(0.5, 0.999)),
        **kwargs,
    )


def test_regression_learns_the_grade_and_reports_mae_rmse_and_kappa(tmp_path):
    model, dm = regression_model(), DigitsDataModule()
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=6)
    trainer.fit(model, dm)
    assert model.discriminator.classifier.v.shape[0] == 2  # a value and a real/fake logit
    metrics = trainer.callback_metrics
    assert {"val/mae", "val/rmse", "val/kappa"} <= set(metrics)
    assert metrics["val/rmse"] >= metrics["val/mae"] > 0
    assert metrics["val/mae"] < 2.0  # far better than guessing the mean grade (MAE 2.5)
    values = torch.cat(trainer.predict(model, datamodule=dm))
    assert values.shape == (500,) and values.dtype == torch.float32
    (tested,) = trainer.test(model, datamodule=dm, verbose=False)
    assert set(tested) == {"test/mae", "test/rmse", "test/kappa"}


def test_regression_needs_regression_scores():
    with pytest.raises(ValueError, match=r"model.validation_scores: 'acc' is not a score for regression"):
        regression_model(validation_scores=["mae", "acc"])


def test_validation_scores_from_the_config_are_logged_for_val_and_test(tmp_path):
    model, dm = make_model(validation_scores=["acc", "kappa", "f1", "auroc"]), DigitsDataModule()
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=1)
    trainer.fit(model, dm)
    assert {"val/acc", "val/kappa", "val/f1", "val/auroc"} <= set(trainer.callback_metrics)
    (tested,) = trainer.test(model, datamodule=dm, verbose=False)
    assert set(tested) == {"test/acc", "test/kappa", "test/f1", "test/auroc"}
    with pytest.raises(ValueError, match=r"'recall' is not a score for classification; choose from acc, error"):
        make_model(validation_scores=["recall"])


def test_a_checkpoint_can_monitor_any_validation_score(tmp_path):
    monitor = ModelCheckpoint(dirpath=tmp_path, monitor="val/kappa", mode="max", filename="{epoch}-{val/kappa:.3f}")
    model = make_model(validation_scores=["kappa"])
    make_trainer(tmp_path, max_steps=-1, max_epochs=2, callbacks=[monitor], enable_checkpointing=True).fit(
        model, DigitsDataModule(batches_per_epoch=3)
    )
    assert monitor.best_model_score is not None and "kappa" in monitor.best_model_path


def unlabeled_entropy_after(tmp_path, weight: float) -> tuple[float, list[float]]:
    """The mean conditional entropy of D's predictions on the unlabeled digits after 20 seeded
    batches with ``unlabeled_entropy_weight=weight``, and the logged ``train/d_entropy``."""
    torch.manual_seed(0)
    model, dm, logger = (
        make_model(d_loss=losses.DiscriminatorLoss(unlabeled_entropy_weight=weight)),
        DigitsDataModule(),
        CSVLogger(tmp_path / str(weight)),
    )
    make_trainer(tmp_path, max_steps=20, logger=logger, log_every_n_steps=1).fit(model, dm)
    x, _ = dm.unlabeled.__getitems__(range(len(dm.unlabeled)))
    with torch.no_grad(), evaluating(model):
        entropy = losses.conditional_entropy(model(x)).item()
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = [float(row["train/d_entropy"]) for row in csv.DictReader(f) if row.get("train/d_entropy")]
    return entropy, logged


def test_the_conditional_entropy_term_makes_the_classifier_commit_on_unlabeled_data(tmp_path):
    without, logged = unlabeled_entropy_after(tmp_path, 0.0)
    assert logged == []  # weight 0: the term is left out
    with_term, logged = unlabeled_entropy_after(tmp_path, 1.0)
    assert len(logged) == 20 and all(value > 0 for value in logged)
    # minimised, not maximised: 1.46 nats against 1.91 (log 10 = 2.30 is undecided; 2.17 with the sign flipped)
    assert with_term < 0.85 * without
    with pytest.raises(ValueError, match="unlabeled_entropy_weight needs classification"):
        regression_model(d_loss=losses.DiscriminatorLoss(unlabeled_entropy_weight=0.1))


def test_the_consistency_term_pulls_two_noisy_passes_together(tmp_path):
    def trained(weight: float, noise: float, strong_cutout: float = 0.0) -> tuple[Tensor, list[float]]:
        torch.manual_seed(0)
        logger = CSVLogger(tmp_path / f"{weight}-{noise}-{strong_cutout}")
        model = SemiSupervisedGAN(
            MLPDiscriminator(10, (1, 8, 8), hidden=(64, 32), input_noise=noise, hidden_noise=noise),
            MLPGenerator((1, 8, 8), hidden=(32,)),
            d_loss=losses.DiscriminatorLoss(
                consistency=PiModel(weight, strong_cutout=strong_cutout) if weight else None
            ),
        )
        make_trainer(tmp_path, max_steps=3, logger=logger, log_every_n_steps=1).fit(model, DigitsDataModule())
        with open(Path(logger.log_dir) / "metrics.csv") as f:
            logged = [float(row["train/d_consistency"]) for row in csv.DictReader(f) if row.get("train/d_consistency")]
        return model.discriminator.classifier.v.detach().clone(), logged

    # without noise both passes agree: the term is 0 and training is the same as without it
    without, _ = trained(0.0, 0.0)
    quiet, logged = trained(10.0, 0.0)
    torch.testing.assert_close(quiet, without)
    assert logged == [0.0, 0.0, 0.0]
    # with noise the passes differ, and the term changes what D learns
    noisy, logged = trained(10.0, 0.3)
    assert len(logged) == 3 and all(value > 0 for value in logged)
    assert not torch.allclose(noisy, trained(0.0, 0.3)[0])
    # without noise, the strong view alone (the second pass's images cut) sets the passes apart
    cut, logged = trained(10.0, 0.0, strong_cutout=0.5)
    assert len(logged) == 3 and all(value > 0 for value in logged)
    assert not torch.allclose(cut, without)
    with pytest.raises(ValueError, match="consistency needs classification"):
        regression_model(d_loss=losses.DiscriminatorLoss(consistency=PiModel(0.1)))


def test_the_mean_teacher_is_the_moving_average_of_d_before_each_step_and_gives_the_target(tmp_path):
    decay, recorder = 0.2, StepRecorder()
    model = make_model(d_loss=losses.DiscriminatorLoss(consistency=MeanTeacher(1.0, decay)))
    make_trainer(tmp_path, max_steps=4, callbacks=[recorder]).fit(model, DigitsDataModule())
    assert model.teacher is not None
    # the average of D's weights as each D step found them: a copy at the first, then the warm-up's
    # decay min(decay, (1 + n) / (10 + n)) (0.18, then 0.2)
    before = [weights["discriminator"] for _, weights, _, _ in recorder.of("discriminator")]
    want = [w.clone() for w in before[0]]
    for n, weights in enumerate(before[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        want = [d * a + (1 - d) * w for a, w in zip(want, weights, strict=True)]
    got = list(model.teacher.module.parameters())
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(got[-1], before[-1][-1])  # an average, not the latest weights
    # the teacher only gives the target: no gradients, not in D's optimizer, in the checkpoint
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    d_params = {id(p) for group in model.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not d_params & {id(p) for p in model.teacher.parameters()}
    assert "teacher.module.classifier.v" in model.state_dict()


def test_the_mean_teacher_gives_the_consistency_target_and_needs_the_term(tmp_path):
    # without noise, two passes through D agree (the Π-model's term is 0); the teacher's pass
    # differs once the teacher is an average (from the second step; at the first it is a copy)
    logger = CSVLogger(tmp_path)
    model = SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=(64, 32), input_noise=0.0, hidden_noise=0.0),
        MLPGenerator((1, 8, 8), hidden=(32,)),
        d_loss=losses.DiscriminatorLoss(consistency=MeanTeacher(1.0, 0.99)),
    )
    make_trainer(tmp_path, max_steps=3, logger=logger, log_every_n_steps=1).fit(model, DigitsDataModule())
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = [float(row["train/d_consistency"]) for row in csv.DictReader(f) if row.get("train/d_consistency")]
    assert len(logged) == 3 and logged[0] == 0.0 and all(value > 0 for value in logged[1:])
    with pytest.raises(ConfigError, match="mean_teacher decay must be a float in"):
        MeanTeacher(1.0, decay=1.5)


def test_pseudo_label_threshold_reaches_d_s_loss_and_is_checked_there():
    model = make_model(d_loss=losses.DiscriminatorLoss(consistency=PiModel(1.0, pseudo_label_threshold=0.9)))
    assert model.d_loss.consistency.pseudo_label_threshold == 0.9
    assert (
        make_model(d_loss=losses.DiscriminatorLoss(consistency=PiModel())).d_loss.consistency.pseudo_label_threshold
        is None
    )
    with pytest.raises(ConfigError, match="pseudo_label_threshold must be a float"):
        PiModel(1.0, pseudo_label_threshold=1.5)


def test_the_constructor_takes_parts_not_their_options():
    parameters = inspect.signature(SemiSupervisedGAN.__init__).parameters
    assert len(parameters) - 1 <= 12  # without self
    assert "hparams[" not in inspect.getsource(lit_ssgan.module)  # each part holds its own options


def small_generator() -> MLPGenerator:
    return MLPGenerator((1, 8, 8), hidden=(32,))


def saved_from_python(tmp_path) -> tuple[Path, SemiSupervisedGAN]:
    model = make_model(
        d_loss=losses.DiscriminatorLoss(0.5, d_label_smooth=0.1, consistency=MeanTeacher(0.3, decay=0.9)),
        g_loss=losses.SigmoidKL(target_prob=0.8),
        d_gradients=GradientPolicy(1.0, "value", {"hidden.0.*": 0.5}),
        g_gradients=GradientPolicy(clip_algorithm="value"),  # before 0.2.0 the networks shared one
        validation_scores=["acc", "kappa"],
        training=Training(on_nonfinite="skip", lr_scheduler_interval="step"),
    )
    trainer = make_trainer(tmp_path, max_steps=1, enable_checkpointing=True)
    trainer.fit(model, DigitsDataModule())
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    return tmp_path / "model.ckpt", model


def parts_of(model: SemiSupervisedGAN) -> dict:
    gradients = {net: config_of(policy) for net, policy in model.gradients.items()}
    return {"d": config_of(model.d_loss), "g": config_of(model.g_loss), **gradients, "t": model.training_options}


def test_a_model_built_from_python_is_loaded_with_its_parts(tmp_path):
    path, model = saved_from_python(tmp_path)
    networks = {"discriminator": MLPDiscriminator(10, (1, 8, 8), hidden=(64, 32)), "generator": small_generator()}
    loaded = SemiSupervisedGAN.load_from_checkpoint(path, **networks)
    assert parts_of(loaded) == parts_of(model) and set(loaded.val_metrics) == {"val/acc", "val/kappa"}
    assert loaded.teacher is not None and torch.equal(
        loaded.teacher.module.classifier.v, model.teacher.module.classifier.v
    )


def test_a_checkpoint_of_the_flat_options_before_0_2_0_is_loaded_with_them_mapped(tmp_path):
    path, model = saved_from_python(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"] = {  # what lit_ssgan 0.1.0 saved for the same model
        "unlabeled_weight": 0.5,
        "d_label_smooth": 0.1,
        "unlabeled_consistency_weight": 0.3,
        "mean_teacher_decay": 0.9,
        "generator_loss": "sigmoid_kl",
        "generator_target_prob": 0.8,
        "feature_distance": "squared",
        "d_clip_val": 1.0,
        "clip_algorithm": "value",
        "d_gradient_multipliers": {"hidden.0.*": 0.5},
        "classification": True,
        "validation_scores": ["acc", "kappa"],
        "on_nonfinite": "skip",
        "lr_scheduler_interval": "step",
        "compile": None,
    }
    torch.save(checkpoint, tmp_path / "old.ckpt")
    networks = {"discriminator": MLPDiscriminator(10, (1, 8, 8), hidden=(64, 32)), "generator": small_generator()}
    loaded = SemiSupervisedGAN.load_from_checkpoint(tmp_path / "old.ckpt", **networks)
    assert parts_of(loaded) == parts_of(model)
