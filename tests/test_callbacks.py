"""The callbacks: the moving average of the weights, the sample grids and summaries, the epoch line,
the time left, and what they read of the module (lit_ssgan.protocols.GANModule)."""

import logging
import re
from types import SimpleNamespace

import cv2
import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from lit_ssgan import DigitsDataModule
from lit_ssgan.callbacks import (
    EMA,
    EpochLine,
    GPUMemoryFraction,
    SampleGrid,
    Summaries,
    TimeLeft,
    ema_with_warmup,
    time_left,
)
from lit_ssgan.callbacks.step_counts import DispatchCount
from lit_ssgan.cli import cli
from lit_ssgan.models.base import evaluating
from lit_ssgan.protocols import GANModule, served_gan
from tests.helpers import StepLosses, digits_args, make_model, make_trainer


def test_ema_warmup_weights_recent_steps_early_on():
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema_with_warmup(0.9999)(averaged, current, torch.tensor(1))  # after one update: decay min(0.9999, 2/11)
    torch.testing.assert_close(averaged[0], torch.full((3,), 1 - 2 / 11))
    averaged = [torch.zeros(3)]
    ema_with_warmup(0.5)(averaged, current, torch.tensor(10_000))  # late: the decay itself
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.5))


def test_ema_takes_integer_tensors_as_they_are():
    averaged = [torch.tensor([3, 5])]  # batch norm's step counter
    ema_with_warmup(0.9)(averaged, [torch.tensor([7, 9])], 5)
    assert torch.equal(averaged[0], torch.tensor([7, 9]))


def accuracy(model, dataset) -> float:
    x, y = dataset.__getitems__(range(len(dataset)))
    with torch.no_grad(), evaluating(model):
        return (model(x).argmax(1) == y).float().mean().item()


def test_the_ema_copies_the_module_without_its_trainer(tmp_path):
    model, ema = make_model(), EMA(decay=0.9)

    class Copied(Callback):
        def on_train_start(self, trainer, pl_module):
            copied = ema._average_model.module
            seen["trainer"] = copied._trainer, pl_module.trainer  # the copy's and the module's own
            seen["factories"] = copied.optimizer_factories, pl_module.optimizer_factories

    seen = {}
    trainer = make_trainer(tmp_path, max_steps=1, callbacks=[ema, Copied()])
    trainer.fit(model, DigitsDataModule(batches_per_epoch=1))
    assert seen["trainer"] == (None, trainer)  # under DDP a copied Trainer failed: its launcher's locks
    assert seen["factories"] == (None, model.optimizer_factories) and model.optimizer_factories is not None


def test_ema_callback_validates_tests_and_ends_on_the_average(tmp_path):
    model, dm = make_model(), DigitsDataModule(batches_per_epoch=3)
    seen = {}

    class AtValidation(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["weights"] = {name: t.clone() for name, t in pl_module.state_dict().items()}

    callbacks = [EMA(decay=0.9), AtValidation(), ModelCheckpoint(dirpath=tmp_path, save_last=True)]
    trainer = make_trainer(tmp_path, max_steps=6, callbacks=callbacks, enable_checkpointing=True)
    trainer.fit(model, dm)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = "discriminator.classifier.v"
    assert not torch.equal(average[name], raw[name])
    # the last validation ran on the average (no update after it), and its score is the average's
    assert all(torch.equal(seen["weights"][n], average[n]) for n in average)
    averaged, current = make_model(), make_model()
    averaged.load_state_dict(average)
    current.load_state_dict(raw)
    assert trainer.callback_metrics["val/acc"].item() == pytest.approx(accuracy(averaged, dm.val))
    assert accuracy(averaged, dm.val) != accuracy(current, dm.val)  # so the check tells the two apart
    # the model ends holding the average: test and predict use it
    assert torch.equal(model.state_dict()[name], average[name])
    (tested,) = trainer.test(model, datamodule=dm, verbose=False)
    assert tested["test/acc"] == pytest.approx(accuracy(averaged, dm.test))


def test_sample_grid_writes_a_png_and_a_tensorboard_image_every_n_epochs(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="", version="run")
    grid = SampleGrid(num_images=9, every_n_epochs=2)
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=5, logger=logger, callbacks=[grid])
    trainer.fit(make_model(), DigitsDataModule(batches_per_epoch=1))
    pngs = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert pngs == ["epoch=001.png", "epoch=003.png"]  # after epochs 2 and 4
    # 3 x 3 images of 8 px with 2 px padding: 32 px, enlarged 4x
    image = cv2.imread(str(tmp_path / "run" / "samples" / "epoch=001.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (128, 128) and image.min() < image.max()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("kwargs", [{"num_images": 0}, {"every_n_epochs": 0}])
def test_sample_grid_refuses_nothing_to_draw(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SampleGrid(**kwargs)


def test_the_epoch_line_prints_tefla_s_summary_after_each_validation(tmp_path, capsys):
    run = cli(digits_args(tmp_path, "--trainer.max_epochs", "2", "--trainer.callbacks+=tests.helpers.StepLosses"))
    (losses,) = [c for c in run.trainer.callbacks if isinstance(c, StepLosses)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch ")]
    pattern = (
        r"Epoch {} \[\(80, 200\) images, +\d+\.\ds\]: t-loss: (\d+\.\d{{3}}), v-loss: (\d\.\d{{3}}), "
        r"acc: \d\.\d{{3}}, error: (\d\.\d{{3}})"
    )
    assert len(lines) == 2
    for epoch, line in enumerate(lines, start=1):
        match = re.fullmatch(pattern.format(epoch), line)
        assert match, line
        # t-loss: the mean of the discriminator losses the epoch's steps returned; v-loss: the top-1 error
        steps = losses.by_epoch[epoch - 1]
        assert len(steps) == 4 and float(match[1]) == pytest.approx(sum(steps) / 4, abs=5e-4)
        assert match[2] == match[3]
    cli(digits_args(tmp_path, "--trainer.max_epochs", "1", "--epoch_line", "false"))
    assert "t-loss" not in capsys.readouterr().out
    # no validation: the line still comes, at the end of the epoch, without the validation scores
    cli(digits_args(tmp_path, "--trainer.max_epochs", "1", "--data.val_size", "0"))
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch ")]
    assert re.fullmatch(r"Epoch 1 \[\(80, 0\) images, +\d+\.\ds\]: t-loss: \d+\.\d{3}", line), line


def test_the_epoch_line_means_the_finite_losses_without_reading_the_device(capsys):
    line = EpochLine()
    reduce = SimpleNamespace(reduce=lambda sums, reduce_op: sums)  # one process
    trainer = SimpleNamespace(current_epoch=0, progress_bar_callback=None, strategy=reduce)
    module = SimpleNamespace(device=torch.device("cpu"))
    batch = {"unlabeled": (torch.zeros(5, 1, 8, 8), torch.zeros(5))}
    for epoch, losses in enumerate([(1.0, float("nan"), 3.0, float("inf")), (float("nan"),)]):
        trainer.current_epoch = epoch
        line.on_train_epoch_start(trainer, module)
        with DispatchCount() as counted:
            for loss in losses:
                line.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)}, batch, 0)
        assert counted.reads == 0
        line.on_train_epoch_end(trainer, module)  # no validation: the line now
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"Epoch 1 \[\(20, 0\) images, +\d+\.\ds\]: t-loss: 2\.000", lines[0]), lines
    assert re.fullmatch(r"Epoch 2 \[\(5, 0\) images, +\d+\.\ds\]: t-loss: 0\.000", lines[1]), lines


def test_the_module_provides_what_the_callbacks_read_and_another_is_refused_by_name():
    model = make_model()
    assert isinstance(model, GANModule) and served_gan(model, SampleGrid()) is model
    message = (
        "SampleGrid serves a GAN module (lit_ssgan.protocols.GANModule, such as SemiSupervisedGAN), not a "
        "LightningModule: it has no discriminator, generator, heads, network_of, val_metrics"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        SampleGrid().on_train_epoch_end(SimpleNamespace(sanity_checking=False, current_epoch=0), LightningModule())


class RecordingLogger(Logger):
    """Keeps what callbacks write: scalars, and TensorBoard-style images and histograms."""

    def __init__(self):
        super().__init__()
        self.metrics, self.calls = [], []
        recorder = self

        class Experiment:
            def add_histogram(self, tag, values, step):
                recorder.calls.append(("histogram", tag, values, step))

            def add_image(self, tag, image, step):
                recorder.calls.append(("image", tag, image, step))

        self._experiment = Experiment()

    name, version, save_dir = "recording", 0, None

    @property
    def experiment(self):
        return self._experiment

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_summaries_every_n_epochs_write_histograms_grad_norms_and_the_grid(tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=4, logger=logger, callbacks=[Summaries(9, 2)])
    trainer.fit(make_model(), DigitsDataModule(batches_per_epoch=2))
    written = {(kind, tag, step) for kind, tag, _, step in logger.calls}
    assert written == {
        (kind, tag, step)
        for step in (1, 3)  # pictures are indexed by epoch (from 0), like the grid's PNG names
        for kind, tag in (
            ("histogram", "summaries/p_real_unlabeled"),
            ("histogram", "summaries/p_real_generated"),
            ("image", "samples"),
        )
    }
    for kind, _, values, _ in logger.calls:
        if kind == "histogram":
            assert values.shape == (50,) and ((values >= 0) & (values <= 1)).all()
    norms = [(step, m) for step, m in logger.metrics if "summaries/d_grad_norm" in m]
    assert [step for step, _ in norms] == [4, 8]  # scalars by global step, like the training scalars
    assert all(m["summaries/d_grad_norm"] > 0 and m["summaries/g_grad_norm"] > 0 for _, m in norms)


def test_summaries_grad_norm_is_the_mean_norm_of_all_a_network_s_gradients(tmp_path):
    seen: dict[str, list[float]] = {"d": [], "g": []}

    class Expected(Callback):  # after Summaries: the same gradients, before the module clips them
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = [p.grad.flatten() for group in optimizer.param_groups for p in group["params"]]
            seen[pl_module.network_of(optimizer)[0]].append(torch.linalg.vector_norm(torch.cat(grads)).item())

    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=1, logger=logger, callbacks=[Summaries(4), Expected()])
    trainer.fit(make_model(), DigitsDataModule(batches_per_epoch=3))  # under 40 batches: every step measured
    (norms,) = [m for _, m in logger.metrics if "summaries/d_grad_norm" in m]
    assert len(seen["d"]) == len(seen["g"]) == 3
    for net, values in seen.items():
        assert norms[f"summaries/{net}_grad_norm"] == pytest.approx(sum(values) / 3, rel=1e-5)


def test_gpu_memory_fraction_caps_each_cuda_device_and_only_notes_a_cpu_run(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))

    class FakeTrainer:
        class strategy:  # noqa: N801
            root_device = torch.device("cuda", 1)

    GPUMemoryFraction(0.4).setup(FakeTrainer(), None, "fit")
    assert calls == [(0.4, torch.device("cuda", 1))]
    FakeTrainer.strategy.root_device = torch.device("cpu")
    with caplog.at_level(logging.INFO):
        GPUMemoryFraction(0.4).setup(FakeTrainer(), None, "fit")
    assert len(calls) == 1 and "does not apply" in caplog.text
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="fraction must lie in"):
            GPUMemoryFraction(bad)


def test_time_left_says_once_how_long_the_run_takes_after_its_first_batches(tmp_path, capsys):
    cli(digits_args(tmp_path, "--trainer.max_epochs", "3"))  # 4 batches an epoch
    lines = [line for line in capsys.readouterr().out.splitlines() if "s a batch: the run's" in line]
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"lit-ssgan: \S+ s a batch: the run's 12 batches \(3 epochs of 4\) take about \d+ s more \(done around .+\)",
        lines[0],
    )


def test_time_left_speaks_again_when_the_estimate_moves(monkeypatch, capsys):
    """Five batches of 1 s (after the first): 94 left, 94 s; then the batches slow to 3 s each."""
    now = [0.0]
    monkeypatch.setattr(time_left.time, "monotonic", lambda: now[0])
    trainer = SimpleNamespace(estimated_stepping_batches=100, num_training_batches=10, global_step=0)
    callback = TimeLeft(first_after=5, change=0.25)

    def batches(n: int, seconds: float) -> None:
        for _ in range(n):
            callback.on_train_batch_start(trainer, None)
            now[0] += seconds
            trainer.global_step += 1
            callback.on_train_batch_end(trainer, None)

    batches(6, 1.0)
    assert "1 s a batch: the run's 100 batches (10 epochs of 10) take about 2 min more" in capsys.readouterr().out
    batches(4, 1.0)
    callback.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == ""  # on time: nothing new to say
    batches(10, 3.0)
    callback.on_train_epoch_end(trainer, None)
    assert "2.05 s a batch" in capsys.readouterr().out  # 80 left at the mean so far: about 3 min, not 60 s


def test_time_left_keeps_quiet_about_a_change_of_seconds(monkeypatch, capsys):
    """A short run's estimate moves by more than a quarter with the machine's load alone: 14 s left
    becomes 14 s where 6 were expected, a change of 8 s, which is not said again."""
    now = [0.0]
    monkeypatch.setattr(time_left.time, "monotonic", lambda: now[0])
    trainer = SimpleNamespace(estimated_stepping_batches=20, num_training_batches=10, global_step=0)
    callback = TimeLeft(first_after=5, change=0.25)
    for seconds in [1.0] * 6 + [2.0] * 4:
        callback.on_train_batch_start(trainer, None)
        now[0] += seconds
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None)
    assert "take about 14 s more" in capsys.readouterr().out
    callback.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == ""
