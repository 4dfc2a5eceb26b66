"""Exact resume: the same seed gives the same weights, and a resumed run (from an epoch's end, from
the middle of an epoch, after SIGKILL) ends with the weights of an uninterrupted one. The pieces:
the RandomState callback, ResumableDataLoader, and the module's scheduler catch-up."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_ssgan.checkpoint import find_last_checkpoint
from lit_ssgan.cli import cli
from lit_ssgan.errors import ConfigError
from tests.helpers import (
    EVERY_2_STEPS,
    ROOT,
    assert_same_weights,
    checkpoint_weights,
    ddp_args,
    ddp_run,
    digits_args,
    signalled_after_first_epoch,
)


def test_same_seed_and_config_give_identical_weights(tmp_path):
    runs = [cli(digits_args(tmp_path / name, "--trainer.max_epochs", "2")) for name in "ab"]
    assert_same_weights(*(run.model.state_dict() for run in runs))


def test_resume_from_an_epoch_end_checkpoint_ends_with_the_same_weights_as_a_straight_run(tmp_path):
    every_epoch = "--trainer.callbacks.init_args.save_top_k=-1"
    straight = cli(digits_args(tmp_path / "a", "--trainer.max_epochs", "4", every_epoch))
    ckpt = Path(straight.trainer.log_dir, "checkpoints", "epoch=1-step=8.ckpt")
    resumed = cli(digits_args(tmp_path / "b", "--trainer.max_epochs", "4", "--ckpt_path", str(ckpt)))
    assert resumed.trainer.global_step == straight.trainer.global_step == 16
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    # and the run really trained: weights moved from the 2-epoch checkpoint
    halfway = checkpoint_weights(ckpt)
    assert not torch.equal(halfway["discriminator.classifier.v"], resumed.model.discriminator.classifier.v)


# 4 batches an epoch: two batches into the second epoch, and after its last batch but before its
# end (the epoch-end hooks, LR schedulers among them, have not run; the digits config has some)
BALANCED_REGRESSION = [
    "--model.discriminator.init_args.regression=true",
    "--data.num_labeled=[14, 4, 4, 4, 4, 4, 4, 4, 4, 4]",
    "--data.balance_ratio=0.9",
]

# mnist_fast.yaml's settings: bf16, noise windows from a pool (offsets drawn from Python's random),
# D's input shift, and the consistency term (a second noisy, shifted pass of the unlabeled batch)
MNIST_FAST_BF16 = [
    "--trainer.precision=bf16-mixed",
    "--model.discriminator.init_args.pooled_noise=true",
    "--model.discriminator.init_args.input_shift=1",
    "--model.d_loss.init_args.consistency=lit_ssgan.consistency.PiModel",
    "--model.d_loss.init_args.consistency.init_args.weight=0.3",
]

# random crops: albumentations' own generators, which no global seed reaches
RANDOM_CROP = [
    '--data.train_transforms=[{"class_path": "albumentations.PadIfNeeded", "init_args": {"min_height": 10,'
    ' "min_width": 10, "border_mode": 0}}, {"class_path": "albumentations.RandomCrop", "init_args":'
    ' {"height": 8, "width": 8}}]'
]


@pytest.mark.parametrize(
    "name, batches_done, extra",
    [
        ("epoch=1-step=6.ckpt", 2, []),
        ("epoch=1-step=8.ckpt", 4, []),
        ("epoch=1-step=6.ckpt", 2, BALANCED_REGRESSION),  # with class balancing and regression on
        ("epoch=1-step=6.ckpt", 2, MNIST_FAST_BF16),
        (
            "epoch=1-step=6.ckpt",
            2,
            [*MNIST_FAST_BF16, "--model.d_loss.init_args.consistency=lit_ssgan.consistency.MeanTeacher"],
        ),  # the teacher too
        ("epoch=1-step=6.ckpt", 2, RANDOM_CROP),
        (
            "epoch=1-step=6.ckpt",
            2,
            [*MNIST_FAST_BF16, "--model.training.compile={backend: aot_eager}"],
        ),  # training.compile
    ],
)
def test_resume_from_a_mid_epoch_checkpoint_continues_with_the_unseen_batches(tmp_path, name, batches_done, extra):
    straight = cli(digits_args(tmp_path / "a", "--trainer.max_epochs", "3", *EVERY_2_STEPS, *extra))
    checkpoints = Path(straight.trainer.log_dir, "checkpoints")
    middle = checkpoints / name
    assert middle.is_file(), sorted(p.name for p in checkpoints.iterdir())
    # each of the three training loaders (labeled, unlabeled, unlabeled_g) saved its place
    loaders = torch.load(middle, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loaders == [{"batches_yielded": batches_done}] * 3
    resumed = cli(digits_args(tmp_path / "a", "--trainer.max_epochs", "3", *extra, "--ckpt_path", str(middle)))
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())


def assert_resume_last_ends_like_an_unbroken_run(args: list[str], stopped: Path, straight: Path, env: dict) -> None:
    """``args`` (a 60-batch run under ``stopped``) again with ``--ckpt_path last`` ends with the
    weights of the same run made in one go under ``straight``."""
    command = [sys.executable, "-m", "lit_ssgan", *args]
    resumed = subprocess.run([*command, "--ckpt_path", "last"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight_args = [a.replace(str(stopped), str(straight)) for a in args]
    subprocess.run([sys.executable, "-m", "lit_ssgan", *straight_args], cwd=ROOT, env=env, check=True)
    final = find_last_checkpoint(stopped)
    assert torch.load(final, weights_only=True)["global_step"] == 60
    assert_same_weights(checkpoint_weights(find_last_checkpoint(straight)), checkpoint_weights(final))


def test_sigkill_then_resume_last_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    # the full-size demo networks, so a batch takes long enough for the kill to land mid-run
    big = ["--model.discriminator.init_args.hidden", "[1000, 500, 250]"]
    args = digits_args(tmp_path / "killed", "--trainer.max_epochs", "6", EVERY_2_STEPS[0], networks=big)
    args += ["--data.init_args.batches_per_epoch", "10"]  # the last word wins: 10 batches an epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_ssgan", *args]
    rng = random.Random(0)
    for delay in (rng.uniform(0.1, 1.0), 0.05, 0.0):
        run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while find_last_checkpoint(tmp_path / "killed") is None and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            assert run.wait() == -signal.SIGKILL
            break
        for path in (tmp_path / "killed").iterdir():  # finished before the kill: start over, kill sooner
            subprocess.run(["rm", "-rf", str(path)], check=True)
    else:
        pytest.fail("the run always finished before it could be killed")
    killed_at = torch.load(find_last_checkpoint(tmp_path / "killed"), weights_only=True)["global_step"]
    assert killed_at < 60

    assert_resume_last_ends_like_an_unbroken_run(args, tmp_path / "killed", tmp_path / "straight", env)


def test_sigterm_writes_where_it_is_exits_143_and_resume_last_ends_with_the_weights_of_an_unbroken_run(tmp_path):
    big = ["--model.discriminator.init_args.hidden", "[1000, 500, 250]"]
    args = digits_args(tmp_path / "stopped", "--trainer.max_epochs", "6", EVERY_2_STEPS[0], networks=big)
    args += ["--data.init_args.batches_per_epoch", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_ssgan", *args]
    run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while find_last_checkpoint(tmp_path / "stopped") is None and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into the epoch: the next checkpoint of every_n_train_steps is not yet due
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr[-3000:]  # 128 + SIGTERM: a scheduler requeues it
    (said,) = [line for line in stderr.splitlines() if line.startswith("lit-ssgan:")]
    assert "Received SIGTERM" not in stderr  # Lightning's own notice: one line is enough
    assert "stopped by SIGTERM after step" in said and said.endswith(
        "Resume with the same command and --ckpt_path last"
    )
    stopped_at = torch.load(find_last_checkpoint(tmp_path / "stopped"), weights_only=True)["global_step"]
    assert 0 < stopped_at < 60 and f"after step {stopped_at} " in said

    assert_resume_last_ends_like_an_unbroken_run(args, tmp_path / "stopped", tmp_path / "straight", env)


@pytest.mark.parametrize(
    "signum, group, status",
    # Kubernetes' SIGTERM to the first process; Ctrl-C to all (the same path, through SIGTERM: -m slow, for CI's time)
    [(signal.SIGTERM, False, 143), pytest.param(signal.SIGINT, True, 130, marks=pytest.mark.slow)],
)
def test_ddp_stopped_by_a_signal_writes_where_it_is_and_resumes(tmp_path, signum, group, status):
    args = ddp_args(tmp_path, "--trainer.max_epochs", "100")
    returncode, stderr = signalled_after_first_epoch(args, signum, group=group)  # hung before (Lightning #20806)
    assert returncode == status, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("lit-ssgan: stopped by")]
    step = torch.load(find_last_checkpoint(tmp_path), weights_only=True)["global_step"]
    assert len(said) == 1 and f"after step {step} " in said[0] and 4 < step < 16  # in epoch 2 to 4, of 4 steps
    resumed = ddp_run(tmp_path, "--trainer.max_epochs", "5", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(find_last_checkpoint(tmp_path), weights_only=True)["global_step"] == 20


def test_sigusr1_stops_like_sigterm_where_no_cluster_claims_it(tmp_path):
    args = digits_args(tmp_path, "--trainer.max_epochs", "50", "--data.init_args.batches_per_epoch", "10")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    returncode, stderr = signalled_after_first_epoch(args, signal.SIGUSR1, env=env)
    assert returncode == 143, stderr[-3000:]
    assert "lit-ssgan: stopped by SIGTERM after step" in stderr
    assert torch.load(find_last_checkpoint(tmp_path), weights_only=True)["global_step"] < 500


def test_sigterm_during_validation_then_resume_last_ends_with_the_weights_of_an_unbroken_run(tmp_path):
    many_val_batches = ["--trainer.max_epochs", "4", "--data.eval_batch_size", "20"]  # 10 validation batches
    stop = "--trainer.callbacks+=tests.helpers.TermDuringValidation"
    with pytest.raises(SystemExit) as stopped:
        cli(digits_args(tmp_path / "stopped", *many_val_batches, stop))
    assert stopped.value.code == 143
    assert torch.load(find_last_checkpoint(tmp_path / "stopped"), weights_only=True)["global_step"] == 8
    resumed = cli(digits_args(tmp_path / "stopped", *many_val_batches, "--ckpt_path", "last"))
    straight = cli(digits_args(tmp_path / "straight", *many_val_batches))
    assert resumed.trainer.global_step == straight.trainer.global_step == 16
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())


def test_a_resume_on_the_same_labeled_examples_goes_on_and_one_on_another_draw_is_refused(checkpoint, tmp_path):
    recorded = torch.load(checkpoint, weights_only=True)["labeled_examples"]
    assert len(recorded["labeled"]) == 50 and len(recorded["val"]) == 200  # digits.yaml; indices into load_digits
    same = cli(digits_args(tmp_path / "same", "--ckpt_path", str(checkpoint), "--trainer.max_steps", "3"))
    assert same.datamodule.labeled_examples == {k: [tuple(row) for row in v] for k, v in recorded.items()}
    assert same.trainer.global_step == 3
    with pytest.raises(ConfigError, match="data.data_seed is 0 in the checkpoint's run but 1 in this one"):
        cli(digits_args(tmp_path / "b", "--ckpt_path", str(checkpoint), "--data.init_args.data_seed", "1"))
    assert not (tmp_path / "b").exists()  # refused before anything is left
