"""Never losing a run: atomic checkpoints, exact resume (also mid-epoch and after SIGKILL), safe
loading, and the divergence guard."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_ssgan.checkpoint import (
    CorruptCheckpointError,
    SafeCheckpointIO,
    UnsafeCheckpointError,
    find_last_checkpoint,
    load_checkpoint_file,
)
from lit_ssgan.cli import cli
from lit_ssgan.module import DivergenceError
from tests.conftest import ROOT, digits_args

EVERY_2_STEPS = ["--trainer.callbacks.init_args.every_n_train_steps=2", "--trainer.callbacks.init_args.save_top_k=-1"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # what a signal does in the middle of torch.save

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # nothing left aside


def test_same_seed_and_config_give_identical_weights(tmp_path):
    runs = [cli(["fit", *digits_args(tmp_path / name, "--trainer.max_epochs", "2")]) for name in "ab"]
    assert_same_weights(*(run.model.state_dict() for run in runs))


# 4 batches an epoch: two batches into the second epoch, and after its last batch but before its
# end (the epoch-end hooks, LR schedulers among them, have not run; the digits config has some)
@pytest.mark.parametrize("name", ["epoch=1-step=6.ckpt", "epoch=1-step=8.ckpt"])
def test_resume_from_a_mid_epoch_checkpoint_continues_with_the_unseen_batches(tmp_path, name):
    straight = cli(["fit", *digits_args(tmp_path / "a", "--trainer.max_epochs", "3", *EVERY_2_STEPS)])
    checkpoints = Path(straight.trainer.log_dir, "checkpoints")
    middle = checkpoints / name
    assert middle.is_file(), sorted(p.name for p in checkpoints.iterdir())
    resumed = cli(["fit", *digits_args(tmp_path / "a", "--trainer.max_epochs", "3"), "--ckpt_path", str(middle)])
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())


def test_sigkill_then_resume_last_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    # the full-size demo networks, so a batch takes long enough for the kill to land mid-run
    args = digits_args(tmp_path / "killed", "--trainer.max_epochs", "6", EVERY_2_STEPS[0])
    args[args.index("--model.discriminator.init_args.hidden") + 1] = "[1000, 500, 250]"
    args[args.index("--data.init_args.batches_per_epoch") + 1] = "10"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_ssgan", "fit", *args]
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

    resumed = subprocess.run([*command, "--ckpt_path", "last"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight_args = [a.replace(str(tmp_path / "killed"), str(tmp_path / "straight")) for a in args]
    subprocess.run([sys.executable, "-m", "lit_ssgan", "fit", *straight_args], cwd=ROOT, env=env, check=True)

    final = find_last_checkpoint(tmp_path / "killed")
    assert torch.load(final, weights_only=True)["global_step"] == 60
    assert_same_weights(weights(find_last_checkpoint(tmp_path / "straight")), weights(final))


def test_ckpt_path_last_with_no_checkpoint_yet_starts_from_scratch(tmp_path):
    with pytest.raises(FileNotFoundError, match="no last.ckpt"):  # but never tests untrained weights
        cli(["test", *digits_args(tmp_path)[:-2], "--ckpt_path", "last"])
    run = cli(["fit", *digits_args(tmp_path, "--trainer.max_steps", "2"), "--ckpt_path", "last"])
    assert run.trainer.global_step == 2
    tested = cli(["test", *digits_args(tmp_path)[:-2], "--ckpt_path", "last"])
    assert Path(tested.trainer.ckpt_path) == find_last_checkpoint(tmp_path)  # the fit's last.ckpt
    assert "test/acc" in tested.trainer.callback_metrics


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    run = cli(["fit", *digits_args(tmp_path / "run", "--trainer.max_steps", "2")])
    return Path(run.trainer.log_dir, "checkpoints", "last.ckpt")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_is_refused_naming_the_file(tmp_path, checkpoint, damage):
    bad = tmp_path / f"{damage}.ckpt"
    raw = checkpoint.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"this is not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match=f"{damage}.ckpt"):
        cli(["fit", *digits_args(tmp_path, "--trainer.max_steps", "4"), "--ckpt_path", str(bad)])


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_needs_arbitrary_unpickling_is_refused_and_runs_nothing(tmp_path, checkpoint):
    marker = tmp_path / "code-ran"
    unsafe = tmp_path / "unsafe.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    contents["extra"] = Payload(marker)
    torch.save(contents, unsafe)
    with pytest.raises(UnsafeCheckpointError, match="unsafe.ckpt.*unpickling"):
        cli(["fit", *digits_args(tmp_path, "--trainer.max_steps", "4"), "--ckpt_path", str(unsafe)])
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint_file(unsafe)
    assert not marker.exists()


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        load_checkpoint_file(tmp_path / "nowhere.ckpt")


DIVERGING = ["--model.discriminator", "tests.helpers.DivergingDiscriminator", *EVERY_2_STEPS]


def test_a_nonfinite_loss_stops_the_run_naming_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path):
    args = digits_args(tmp_path, "--trainer.max_epochs", "4", *DIVERGING)
    args += ["--model.discriminator.init_args.hidden", "[64, 32]"]  # the small networks of digits_args
    result = subprocess.run(
        [sys.executable, "-m", "lit_ssgan", "fit", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    # nan_after=15: the 16th forward, the D step of the sixth batch (step 5), is the first NaN
    assert "non-finite loss at step 5" in result.stderr and "d_loss_class = nan" in result.stderr
    last = find_last_checkpoint(tmp_path)
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


def test_a_nonfinite_loss_can_skip_the_batch_instead(tmp_path):
    args = digits_args(tmp_path, "--trainer.max_epochs", "2", *DIVERGING, "--model.on_nonfinite", "skip")
    args += ["--model.discriminator.init_args.hidden", "[64, 32]", "--model.discriminator.init_args.nan_after", "6"]
    with pytest.warns(UserWarning, match="skipped step"):
        run = cli(["fit", *args])
    assert run.trainer.state.finished
    assert run.model.skipped_steps == 8 - 2  # every batch from the third on
    with pytest.raises(DivergenceError):  # and the default stops
        cli(["fit", *digits_args(tmp_path / "stop", "--trainer.max_epochs", "2", *DIVERGING), *args[-4:-2]])
