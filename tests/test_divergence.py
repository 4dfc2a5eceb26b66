"""The divergence guard: a NaN or infinite loss stops the run or skips the batch; no checkpoint is
written with NaN weights."""

import subprocess
import sys
from functools import partial

import pytest
import torch
from lightning.pytorch import Callback

from lit_ssgan import DigitsDataModule
from lit_ssgan.callbacks.step_counts import DispatchCount
from lit_ssgan.checkpoint import find_last_checkpoint
from lit_ssgan.cli import cli
from lit_ssgan.divergence import NonFiniteGuard, check_finite_weights
from lit_ssgan.errors import DivergenceError
from lit_ssgan.training import Training
from tests.helpers import (
    EVERY_2_STEPS,
    ROOT,
    SMALL_NETWORKS,
    DivergingDiscriminator,
    digits_args,
    make_model,
    make_trainer,
)

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
    args = digits_args(
        tmp_path, "--trainer.max_epochs", "2", *DIVERGING, *nan_after, "--model.training.on_nonfinite", "skip"
    )
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
    guard = NonFiniteGuard("stop")
    guard.start_batch("step 7")
    assert guard.void("discriminator", nan, {"d_loss_class": one, "d_loss_real": nan}, []).item() == 1.0
    assert guard.void("generator", one, {"g_loss": one}, []).item() == 1.0  # the batch is dropped whole
    with pytest.raises(DivergenceError, match=r"at step 7: d_loss_real = nan\. Training stopped"):
        guard.check()


def run_batches(guard: NonFiniteGuard, batches: list[tuple[float, float]], start: int = 0) -> list[torch.Tensor]:
    """Each batch's D and G void flags, for batches given as (D's gradient, G's gradient) values."""
    one, voids = torch.tensor(1.0), []
    for i, (d_grad, g_grad) in enumerate(batches):
        guard.start_batch(f"step {start + i}")
        d = guard.void("discriminator", one, {"d_loss_class": one}, [torch.tensor([1.0, d_grad])])
        g = guard.void("generator", one, {"g_loss": one}, [torch.tensor([g_grad])])
        voids.append(torch.stack([d, g]))  # the flags are the guard's buffers: copied
    return voids


def flags(voids: list[torch.Tensor]) -> list[list[float]]:
    return [v.tolist() for v in voids]


@pytest.mark.parametrize("action", ["skip", "stop"])
def test_the_guard_decides_on_the_device_from_the_gradients_without_reading_them(action):
    inf, guard = float("inf"), NonFiniteGuard(action)
    batches = [(1.0, 1.0), (1.0, inf), (1.0, 1.0), (float("nan"), 1.0)]
    with DispatchCount() as count:
        run_batches(guard, batches[:1])
    assert count.reads == 0
    voids = flags(run_batches(guard, batches[1:], start=1))
    if action == "skip":  # each bad batch alone, whole: a void D step voids the batch's G step too
        assert voids == [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
        with pytest.warns(UserWarning, match=r"skipped step 1: non-finite gradient, and 1 more batches since"):
            guard.check()
        assert guard.skipped == 2
        assert flags(run_batches(guard, batches[:1])) == [[0.0, 0.0]]  # counted: the next batch is its own
    else:  # from the first bad batch on, nothing changes until the host stops the run
        assert voids == [[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
        with pytest.raises(DivergenceError, match=r"at step 1: a gradient\. Training stopped"):
            guard.check()


@pytest.mark.parametrize("fused", [True, False])
def test_a_void_batch_leaves_the_weights_and_the_optimizer_state_as_they_were(tmp_path, fused):
    """The fused optimizer is handed the decision on the device; any other reads it and steps on no gradients."""
    adam = partial(torch.optim.Adam, lr=3e-3, fused=fused)
    discriminator = DivergingDiscriminator(nan_after=6, num_classes=10, image_shape=(1, 8, 8), hidden=(32,))
    model = make_model(d_optimizer=adam, g_optimizer=adam, training=Training(on_nonfinite="skip"))
    model.discriminator = discriminator  # batches 0 and 1 train; from batch 2 on, D's logits are NaN
    kept = {}

    class AfterTwoBatches(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                kept.update({k: v.clone() for k, v in pl_module.state_dict().items() if "running" not in k})

    with pytest.warns(UserWarning, match="skipped step"):
        make_trainer(tmp_path, max_steps=5, callbacks=[AfterTwoBatches()]).fit(model, DigitsDataModule())
    assert model.guard.skipped == 3
    now = model.state_dict()
    assert all(torch.equal(kept[k], now[k]) for k in kept if "num_batches" not in k)
    for optimizer in model.trainer.optimizers:
        assert {int(state["step"]) for state in optimizer.state.values()} == {2}  # two steps taken, three void


def test_nonfinite_weights_are_never_checkpointed():
    check_finite_weights({"w": torch.ones(2), "step": torch.tensor(3)}, step=1)
    with pytest.raises(DivergenceError, match="w holds NaN or infinite values at step 9"):
        check_finite_weights({"w": torch.tensor([1.0, float("inf")])}, step=9)


@pytest.mark.parametrize("action", ["skip", "stop"])
def test_a_guard_of_the_discriminator_alone_acts_on_its_step(action):
    """Without d_loss_fake the generator does not train (the labels-only twin): D's step is the
    batch's first and last, and a bad one is counted or stops the run as with both networks."""
    one, nan = torch.tensor(1.0), torch.tensor(float("nan"))
    guard = NonFiniteGuard(action, networks=("discriminator",))
    voids = []
    for i, loss in enumerate([one, nan, one]):
        guard.start_batch(f"step {i}")
        voids.append(guard.void("discriminator", loss, {"d_loss_class": loss}, []).item())
    assert voids == ([0.0, 1.0, 0.0] if action == "skip" else [0.0, 1.0, 1.0])
    if action == "skip":
        with pytest.warns(UserWarning, match="skipped step 1: non-finite d_loss_class = nan"):
            guard.check()
        assert guard.skipped == 1
    else:
        with pytest.raises(DivergenceError, match=r"at step 1: d_loss_class = nan\. Training stopped"):
            guard.check()
