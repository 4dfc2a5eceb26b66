"""Between backward and step: tefla's gradient multipliers, per-tensor clipping, and each
network's gradients averaged once per step under DDP (two CPU processes)."""

import pytest
import torch

from lit_ssgan import DigitsDataModule
from lit_ssgan.checkpoint import find_last_checkpoint
from lit_ssgan.gradients import GradientPolicy
from tests.helpers import (
    StepRecorder,
    assert_same_weights,
    checkpoint_weights,
    ddp_run,
    make_model,
    make_trainer,
)


def first_steps(tmp_path, **kwargs) -> dict[str, list]:
    """The gradients of the first D step and the first G step of a seeded 1-batch fit."""
    torch.manual_seed(0)
    model, recorder = make_model(**kwargs), StepRecorder()
    make_trainer(tmp_path, max_steps=1, callbacks=[recorder]).fit(model, DigitsDataModule())
    (d_step,), (g_step,) = recorder.of("discriminator"), recorder.of("generator")
    return {"discriminator": d_step[3]["discriminator"], "generator": g_step[3]["generator"]}


def test_gradient_multipliers_scale_each_matching_gradient_by_its_factor(tmp_path):
    plain = first_steps(tmp_path)
    names = {net: [n for n, _ in getattr(make_model(), net).named_parameters()] for net in plain}
    d_factors = {"hidden.0.*": 0.5, "classifier.*": 2.0}
    scaled = first_steps(tmp_path, d_gradients=GradientPolicy(multipliers=d_factors))
    expected = {"hidden.0.0.v": 0.5, "hidden.0.0.bias": 0.5, "classifier.v": 2.0, "classifier.bias": 2.0}
    for name, want, got in zip(names["discriminator"], plain["discriminator"], scaled["discriminator"], strict=True):
        if name == "classifier.g":  # only the output layer trains its scale; it has no gradient to scale
            continue
        torch.testing.assert_close(got, want * expected.get(name, 1.0), rtol=0, atol=0, msg=name)
    # the generator's own multipliers, on its step (D's step, before it, is untouched)
    scaled = first_steps(tmp_path, g_gradients=GradientPolicy(multipliers={"net.1.*": 3.0}))
    for want, got in zip(plain["discriminator"], scaled["discriminator"], strict=True):
        assert (want is None and got is None) or torch.equal(want, got)
    for name, want, got in zip(names["generator"], plain["generator"], scaled["generator"], strict=True):
        torch.testing.assert_close(got, want * (3.0 if name.startswith("net.1.") else 1.0), rtol=0, atol=0, msg=name)


def test_a_multiplier_pattern_that_matches_nothing_is_refused():
    with pytest.raises(ValueError, match=r"model.g_gradients.multipliers: 'nothing.\*' matches no parameter"):
        make_model(g_gradients=GradientPolicy(multipliers={"nothing.*": 0.5}))


def test_per_tensor_clipping_bounds_each_gradient_tensor_not_their_sum(tmp_path):
    per_tensor = GradientPolicy(1e-3, "norm_per_tensor")
    model, recorder = (
        make_model(d_gradients=per_tensor, g_gradients=GradientPolicy(1e-3, "norm_per_tensor")),
        StepRecorder(),
    )
    make_trainer(tmp_path, max_steps=2, callbacks=[recorder]).fit(model, DigitsDataModule())
    assert len(recorder.steps) == 4
    for name, _, _, grads in recorder.steps:
        norms = [g.norm() for g in grads[name] if g is not None]
        assert max(norms) <= 1e-3 * 1.001
        assert torch.cat([g.flatten() for g in grads[name]]).norm() > 1e-3 * 1.5  # not a global clip


def test_ddp_on_two_cpu_processes_trains_checkpoints_once_and_resumes_exactly(tmp_path):
    straight = ddp_run(tmp_path / "a", "--trainer.max_epochs", "4")
    assert straight.returncode == 0, straight.stderr[-3000:]
    # 4 batches an epoch for each process; the epoch line counts both processes' images
    assert "Epoch 4 [(160, 200) images" in straight.stdout
    checkpoints = sorted(p.name for p in (tmp_path / "a").rglob("*.ckpt"))
    assert checkpoints == [f"epoch={e}-step={4 * (e + 1)}.ckpt" for e in range(4)] + ["last.ckpt"]
    state = torch.load(find_last_checkpoint(tmp_path / "a"), weights_only=True)
    assert len(state["rng_states"]["noise"]) == 2  # each process's latent-noise state
    assert not torch.equal(*state["rng_states"]["noise"])  # each its own codes

    middle = next((tmp_path / "a").rglob("epoch=1-step=8.ckpt"))
    resumed = ddp_run(tmp_path / "b", "--trainer.max_epochs", "4", "--ckpt_path", str(middle))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 3 [" in resumed.stdout and "Epoch 2 [" not in resumed.stdout
    assert_same_weights(
        checkpoint_weights(find_last_checkpoint(tmp_path / "a")),
        checkpoint_weights(find_last_checkpoint(tmp_path / "b")),
    )
