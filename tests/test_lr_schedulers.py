"""Learning-rate schedules that take the run's length from the Trainer."""

import pytest
import torch

from lit_ssgan.cli import cli
from lit_ssgan.lr_schedulers import LinearDecay
from tests.helpers import digits_args


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
    "extra, lr_after",
    [
        (["--trainer.max_epochs", "3"], 3e-3 * 0.01),  # 3 epochs: the decay ends with the run
        (["--trainer.max_epochs", "6", "--trainer.max_steps", "8"], 3e-3 * 0.01),  # 2 epochs of 4 batches
        # 6 batches: 2 epochs, the second cut short, whose end still steps the schedule
        (["--trainer.max_epochs", "6", "--trainer.max_steps", "6"], 3e-3 * 0.01),
        (["--trainer.max_epochs", "4", "--trainer.max_steps", "-1", "--trainer.limit_train_batches", "2"], 3e-3 * 0.01),
    ],
)
def test_the_digits_decay_follows_the_trainers_run_length(tmp_path, extra, lr_after):
    run = cli(digits_args(tmp_path, *extra))
    for opt in run.trainer.optimizers:
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_after)


def test_a_run_without_an_end_is_refused_for_a_schedule_that_spans_it(tmp_path):
    with pytest.raises(ValueError, match="max_epochs or trainer.max_steps"):
        cli(digits_args(tmp_path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1"))
