"""The divergence guard: a NaN or infinite loss stops the run or skips the batch; no checkpoint is
written with NaN weights."""

import subprocess
import sys

import pytest
import torch

from lit_ssgan.checkpoint import find_last_checkpoint
from lit_ssgan.cli import cli
from lit_ssgan.divergence import NonFiniteGuard, check_finite_weights
from lit_ssgan.errors import DivergenceError
from tests.helpers import EVERY_2_STEPS, ROOT, SMALL_NETWORKS, digits_args

DIVERGING = ["--model.discriminator", "tests.helpers.DivergingDiscriminator", *EVERY_2_STEPS, *SMALL_NETWORKS[:2]]


def test_a_nonfinite_loss_stops_the_command_naming_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path):
    args = digits_args(tmp_path, "--trainer.max_epochs", "4", *DIVERGING)
    result = subprocess.run(
        [sys.executable, "-m", "lit_ssgan", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    # nan_after=15: the 16th forward, the D step of the sixth batch (step 5), is the first NaN
    assert "lit-ssgan: error: non-finite loss at step 5 (epoch 1, batch 1): d_loss_class = nan" in result.stderr
    assert "Traceback" not in result.stderr
    state = torch.load(find_last_checkpoint(tmp_path), weights_only=True)
    assert state["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


def test_a_nonfinite_loss_can_skip_the_batch_instead(tmp_path):
    nan_after = ["--model.discriminator.init_args.nan_after", "6"]
    args = digits_args(tmp_path, "--trainer.max_epochs", "2", *DIVERGING, *nan_after, "--model.on_nonfinite", "skip")
    with pytest.warns(UserWarning, match="skipped step"):
        run = cli(args)
    assert run.trainer.state.finished
    assert run.model.guard.skipped == 8 - 2  # every batch from the third on
    # a skipped batch takes no optimizer step, so the count lives in the checkpoint, and comes back
    run.trainer.save_checkpoint(tmp_path / "after.ckpt")
    assert torch.load(tmp_path / "after.ckpt", weights_only=True)["skipped_steps"] == 6
    with pytest.warns(UserWarning, match="skipped step"):
        resumed = cli([*args, "--trainer.max_epochs", "3", "--ckpt_path", str(tmp_path / "after.ckpt")])
    # a fresh DivergingDiscriminator turns NaN after 2 batches again: 2 of the third epoch's 4 skipped
    assert resumed.model.guard.skipped == 6 + 2
    with pytest.raises(DivergenceError):  # and the default stops
        cli(digits_args(tmp_path / "stop", "--trainer.max_epochs", "2", *DIVERGING, *nan_after))


def test_the_guard_names_only_the_terms_that_went_wrong():
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    with pytest.raises(DivergenceError, match=r"at step 7: d_loss_real = nan\. Training stopped"):
        NonFiniteGuard("stop").finite(nan, {"d_loss_class": one, "d_loss_real": nan}, "step 7")
    assert NonFiniteGuard("stop").finite(one, {"d_loss_class": one}, "step 7")


def test_nonfinite_weights_are_never_checkpointed():
    check_finite_weights({"w": torch.ones(2), "step": torch.tensor(3)}, step=1)
    with pytest.raises(DivergenceError, match="w holds NaN or infinite values at step 9"):
        check_finite_weights({"w": torch.tensor([1.0, float("inf")])}, step=9)
