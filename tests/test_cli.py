"""The ``lit-ssgan`` command, run in process as a user would."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_ssgan import SemiSupervisedGAN
from lit_ssgan.cli import cli
from tests.conftest import CONFIGS, ROOT, digits_args


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_each_shipped_config_runs(config, tmp_path, request):
    args = ["fit", "--config", str(CONFIGS / config), "--trainer.fast_dev_run", "true"]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    if "mnist" in config:
        data = request.getfixturevalue("fashion_mnist_dir" if "fashion" in config else "mnist_dir")
        args += ["--data.data_dir", str(data)]
    run = cli(args)
    assert run.trainer.state.finished
    assert run.trainer.global_step == 1
    # every shipped config ends by testing the trained model
    assert 0.0 <= run.trainer.callback_metrics["test/acc"] <= 1.0


def test_max_steps_counts_batches_in_steps_checkpoints_and_logs(tmp_path):
    run = cli(
        [
            "fit",
            *digits_args(tmp_path, "--trainer.max_steps", "12", "--trainer.log_every_n_steps", "5"),
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(tmp_path),
        ]
    )
    trainer = run.trainer
    assert trainer.global_step == 12
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 12
    checkpoints = Path(trainer.log_dir, "checkpoints")
    names = [p.name for p in checkpoints.glob("epoch=*.ckpt")]
    assert names
    for name in names:  # 4 batches an epoch: the step in a name is the batches seen
        epoch, step = (int(part.split("=")[1]) for part in name.removesuffix(".ckpt").split("-"))
        assert step == 4 * (epoch + 1), name
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 12
    with open(Path(trainer.log_dir) / "metrics.csv") as f:
        steps = sorted({int(row["step"]) for row in csv.DictReader(f) if row.get("train/g_loss")})
    assert steps == [4, 9]  # batches 5 and 10 (zero-based), logged every 5 batches
    samples = sorted(p.name for p in Path(trainer.log_dir, "samples").glob("*.png"))
    assert samples == ["epoch=000.png", "epoch=001.png", "epoch=002.png"]


def test_fit_then_validate_test_predict_and_load(tmp_path):
    run = cli(["fit", *digits_args(tmp_path, "--trainer.max_steps", "8")])
    ckpt = str(Path(run.trainer.log_dir, "checkpoints", "last.ckpt"))
    common = ["--config", str(CONFIGS / "digits.yaml"), "--ckpt_path", ckpt]
    small = digits_args(tmp_path)[2:6]  # the small networks the checkpoint was made with
    tested = cli(["test", *common, *small, "--trainer.default_root_dir", str(tmp_path)])
    acc = tested.trainer.callback_metrics["test/acc"].item()
    assert tested.trainer.callback_metrics["test/error"].item() == pytest.approx(1 - acc)
    validated = cli(["validate", *common, *small, "--trainer.default_root_dir", str(tmp_path)])
    assert "val/acc" in validated.trainer.callback_metrics
    predicted = cli(["predict", *common, *small, "--trainer.default_root_dir", str(tmp_path)])
    probs = torch.cat(predicted.trainer.predict_loop.predictions)
    assert probs.shape == (500, 10)
    # a CLI checkpoint rebuilds the whole model by itself, loaded safely (weights_only)
    model = SemiSupervisedGAN.load_from_checkpoint(ckpt, weights_only=True)
    assert model.discriminator.hidden[0][0].v.shape == (64, 64)
    assert (model.eval()(torch.rand(3, 1, 8, 8)).argmax(1) < 10).all()


def test_config_saving_does_not_fail_on_a_second_run(tmp_path):
    logger = ["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.version", "same"]
    args = digits_args(tmp_path, "--trainer.max_steps", "1", *logger, "--trainer.logger.save_dir", str(tmp_path))
    cli(["fit", *args])
    run = cli(["fit", *args])  # the same log directory, its config.yaml already there
    assert Path(run.trainer.log_dir, "config.yaml").is_file()


def test_data_dir_on_the_command_line_is_used_and_a_missing_file_named(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(tmp_path / "nowhere")]
    with pytest.raises(FileNotFoundError, match="nowhere has no train-images-idx3-ubyte.gz"):
        cli([*args, "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)])


@pytest.mark.parametrize(
    "extra, error, match",
    [
        (["--model.d_label_smooth", "1.5"], ValueError, "d_label_smooth"),
        (["--model.generator_target_prob", "-0.2"], ValueError, "generator_target_prob"),
        (["--data.num_labeled", "5"], ValueError, "num_labeled"),
        (["--data.num_labeled", "5000"], ValueError, "num_labeled"),
        (
            ["--model.discriminator", "lit_ssgan.models.ConvDiscriminator"],
            ValueError,
            r"image_shape \(1, 8, 8\)",
        ),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, extra, error, match):
    with pytest.raises(error, match=match):
        cli(["fit", *digits_args(tmp_path, *extra)])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_resume_ends_with_the_same_weights_as_a_straight_run(tmp_path):
    straight = cli(["fit", *digits_args(tmp_path / "a", "--trainer.max_epochs", "4")])
    first = cli(["fit", *digits_args(tmp_path / "b", "--trainer.max_epochs", "2")])
    ckpt = Path(first.trainer.log_dir, "checkpoints", "last.ckpt")
    resumed = cli(["fit", *digits_args(tmp_path / "b", "--trainer.max_epochs", "4"), "--ckpt_path", str(ckpt)])
    assert resumed.trainer.global_step == straight.trainer.global_step == 16
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    # and the run really trained: weights moved from the 2-epoch checkpoint
    halfway = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not torch.equal(halfway["discriminator.classifier.v"], got["discriminator.classifier.v"])


def test_module_entry_point_and_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "lit_ssgan", "fit", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "--model.unlabeled_weight" in out.stdout and "--test_after_fit" in out.stdout
