"""The ``lit-ssgan`` command: in process as a user would run it, and as the console script (what
it prints when the user gets something wrong)."""

import csv
import os
import shutil
import subprocess
import sys
from argparse import ArgumentError
from pathlib import Path

import pytest
import torch
import yaml

import lit_ssgan
from lit_ssgan import SemiSupervisedGAN
from lit_ssgan.callbacks import LabeledExamples, Preemption
from lit_ssgan.cli import SUBCOMMANDS, SemiSupervisedCLI, Subcommand, cli, main
from lit_ssgan.errors import ConfigError
from lit_ssgan.models.base import evaluating
from tests.helpers import CONFIGS, ROOT, digits_args


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_each_shipped_config_runs(config, tmp_path, request):
    args = ["fit", "--config", str(CONFIGS / config), "--trainer.fast_dev_run", "true"]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    if "mnist" in config:
        data = request.getfixturevalue("fashion_mnist_dir" if "fashion" in config else "mnist_dir")
        args += ["--data.data_dir", str(data)]
    if config.startswith("image_folder"):  # the digits as PNG folders, at the smallest size the conv pair takes
        folders = request.getfixturevalue("folders")
        args += ["--data.labeled_dir", str(folders / "labeled"), "--data.unlabeled_dir", str(folders / "unlabeled")]
        args += ["--data.test_dir", str(folders / "test"), "--data.image_size", "16"]
    run = cli(args)
    assert run.trainer.state.finished
    assert run.trainer.global_step == 1
    # every shipped config ends by testing the trained model (the one fit leaves: EMA weights where
    # the config averages): fast_dev_run tests one batch, whose accuracy is that model's
    x, y = next(iter(run.datamodule.test_dataloader()))
    with torch.no_grad(), evaluating(run.model), run.trainer.precision_plugin.forward_context():  # bf16 too
        accuracy = (run.model(x).argmax(1) == y).float().mean().item()
    assert run.trainer.callback_metrics["test/acc"].item() == pytest.approx(accuracy)


def test_the_long_mnist_config_is_the_fast_one_on_a_longer_schedule():
    def flat(tree, prefix=""):
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        if isinstance(tree, list):
            return {k: v for i, sub in enumerate(tree) for k, v in flat(sub, f"{prefix}{i}.").items()}
        return {prefix[:-1]: tree}

    fast, long = (flat(yaml.safe_load((CONFIGS / name).read_text())) for name in ("mnist_fast.yaml", "mnist_long.yaml"))
    differ = {key for key in fast.keys() | long.keys() if fast.get(key) != long.get(key)}
    schedule = {"trainer.max_epochs", "trainer.default_root_dir", "trainer.callbacks.0.init_args.every_n_epochs"}
    assert differ == schedule | {f"model.{net}_lr_scheduler.init_args.decay_over" for net in ("d", "g")}
    assert (long["trainer.max_epochs"], long["model.d_lr_scheduler.init_args.decay_over"]) == (100, 30)


def test_max_steps_counts_batches_in_steps_checkpoints_and_logs(tmp_path):
    logger = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]
    run = cli(digits_args(tmp_path, "--trainer.max_steps", "12", "--trainer.log_every_n_steps", "5", *logger))
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
    assert samples == ["epoch=000.png", "epoch=001.png", "epoch=002.png"]  # the config's SampleGrid


def test_fit_then_validate_test_predict_and_load(tmp_path):
    run = cli(digits_args(tmp_path, "--trainer.max_steps", "8"))
    ckpt = str(Path(run.trainer.log_dir, "checkpoints", "last.ckpt"))
    tested = cli(digits_args(tmp_path, "--ckpt_path", ckpt, subcommand="test"))
    acc = tested.trainer.callback_metrics["test/acc"].item()
    assert tested.trainer.callback_metrics["test/error"].item() == pytest.approx(1 - acc)
    validated = cli(digits_args(tmp_path, "--ckpt_path", ckpt, subcommand="validate"))
    assert "val/acc" in validated.trainer.callback_metrics
    predicted = cli(digits_args(tmp_path, "--ckpt_path", ckpt, subcommand="predict"))
    assert predicted.trainer.predict_loop.predictions == []  # the CSV has them: memory stays flat
    with open(Path(predicted.trainer.log_dir, "predictions.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "prediction", *map(str, range(10))] and len(rows) == 1 + 500
    probs = torch.tensor([[float(p) for p in row[2:]] for row in rows[1:]])
    torch.testing.assert_close(probs.sum(1), torch.ones(500))
    # on request, the probabilities come back in memory too
    kept = cli(digits_args(tmp_path, "--ckpt_path", ckpt, "--return_predictions", "true", subcommand="predict"))
    torch.testing.assert_close(torch.cat(kept.trainer.predict_loop.predictions), probs, atol=1e-6, rtol=0)
    # a CLI checkpoint rebuilds the whole model by itself, loaded safely (weights_only)
    model = SemiSupervisedGAN.load_from_checkpoint(ckpt, weights_only=True)
    assert model.discriminator.hidden[0][0].v.shape == (64, 64)
    assert torch.equal(model.discriminator.classifier.v, run.model.discriminator.classifier.v)


def test_config_saving_does_not_fail_on_a_second_run(tmp_path):
    logger = ["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.version", "same"]
    args = digits_args(tmp_path, "--trainer.max_steps", "1", *logger, "--trainer.logger.save_dir", str(tmp_path))
    cli(args)
    run = cli(args)  # the same log directory, its config.yaml already there
    assert Path(run.trainer.log_dir, "config.yaml").is_file()


def test_data_dir_on_the_command_line_is_used_and_a_missing_file_named(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(tmp_path / "nowhere")]
    with pytest.raises(FileNotFoundError, match="nowhere has no (train|t10k)-images-idx3-ubyte.gz"):
        cli([*args, "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--data.num_labeled", "5"], "num_labeled"),
        (["--data.num_labeled", "5000"], "num_labeled"),
        (["--model.discriminator", "lit_ssgan.models.ConvDiscriminator"], r"image_shape \(1, 8, 8\)"),
        (["--model.validation_scores", "[acc, recall]"], "model.validation_scores: 'recall'"),
        (
            ["--model.discriminator.init_args.regression", "true", "--model.validation_scores", "[acc]"],
            "'acc' is not a score for regr",
        ),
        (["--data.balance_ratio", "1.2"], r"balance_ratio must be a float in \[0, 1\]"),
        (["--data.balance_ratio", "0.9", "--data.balance_weights", "[1, 2]"], "balance_weights needs one weight"),
        (
            ["--data.balance_ratio", "0.9", "--data.final_balance_weights", "[1, 1, 1, 1, 1, 1, 1, 1, 1, -1]"],
            "0 or more",
        ),
        (["--data.num_labeled", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"], "for each of the 10 classes"),
        (["--data.num_labeled", "[500, 4, 4, 4, 4, 4, 4, 4, 4, 4]"], "needs 500 labeled examples of class .0."),
        (
            ["--model.d_gradients", "lit_ssgan.gradients.GradientPolicy"]
            + ["--model.d_gradients.init_args.multipliers", "{nothing: 0.5}"],
            "d_gradients.multipliers: 'nothing' matches no",
        ),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):  # from Python: the exception itself
        cli(digits_args(tmp_path, *extra))
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--model.d_loss.init_args.d_label_smooth", "1.5"], "d_label_smooth"),
        (["--model.g_loss=lit_ssgan.losses.SigmoidKL", "--model.g_loss.init_args.target_prob", "-0.2"], "target_prob"),
        (["--model.training.resume_lr", "0"], "resume_lr"),
    ],
)
def test_a_value_out_of_its_options_range_is_refused_by_the_command_line_naming_it(tmp_path, extra, key):
    with pytest.raises(ArgumentError, match=f'Parser key "{key}"'):
        cli(digits_args(tmp_path, *extra), parser_kwargs={"exit_on_error": False})
    assert not list(tmp_path.rglob("*.ckpt"))


def test_regression_on_the_digits_logs_mae_rmse_and_kappa(tmp_path):
    run = cli(digits_args(tmp_path, "--trainer.max_epochs", "2", "--model.discriminator.init_args.regression", "true"))
    assert {"val/mae", "val/rmse", "val/kappa"} <= set(run.trainer.callback_metrics)
    assert run.model.discriminator.regression


def test_an_imbalanced_labeled_set_trains_with_annealed_class_balancing(tmp_path):
    imbalanced = ["--data.num_labeled", "[14, 4, 4, 4, 4, 4, 4, 4, 4, 4]", "--data.balance_ratio", "0.9"]
    imbalanced += ["--data.final_balance_weights", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    run = cli(digits_args(tmp_path, "--trainer.max_epochs", "2", *imbalanced))
    assert run.trainer.state.finished and run.trainer.global_step == 8
    assert run.datamodule.labeled.labels.bincount().tolist() == [14] + [4] * 9


def lit_ssgan_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Runs the installed ``lit-ssgan`` console script, as a user types it."""
    script = shutil.which("lit-ssgan", path=str(Path(sys.executable).parent))
    assert script is not None, "the lit-ssgan console script is not installed beside this Python"
    return subprocess.run(
        [script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_the_console_script_runs_fit_help():
    out = lit_ssgan_command("fit", "--help")
    assert out.returncode == 0
    assert "--model.d_loss" in out.stdout and "--test_after_fit" in out.stdout


def test_the_help_lists_every_subcommand_a_line_each():
    out = lit_ssgan_command("--help", COLUMNS="80")
    assert out.returncode == 0
    listed = out.stdout.split("Available subcommands:", 1)[1].split("\n\n", 1)[0].splitlines()
    entries = [line.split(maxsplit=1) for line in listed if line.strip() not in ("", "(required)")]
    assert [name for name, *_ in entries] == [*SemiSupervisedCLI.subcommands(), *SUBCOMMANDS]
    assert all(len(entry) == 2 for entry in entries), listed  # each with its help, on its own line


def test_a_subcommand_is_a_function_whose_parameters_are_its_options(monkeypatch, capsys, tmp_path):
    """What adding a subcommand beside export takes: one Subcommand in SUBCOMMANDS."""

    def count(to: int, step: int = 1) -> int:
        """Counts.

        Args:
            to: where to stop
            step: how far each step goes
        """
        if step <= 0:
            raise ConfigError(f"--step must be positive, got {step}")
        return len(range(0, to, step))

    monkeypatch.setitem(SUBCOMMANDS, "count", Subcommand(count, "count up to a number", lambda n: f"{n} steps"))
    main(["count", "--to", "10", "--step", "3"])
    assert capsys.readouterr().out == "4 steps\n"
    (tmp_path / "count.yaml").write_text("to: 10\nstep: 5\n")  # its options from a file
    main(["count", "--config", str(tmp_path / "count.yaml")])
    assert capsys.readouterr().out == "2 steps\n"
    with pytest.raises(SystemExit) as help_:
        main(["count", "--help"])
    assert help_.value.code == 0 and "--to TO" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # a user's error: one line, status 1
        main(["count", "--to", "10", "--step", "0"])
    assert refused.value.code == "lit-ssgan count: error: --step must be positive, got 0"
    with pytest.raises(SystemExit) as bad:  # a command line that does not parse: status 2
        main(["count", "--to", "ten"])
    assert (
        bad.value.code == 2 and "lit-ssgan: error: --to: expected an int. Got value: ten\n" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as listed:
        main(["--help"])
    assert listed.value.code == 0 and "count up to a number" in capsys.readouterr().out


@pytest.mark.parametrize("given", [[], ["--trainer.callbacks+=lit_ssgan.callbacks.Preemption"]])
def test_every_run_has_the_preemption_and_labeled_examples_callbacks_once(tmp_path, given):
    run = cli(digits_args(tmp_path, "--trainer.max_steps", "1", *given))
    kinds = [type(callback) for callback in run.trainer.callbacks]
    assert kinds.count(Preemption) == 1 and kinds.count(LabeledExamples) == 1
    assert Path(run.trainer.log_dir, "labeled_examples.csv").is_file()


def test_the_package_metadata_has_the_version_of_the_package():
    setuptools_config = pytest.importorskip("setuptools.config.setupcfg")
    metadata = setuptools_config.read_configuration(ROOT / "setup.cfg")["metadata"]
    assert metadata["version"] == lit_ssgan.__version__


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "lit_ssgan", "fit", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "--model.d_loss" in out.stdout


@pytest.mark.parametrize(
    "args, status, says",
    [
        (["--data.batch_size", "0"], 1, "batch_size must be positive, got 0"),  # a value the class refuses
        (["--data.batch_size", "abc"], 2, "--data.init_args.batch_size: expected an int. Got value: abc"),
        (["--data.bogus", "3"], 2, "--data.init_args.bogus: lit_ssgan.data.DigitsDataModule takes no option 'bogus'"),
        (["--ckpt_path", "nowhere.ckpt"], 1, "checkpoint not found: nowhere.ckpt"),
    ],
)
def test_a_users_mistake_is_one_short_message_without_a_traceback(tmp_path, args, status, says):
    out = lit_ssgan_command(
        "fit", "--config", "configs/digits.yaml", "--trainer.default_root_dir", str(tmp_path), *args
    )
    assert out.returncode == status
    assert says in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 6, out.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["--model.g_loss.init_args.pull_away_weight", "-1"],
            "--model.g_loss.init_args.pull_away_weight: Not of type NonNegativeFloat: -1 does not conform to "
            "restriction v>=0",
        ),
        (
            ["--model.d_loss.init_args.consistency", "lit_ssgan.consistency.PiModel"]
            + ["--model.d_loss.init_args.consistency.init_args.strong_cutout", "2"],
            "--model.d_loss.init_args.consistency.init_args.strong_cutout: Not of type ClosedUnitInterval: 2 does "
            "not conform to restriction v>=0 and v<=1",
        ),
        (
            ["--model.d_loss.init_args.consistency.init_args.strong_cutout", "0.5"],  # no class_path: the base's
            "--model.d_loss.init_args.consistency.init_args.strong_cutout: lit_ssgan.consistency.Consistency takes "
            "no option 'strong_cutout'",
        ),
        (["--trainer.max_epochs", "x"], "--trainer.max_epochs: expected an int"),
    ],
)
def test_a_part_options_mistake_is_one_line_naming_the_option(tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as refused:  # in this process: the parse fails before anything runs
        main(["fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.default_root_dir", str(tmp_path), *args])
    assert refused.value.code == 2 and capsys.readouterr().err.splitlines() == [
        f"lit-ssgan: error: {says}",
        "tip: --help lists the options",
    ]


def test_a_traceback_on_request_for_bug_reports(tmp_path):
    out = lit_ssgan_command("fit", "--config", "configs/digits.yaml", "--data.batch_size", "0", LIT_SSGAN_TRACEBACK="1")
    assert out.returncode == 1 and "Traceback" in out.stderr and "batch_size must be positive" in out.stderr


def test_a_checkpoint_that_does_not_fit_the_config_is_one_message(tmp_path, checkpoint, mnist_dir):
    # a checkpoint of the digits demo, resumed with the MNIST config
    data = ["--data.data_dir", str(mnist_dir), "--trainer.default_root_dir", str(tmp_path)]
    out = lit_ssgan_command("fit", "--config", "configs/mnist.yaml", "--ckpt_path", str(checkpoint), *data)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "(64, 64) in the checkpoint but (64, 784)" in out.stderr and "DigitsDataModule" in out.stderr


def test_a_damaged_checkpoint_is_one_message(tmp_path, checkpoint):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    out = lit_ssgan_command("test", "--config", "configs/digits.yaml", "--ckpt_path", str(truncated))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "truncated.ckpt is truncated or corrupt" in out.stderr


def test_importing_lit_ssgan_adds_no_warning_filter():
    code = (  # the libraries lit_ssgan builds on add filters of their own: import them first
        "import warnings, torch, lightning.pytorch.cli, torchmetrics, albumentations, cv2, sklearn.datasets; "
        "before = list(warnings.filters); "
        "import lit_ssgan, lit_ssgan.cli, lit_ssgan.callbacks, lit_ssgan.data, lit_ssgan.module; "
        "assert warnings.filters == before, [f for f in warnings.filters if f not in before]"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_checkpoint_of_the_flat_options_before_0_2_0_is_refused_by_path_and_resumed_by_last(tmp_path):
    run = cli(digits_args(tmp_path, "--trainer.max_epochs", "1"))
    last = Path(run.trainer.checkpoint_callback.last_model_path)
    checkpoint = torch.load(last, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    d_loss, training = hparams.pop("d_loss")["init_args"], hparams.pop("training")
    for part in ("g_loss", "d_gradients", "g_gradients"):
        hparams.pop(part)
    hparams.update(unlabeled_weight=d_loss["unlabeled_weight"], feature_distance="squared", **training)
    torch.save(checkpoint, last)  # as lit_ssgan 0.1 wrote it
    with pytest.raises(ConfigError, match="written by lit_ssgan 0.1, whose model options were flat"):
        cli(digits_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", str(last)))
    resumed = cli(digits_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 2 * run.trainer.global_step


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["--config", "x.yaml", "fit", "--trainer.max_epochs", "3"],
            "--config goes after the subcommand: lit-ssgan fit --config x.yaml --trainer.max_epochs 3",
        ),
        (["-c=my run.yaml", "test"], "-c goes after the subcommand: lit-ssgan test '-c=my run.yaml'"),
        (
            ["--config", "x.yaml"],
            "--config goes after a subcommand (fit, validate, test, predict, export, draws), as in: "
            "lit-ssgan fit --config x.yaml",
        ),
    ],
)
def test_options_before_the_subcommand_are_refused_saying_where_they_go(capsys, args, says):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2  # a command line that does not parse
    assert capsys.readouterr().err == f"lit-ssgan: error: {says}\n"


def test_predict_on_several_processes_is_refused_once_before_they_start(tmp_path, checkpoint):
    out = lit_ssgan_command(
        *digits_args(tmp_path / "predict", "--ckpt_path", str(checkpoint), subcommand="predict"),
        *["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
    )
    said = [line for line in out.stderr.splitlines() if line.startswith("lit-ssgan: error:")]
    assert out.returncode == 1 and said == [
        "lit-ssgan: error: writing predictions to a CSV needs one process (trainer.devices: 1)"
    ], out.stderr
    assert not (tmp_path / "predict").exists()
