"""Learning-rate schedules: the same rates step by step as the formulas they replaced, exact resume,
``resume_at``, and the run's length from the Trainer."""

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_ssgan import DigitsDataModule
from lit_ssgan.cli import cli
from lit_ssgan.errors import CheckpointMismatchError, ConfigError
from lit_ssgan.lr_schedulers import CosineDecay, InvDecay, LinearDecay, PolyDecay, StepDecay, resume_at
from lit_ssgan.training import Training
from tests.helpers import RateRecorder, digits_args, make_model, make_trainer


def rates(schedule, steps: int) -> list[list[float]]:
    """Each group's rate before each of ``steps`` steps, and after the last."""
    out = []
    for _ in range(steps):
        out.append([group["lr"] for group in schedule.optimizer.param_groups])
        schedule.optimizer.step()
        schedule.step()
    return [*out, [group["lr"] for group in schedule.optimizer.param_groups]]


def sgd(*lrs: float) -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs])


# The formulas the schedules were computed by before they became torch's schedulers (frozen copies):
# the multiplier of the base rate after t of the run's T steps.
def linear_formula(t, T, end_factor, decay_over):
    length = min(decay_over or T, T)
    return 1.0 - (1.0 - end_factor) * min(max(t - (T - length), 0) / length, 1.0)


def poly_formula(t, T, power):
    return max(0.0, 1.0 - t / T) ** power


def cosine_formula(t, T, end_factor):
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * min(t / T, 1.0)))


def inv_formula(t, T, gamma, power):
    return (1.0 + gamma * t) ** -power


SETTINGS = [
    *[
        (partial(LinearDecay, end_factor=e, decay_over=d), partial(linear_formula, end_factor=e, decay_over=d))
        for e in (0.0, 0.2)
        for d in (None, 1, 3, 7, 25)
    ],
    *[(partial(PolyDecay, power=p), partial(poly_formula, power=p)) for p in (1.0, 2.0, 0.5)],
    *[(partial(CosineDecay, end_factor=e), partial(cosine_formula, end_factor=e)) for e in (0.0, 0.2)],
    *[
        (partial(InvDecay, gamma=g, power=p), partial(inv_formula, gamma=g, power=p))
        for g, p in ((1e-4, 0.75), (0.5, 2.0))
    ],
]


def make_id(make) -> str:
    return make.func.__name__ + "(" + ", ".join(f"{k}={v}" for k, v in make.keywords.items()) + ")"


def setting_id(setting) -> str:
    return make_id(setting[0])


def groups(make) -> tuple[float, ...]:
    """Two param groups of different rates, or one where the schedule refuses two."""
    one = make.func is CosineDecay and make.keywords["end_factor"] > 0
    return (1.0,) if one else (1.0, 0.5)


def build(make, optimizer, run_length: int):
    schedule = make(optimizer)
    if hasattr(schedule, "set_run_length"):
        schedule.set_run_length(run_length)
    return schedule


@pytest.mark.parametrize("setting", SETTINGS, ids=setting_id)
@pytest.mark.parametrize("run_length", [7, 20])
@pytest.mark.parametrize("base", [[1.0], [3e-3], [1.0, 0.5]], ids=["1", "3e-3", "two groups"])
def test_each_schedule_gives_the_rates_of_its_former_formula_step_by_step(setting, run_length, base):
    make, formula = setting
    if len(base) > len(groups(make)):
        pytest.skip("refused: test_cosine_decay_to_a_floor_refuses_param_groups_of_different_rates")
    schedule = build(make, sgd(*base), run_length)
    expected = [[lr * formula(t, run_length) for lr in base] for t in range(run_length + 4)]  # and past the end
    assert rates(schedule, run_length + 3) == [pytest.approx(row, rel=1e-12, abs=1e-15) for row in expected]


@pytest.mark.parametrize("base", [[1.0], [1.0, 0.5]])
@pytest.mark.parametrize("key_rates", [{0: 0.1, 2: 0.01, 5: 0.001}, {3: 0.5}])
def test_step_decay_sets_its_absolute_rates_at_their_steps_and_holds_between(base, key_rates):
    expected, now = [], base
    for t in range(9):
        now = [key_rates[t]] * len(base) if t in key_rates else now
        expected.append(now)
    assert rates(StepDecay(sgd(*base), key_rates), 8) == expected


@pytest.mark.parametrize("make", [LinearDecay, PolyDecay, CosineDecay])
def test_a_schedule_that_spans_the_run_holds_the_base_rate_until_it_knows_the_runs_length(make):
    assert rates(make(sgd(0.3)), 3) == [[0.3]] * 4


def test_cosine_decay_to_a_floor_refuses_param_groups_of_different_rates():
    schedule = CosineDecay(sgd(1.0, 0.5), end_factor=0.2)
    with pytest.raises(ConfigError, match="CosineDecay: end_factor > 0 needs one base rate"):
        schedule.set_run_length(7)


def saved_mid_run(make, run_length: int, steps: int, resume_lr: float | None = None):
    """A schedule's and its optimizer's states after ``steps`` steps (``resume_at(resume_lr)`` after
    the first), and the rates of the unbroken run for 8 more steps."""
    schedule = build(make, sgd(*groups(make)), run_length)
    rates(schedule, min(steps, 1))
    if resume_lr is not None:
        resume_at(resume_lr, schedule.optimizer, [schedule])
    rates(schedule, max(steps - 1, 0))
    states = schedule.state_dict(), schedule.optimizer.state_dict()
    return states, rates(schedule, 8)


def resumed(make, run_length: int, states):
    """A fresh schedule that loads ``states`` as Lightning does: the optimizer's, then its own."""
    schedule = build(make, sgd(*groups(make)), run_length)
    schedule.optimizer.load_state_dict(states[1])
    schedule.load_state_dict(states[0])
    return schedule


EVERY = [make for make, _ in SETTINGS] + [partial(StepDecay, rates={0: 0.1, 2: 0.01, 5: 0.001})]


@pytest.mark.parametrize("make", EVERY, ids=make_id)
@pytest.mark.parametrize("steps", [0, 3, 7, 9])
def test_a_state_saved_mid_run_continues_with_the_same_rates_in_a_fresh_schedule(make, steps):
    states, unbroken = saved_mid_run(make, 7, steps)
    assert rates(resumed(make, 7, states), 8) == unbroken


@pytest.mark.parametrize("make", EVERY, ids=make_id)
def test_a_state_saved_after_resume_at_continues_with_the_same_rates(make):
    states, unbroken = saved_mid_run(make, 7, 3, resume_lr=0.25)
    assert rates(resumed(make, 7, states), 8) == [pytest.approx(row, rel=1e-12) for row in unbroken]


def test_a_resumed_run_follows_its_own_trainers_length_not_the_checkpoints():
    make = partial(PolyDecay, power=2.0)
    states, _ = saved_mid_run(make, 7, 3)  # 3 of 7 steps
    schedule = resumed(make, 10, states)  # now a run of 10: the rate at step 3 of 10, on to 0
    expected = [[lr * poly_formula(t, 10, 2.0) for lr in (1.0, 0.5)] for t in range(3, 12)]
    assert rates(schedule, 8) == [pytest.approx(row, rel=1e-12, abs=1e-15) for row in expected]


# What the formula-based classes' state_dict() returned 3 steps into a run of 7 (SGD at lr 1.0), the
# optimizer's rate then, and the rates they went on to.
FORMER_STATES = {
    "LinearDecay": (
        partial(LinearDecay, end_factor=0.2, decay_over=4),
        {"end_factor": 0.2, "decay_over": 4, "base_lrs": [1.0], "last_epoch": 3, "_step_count": 4},
        1.0,
        [1.0, 0.8, 0.6, 0.3999999999999999, 0.19999999999999996, 0.19999999999999996, 0.19999999999999996],
    ),
    "PolyDecay": (
        partial(PolyDecay, power=2.0),
        {"power": 2.0, "base_lrs": [1.0], "last_epoch": 3, "_step_count": 4},
        0.32653061224489793,
        [0.32653061224489793, 0.18367346938775514, 0.08163265306122448, 0.020408163265306135, 0.0, 0.0, 0.0],
    ),
    "CosineDecay": (
        partial(CosineDecay, end_factor=0.2),
        {"end_factor": 0.2, "base_lrs": [1.0], "last_epoch": 3, "_step_count": 4},
        0.6890083735825258,
        [0.6890083735825258, 0.5109916264174743, 0.3506040792565066, 0.2396124528390324, 0.2, 0.2, 0.2],
    ),
    "InvDecay": (
        partial(InvDecay, gamma=0.5, power=1.0),
        {"gamma": 0.5, "power": 1.0, "base_lrs": [1.0], "last_epoch": 3, "_step_count": 4},
        0.4,
        [0.4, 0.3333333333333333, 0.2857142857142857, 0.25, 0.2222222222222222, 0.2, 0.18181818181818182],
    ),
    "StepDecay": (
        partial(StepDecay, rates={0: 0.1, 2: 0.01, 5: 0.001}),
        {"rates": {0: 0.1, 2: 0.01, 5: 0.001}, "base_lrs": [1.0], "last_epoch": 3, "_step_count": 4},
        0.01,
        [0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.001],
    ),
}
for _, state, rate, _ in FORMER_STATES.values():
    state.update({"_is_initial": False, "_get_lr_called_within_step": False, "_last_lr": [rate]})


@pytest.mark.parametrize("name", FORMER_STATES)
def test_a_state_from_the_formula_based_classes_loads_and_goes_on_with_their_rates(name):
    make, state, rate, went_on = FORMER_STATES[name]
    optimizer = sgd(1.0)
    schedule = build(make, optimizer, 7)
    optimizer.param_groups[0].update(lr=rate, initial_lr=1.0)  # as the optimizer's own state restores it
    schedule.load_state_dict(dict(state))
    assert [lr for (lr,) in rates(schedule, 6)] == pytest.approx(went_on, rel=1e-12, abs=1e-15)


def test_a_state_without_the_step_or_base_rates_is_refused_naming_the_schedule():
    other = torch.optim.lr_scheduler.ExponentialLR(sgd(1.0), gamma=0.5).state_dict()
    other.pop("base_lrs")
    with pytest.raises(
        CheckpointMismatchError, match=r"^LinearDecay: the checkpoint's scheduler state has no base_lrs$"
    ):
        build(LinearDecay, sgd(1.0), 7).load_state_dict(other)


@pytest.mark.parametrize("make", EVERY, ids=make_id)
def test_resume_at_continues_each_schedule_from_the_new_rate_with_its_shape(make):
    schedule, straight = build(make, sgd(*groups(make)), 7), build(make, sgd(*groups(make)), 7)
    rates(schedule, 3)
    before = rates(straight, 3)[-1]
    resume_at(0.25, schedule.optimizer, [schedule])
    # the unbroken schedule scaled by 0.25 / its rate at step 3, group by group (StepDecay: 0.25
    # until its next key sets its absolute rate)
    scaled = [[0.25 / b * lr for lr, b in zip(row, before, strict=True)] for row in rates(straight, 7)]
    if make.func is StepDecay:
        scaled = [[0.25] * len(before)] * 2 + [[0.001] * len(before)] * 6
    assert rates(schedule, 7) == [pytest.approx(row, rel=1e-12, abs=1e-15) for row in scaled]


def test_resume_at_from_a_rate_of_0_restarts_there_and_holds():
    schedule = build(partial(LinearDecay, end_factor=0.0), sgd(1.0), 3)
    assert rates(schedule, 3)[-1] == [0.0]
    resume_at(0.25, schedule.optimizer, [schedule])
    assert schedule.state_dict()["base_lrs"] == [0.25]
    assert rates(schedule, 2) == [[0.25]] * 3


def test_linear_decay_over_the_last_n_steps_keeps_the_rate_until_then():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = LinearDecay(opt, decay_over=4)
    schedule.set_run_length(10)
    assert [lr for (lr,) in rates(schedule, 10)] == pytest.approx([1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0])


def test_run_length_does_not_come_back_from_a_checkpoint():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = LinearDecay(opt)
    schedule.set_run_length(10)
    assert "run_length" not in schedule.state_dict()


@pytest.mark.parametrize(
    "extra, epochs",
    [
        (["--trainer.max_epochs", "3"], 3),  # 3 epochs: the decay ends with the run
        (["--trainer.max_epochs", "6", "--trainer.max_steps", "8"], 2),  # 2 epochs of 4 batches
        # 6 batches: 2 epochs, the second cut short, whose end still steps the schedule
        (["--trainer.max_epochs", "6", "--trainer.max_steps", "6"], 2),
        (["--trainer.max_epochs", "4", "--trainer.max_steps", "-1", "--trainer.limit_train_batches", "2"], 4),
    ],
)
def test_the_digits_decay_follows_the_trainers_run_length_epoch_by_epoch(tmp_path, extra, epochs):
    run = cli(digits_args(tmp_path, *extra, "--trainer.callbacks+=tests.helpers.RateRecorder"))
    (recorder,) = [c for c in run.trainer.callbacks if isinstance(c, RateRecorder)]
    # configs/digits.yaml: both rates from 3e-3 linearly to 1 % of it over the run's epochs
    expected = [3e-3 * (1 - 0.99 * e / epochs) for e in range(epochs + 1)]
    assert recorder.rates == [pytest.approx([rate, rate]) for rate in expected]


def test_a_run_without_an_end_is_refused_for_a_schedule_that_spans_it(tmp_path):
    with pytest.raises(ValueError, match="max_epochs or trainer.max_steps"):
        cli(digits_args(tmp_path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1"))


def test_step_decay_sets_absolute_rates_after_the_epochs_it_names(tmp_path):
    step_decay = partial(StepDecay, rates={0: 1e-3, 2: 1e-4})
    model = make_model(d_lr_scheduler=step_decay, g_lr_scheduler=step_decay)
    seen = []

    class Rates(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])

    make_trainer(tmp_path, max_steps=-1, max_epochs=4, callbacks=[Rates()]).fit(
        model, DigitsDataModule(batches_per_epoch=2)
    )
    assert seen == [[1e-3, 1e-3], [1e-3, 1e-3], [1e-4, 1e-4], [1e-4, 1e-4]]


@pytest.mark.parametrize(
    "schedule, factors",
    [
        (partial(PolyDecay, power=2.0), [1.0, 0.5625, 0.25, 0.0625, 0.0]),
        (partial(CosineDecay, end_factor=0.2), [1.0, 0.8828, 0.6, 0.3172, 0.2]),
        (partial(InvDecay, gamma=1.0, power=1.0), [1.0, 0.5, 0.3333, 0.25, 0.2]),
    ],
)
def test_tefla_policies_follow_their_formulas_over_the_trainers_run(tmp_path, schedule, factors):
    model = make_model(
        d_lr_scheduler=schedule, g_lr_scheduler=schedule, training=Training(lr_scheduler_interval="step")
    )
    seen = []

    class Rates(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"] / 3e-3)

    make_trainer(tmp_path, max_steps=4, callbacks=[Rates()]).fit(model, DigitsDataModule())
    assert seen == pytest.approx(factors[:4], abs=1e-4)
    assert model.trainer.optimizers[1].param_groups[0]["lr"] / 3e-3 == pytest.approx(factors[4], abs=1e-4)


def test_resume_lr_replaces_the_saved_rate_for_both_networks(tmp_path):
    no_schedule = ["--model.d_lr_scheduler", "null", "--model.g_lr_scheduler", "null"]
    first = cli(digits_args(tmp_path, "--trainer.max_epochs", "1", *no_schedule))
    ckpt = str(Path(first.trainer.log_dir, "checkpoints", "last.ckpt"))
    resumed = cli(
        digits_args(
            tmp_path,
            "--trainer.max_epochs",
            "2",
            *no_schedule,
            "--model.training.resume_lr",
            "0.0005",
            "--ckpt_path",
            ckpt,
        )
    )
    assert [opt.param_groups[0]["lr"] for opt in resumed.trainer.optimizers] == [0.0005, 0.0005]
    assert resumed.trainer.global_step == 8  # and it trained on


def test_resume_lr_lets_a_schedule_continue_from_it(tmp_path):
    first = cli(digits_args(tmp_path, "--trainer.max_epochs", "2", "--trainer.callbacks.init_args.save_top_k=-1"))
    ckpt = str(Path(first.trainer.log_dir, "checkpoints", "epoch=0-step=4.ckpt"))
    # the digits decay: 3e-3 to 1 % over 2 epochs; after epoch 1 the rate is 3e-3 * 0.505
    resumed = cli(
        digits_args(tmp_path, "--trainer.max_epochs", "2", "--model.training.resume_lr", "0.0005", "--ckpt_path", ckpt)
    )
    for opt in resumed.trainer.optimizers:  # the same shape, scaled: 0.0005 * 0.01 / 0.505 at the end
        assert opt.param_groups[0]["lr"] == pytest.approx(0.0005 * 0.01 / 0.505)
