"""The LightningModule through the Python Trainer API."""

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_ssgan import DigitsDataModule, SemiSupervisedGAN
from lit_ssgan.callbacks import EMA, ema_with_warmup
from lit_ssgan.checkpoint import UnsafeCheckpointError
from lit_ssgan.models import MLPDiscriminator, MLPGenerator


def make_model(**kwargs) -> SemiSupervisedGAN:
    kwargs.setdefault("d_optimizer", partial(torch.optim.Adam, lr=3e-3, betas=(0.5, 0.999)))
    kwargs.setdefault("g_optimizer", partial(torch.optim.Adam, lr=3e-3, betas=(0.5, 0.999)))
    kwargs.setdefault("num_sample_images", 0)
    return SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=(64, 32)), MLPGenerator((1, 8, 8), hidden=(32,)), **kwargs
    )


def make_trainer(tmp_path, **kwargs) -> L.Trainer:
    kwargs.setdefault("max_steps", 3)
    return L.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


class StepRecorder:
    """Wraps each optimizer's ``step`` to snapshot both networks and their gradients around it."""

    def __init__(self, model: SemiSupervisedGAN) -> None:
        self.model, self.steps = model, []

    def wrap(self, optimizer: torch.optim.Optimizer, name: str) -> None:
        step = optimizer.step

        def recorded(*args, **kwargs):
            before = self.snapshot()
            grads = {net: [p.grad for p in getattr(self.model, net).parameters()] for net in self.nets}
            out = step(*args, **kwargs)
            self.steps.append((name, before, self.snapshot(), grads))
            return out

        optimizer.step = recorded

    nets = ("discriminator", "generator")

    def snapshot(self) -> dict[str, list[torch.Tensor]]:
        return {net: [p.detach().clone() for p in getattr(self.model, net).parameters()] for net in self.nets}


class RecordedGAN(SemiSupervisedGAN):
    def configure_optimizers(self):
        optimizers, schedulers = super().configure_optimizers()
        self.recorder = StepRecorder(self)
        for opt, name in zip(optimizers, ("discriminator", "generator"), strict=True):
            self.recorder.wrap(opt, name)
        return optimizers, schedulers


def recorded_model(**kwargs) -> RecordedGAN:
    model = make_model(**kwargs)
    model.__class__ = RecordedGAN
    return model


def test_each_step_changes_only_its_own_network(tmp_path):
    model = recorded_model()
    make_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule())
    names = [name for name, *_ in model.recorder.steps]
    assert names == ["discriminator", "generator"] * 2  # one D step then one G step per batch
    for name, before, after, grads in model.recorder.steps:
        other = "generator" if name == "discriminator" else "discriminator"
        assert all(torch.equal(a, b) for a, b in zip(before[other], after[other], strict=True)), other
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after[name], strict=True)), name
        # the frozen network got no gradients at all
        assert all(g is None for g in grads[other])
        assert all(g is not None for g in grads[name])


@pytest.mark.parametrize("algorithm, clip", [("value", 1e-4), ("norm", 1e-3)])
def test_gradient_clipping_per_network(tmp_path, algorithm, clip):
    model = recorded_model(d_clip_val=clip, g_clip_val=clip * 10, clip_algorithm=algorithm)
    make_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule())
    for name, _, _, grads in model.recorder.steps:
        limit = clip if name == "discriminator" else clip * 10
        g = torch.cat([x.flatten() for x in grads[name]])
        size = g.abs().max() if algorithm == "value" else g.norm()
        assert size <= limit * 1.001


def test_gradient_clipping_under_bf16_mixed_precision(tmp_path):
    model = recorded_model(d_clip_val=1e-3, g_clip_val=1e-3)
    make_trainer(tmp_path, max_steps=2, precision="bf16-mixed").fit(model, DigitsDataModule())
    for _, _, _, grads in model.recorder.steps:
        assert all(torch.isfinite(g).all() for g in grads["discriminator"] + grads["generator"] if g is not None)
        assert len(model.recorder.steps) == 4


@pytest.mark.parametrize("interval, steps, expected_halvings", [("epoch", 6, 2), ("step", 5, 5)])
def test_lr_schedulers_are_stepped_by_the_module(tmp_path, interval, steps, expected_halvings):
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = make_model(d_lr_scheduler=step_lr, g_lr_scheduler=step_lr, lr_scheduler_interval=interval)
    make_trainer(tmp_path, max_steps=steps).fit(model, DigitsDataModule(batches_per_epoch=3))
    for opt in model.trainer.optimizers:
        assert opt.param_groups[0]["lr"] == pytest.approx(3e-3 * 0.5**expected_halvings)


def test_global_step_counts_batches(tmp_path):
    model = make_model()
    trainer = make_trainer(tmp_path, max_steps=7)
    trainer.fit(model, DigitsDataModule())
    assert trainer.global_step == 7
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 7


def test_fit_test_predict(tmp_path):
    model, dm = make_model(), DigitsDataModule()
    trainer = make_trainer(tmp_path, max_epochs=1, max_steps=-1)
    trainer.fit(model, dm)
    (results,) = trainer.test(model, datamodule=dm, verbose=False)
    assert results["test/acc"] + results["test/error"] == pytest.approx(1.0)
    probs = torch.cat(trainer.predict(model, datamodule=dm))
    assert probs.shape == (500, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(500))


def test_explicit_fake_output_trains(tmp_path):
    model = SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=(32,), explicit_fake=True),
        MLPGenerator((1, 8, 8), hidden=(32,)),
        generator_loss="sigmoid_kl",
        generator_target_prob=0.9,
        d_label_smooth=0.1,
        num_sample_images=0,
    )
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit(model, DigitsDataModule())
    probs = torch.cat(trainer.predict(model, datamodule=DigitsDataModule()))
    assert probs.shape == (500, 10)  # the fake class is not a prediction


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_label_smooth": 1.5}, "d_label_smooth"),
        ({"d_label_smooth": -0.1}, "d_label_smooth"),
        ({"generator_target_prob": 1.01}, "generator_target_prob"),
        ({"unlabeled_weight": -1.0}, "unlabeled_weight"),
        ({"d_clip_val": 0.0}, "d_clip_val"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kwargs)


def test_mismatched_networks_and_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="image_shape"):
        SemiSupervisedGAN(MLPDiscriminator(10, (1, 8, 8)), MLPGenerator((1, 28, 28)))
    model = SemiSupervisedGAN(MLPDiscriminator(10, (1, 28, 28)), MLPGenerator((1, 28, 28)))
    with pytest.raises(ValueError, match=r"the data has image_shape \(1, 8, 8\)"):
        make_trainer(tmp_path).fit(model, DigitsDataModule())
    model = SemiSupervisedGAN(MLPDiscriminator(7, (1, 8, 8)), MLPGenerator((1, 8, 8)))
    with pytest.raises(ValueError, match="the data has num_classes 10"):
        make_trainer(tmp_path).fit(model, DigitsDataModule())


def test_ema_warmup_weights_recent_steps_early_on():
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema_with_warmup(0.9999)(averaged, current, torch.tensor(1))  # after one update: decay min(0.9999, 2/11)
    torch.testing.assert_close(averaged[0], torch.full((3,), 1 - 2 / 11))
    averaged = [torch.zeros(3)]
    ema_with_warmup(0.5)(averaged, current, torch.tensor(10_000))  # late: the decay itself
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.5))


def test_ema_callback_evaluates_and_keeps_the_average(tmp_path):
    model = make_model()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=6,
        logger=False,
        callbacks=[EMA(decay=0.9), ModelCheckpoint(dirpath=tmp_path, save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, DigitsDataModule(batches_per_epoch=3))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = "discriminator.classifier.v"
    assert not torch.equal(average[name], raw[name])
    # the model ends holding the average: test and predict use it
    assert torch.equal(model.state_dict()[name], average[name])


class NotATensor:
    pass


def test_weights_from_copies_the_tensors_whose_names_and_shapes_match(tmp_path):
    source = make_model()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    narrower = SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=(64, 16)), MLPGenerator((1, 8, 8), hidden=(32,)), num_sample_images=0
    )
    loaded = narrower.load_matching_weights(str(path))
    assert "discriminator.hidden.0.0.v" in loaded and "discriminator.hidden.1.0.v" not in loaded  # 32 vs 16 units
    first = "discriminator.hidden.0.0.v"
    assert torch.equal(narrower.state_dict()[first], source.state_dict()[first])

    # in fit, from scratch: applied before the first step (lr 0, so the step changes nothing)
    frozen = partial(torch.optim.Adam, lr=0.0)
    model = make_model(weights_from=str(path), d_optimizer=frozen, g_optimizer=frozen, data_dependent_init=True)
    make_trainer(tmp_path, max_steps=1).fit(model, DigitsDataModule())
    for name, tensor in source.discriminator.state_dict().items():
        assert torch.equal(model.discriminator.state_dict()[name], tensor), name

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": source.state_dict(), "extra": NotATensor()}, unsafe)
    with pytest.raises(UnsafeCheckpointError, match="unsafe.pt"):
        narrower.load_matching_weights(str(unsafe))
