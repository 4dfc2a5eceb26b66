"""Learning-rate schedules that take the run's length from the Trainer."""

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_ssgan import DigitsDataModule
from lit_ssgan.cli import cli
from lit_ssgan.lr_schedulers import CosineDecay, InvDecay, LinearDecay, PolyDecay, StepDecay
from tests.helpers import RateRecorder, digits_args, make_model, make_trainer


def rates(schedule: LinearDecay, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.step()
    return out


def test_linear_decay_over_the_whole_run_matches_torchs_linear_lr():
    params = [torch.zeros(1, requires_grad=True)]
    ours = LinearDecay(torch.optim.SGD(params, lr=3e-3), end_factor=0.01)
    ours.set_run_length(60)
    torchs = torch.optim.lr_scheduler.LinearLR(torch.optim.SGD(params, lr=3e-3), 1.0, 0.01, total_iters=60)
    assert rates(ours, 61) == pytest.approx(rates(torchs, 61))


def test_linear_decay_over_the_last_n_steps_keeps_the_rate_until_then():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = LinearDecay(opt, decay_over=4)
    schedule.set_run_length(10)
    assert rates(schedule, 11) == pytest.approx([1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0])


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
    model = make_model(d_lr_scheduler=schedule, g_lr_scheduler=schedule, lr_scheduler_interval="step")
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
            tmp_path, "--trainer.max_epochs", "2", *no_schedule, "--model.resume_lr", "0.0005", "--ckpt_path", ckpt
        )
    )
    assert [opt.param_groups[0]["lr"] for opt in resumed.trainer.optimizers] == [0.0005, 0.0005]
    assert resumed.trainer.global_step == 8  # and it trained on


def test_resume_lr_lets_a_schedule_continue_from_it(tmp_path):
    first = cli(digits_args(tmp_path, "--trainer.max_epochs", "2", "--trainer.callbacks.init_args.save_top_k=-1"))
    ckpt = str(Path(first.trainer.log_dir, "checkpoints", "epoch=0-step=4.ckpt"))
    # the digits decay: 3e-3 to 1 % over 2 epochs; after epoch 1 the rate is 3e-3 * 0.505
    resumed = cli(
        digits_args(tmp_path, "--trainer.max_epochs", "2", "--model.resume_lr", "0.0005", "--ckpt_path", ckpt)
    )
    for opt in resumed.trainer.optimizers:  # the same shape, scaled: 0.0005 * 0.01 / 0.505 at the end
        assert opt.param_groups[0]["lr"] == pytest.approx(0.0005 * 0.01 / 0.505)
