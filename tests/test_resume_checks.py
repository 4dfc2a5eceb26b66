"""A resume keeps the run it resumes: other data (options, draw, images) is refused before any
step; a finished run says so and trains nothing; a validation a checkpoint cut short, or had not
begun, runs again, with the epoch's line and scores of an unbroken run."""

import csv
import os
import re
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback

from lit_ssgan.checkpoint import find_last_checkpoint
from lit_ssgan.cli import cli, main
from lit_ssgan.data import DigitsDataModule
from lit_ssgan.errors import ConfigError
from lit_ssgan.resuming import RunFinished
from tests.helpers import EVERY_2_STEPS, assert_same_weights, digits_args

#: an epoch line's fields, without the time (which no resume keeps)
EPOCH_LINE = re.compile(r"^(Epoch \d+ \[\(\d+, \d+\) images),\s+[\d.]+s\](.*)$")


def epoch_lines(out: str) -> list[str]:
    return ["".join(EPOCH_LINE.match(line).groups()) for line in out.splitlines() if line.startswith("Epoch ")]


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "lightning_logs").iterdir())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The root of a finished 2-epoch digits run with checkpoints every 2 batches (4 an epoch)."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    cli(digits_args(root, "--trainer.max_epochs", "2", *EVERY_2_STEPS))
    return root


@pytest.mark.parametrize(
    "option, said",
    [
        (["--data.init_args.batch_size", "10"], "data.batch_size is 20 in the checkpoint's run but 10 in this one"),
        (["--data.init_args.data_seed", "1"], "data.data_seed is 0 in the checkpoint's run but 1 in this one"),
        (["--data.init_args.batches_per_epoch", "5"], "data.batches_per_epoch is 4 in the checkpoint's run but 5"),
        (  # fewer test images: more training images (the digits' pool is the rest)
            ["--data.init_args.test_size", "400"],
            "the data gives 1397 training images (its unlabeled set) where the checkpoint's run had 1297",
        ),
    ],
)
def test_a_mid_epoch_resume_on_other_data_is_refused_in_one_line_before_any_step(run, option, said):
    middle = run / "lightning_logs" / "version_0" / "checkpoints" / "epoch=1-step=6.ckpt"
    before = versions(run), sorted(p.name for p in middle.parent.iterdir())
    with pytest.raises(SystemExit) as refused:
        main(digits_args(run, "--trainer.max_epochs", "3", "--ckpt_path", str(middle), *option))
    message = str(refused.value.code)
    assert message.startswith(f"lit-ssgan: error: --ckpt_path {middle}: {said}") and "\n" not in message
    assert message.endswith("or start a new run without --ckpt_path")
    assert (versions(run), sorted(p.name for p in middle.parent.iterdir())) == before  # nothing written, nor left


def test_a_resume_on_another_record_of_labeled_examples_is_refused(run, tmp_path):
    """The options the same, but ``split_from`` a record with one labeled example swapped for
    another of its class: the draw the checkpoint records is not this run's."""
    with open(run / "lightning_logs" / "version_0" / "labeled_examples.csv", newline="") as f:
        rows = list(csv.reader(f))
    taken, first, pool = {row[1] for row in rows[1:]}, rows[1], DigitsDataModule()
    assert first[0] == "labeled"
    labels = pool.load_train_pool()[1]
    names = zip(pool.example_names("pool", np.arange(len(labels))), labels, strict=True)
    first[1] = next(name for name, y in names if pool.label_name(y) == first[2] and name not in taken)
    record = tmp_path / "swapped.csv"
    with open(record, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    last = find_last_checkpoint(run)
    with pytest.raises(ConfigError, match=r"other labeled examples than the checkpoint's run had \(1 of 50 differ"):
        cli(digits_args(run, "--trainer.max_epochs", "3", "--ckpt_path", str(last), "--data.split_from", str(record)))
    assert versions(run) == ["version_0"]


@pytest.mark.parametrize(
    "limit, said",
    [
        ([], "has trained 2 epochs of --trainer.max_epochs 2 (8 steps); nothing to train. To train it longer, "
         "resume with a larger --trainer.max_epochs"),
        (["--trainer.max_steps", "8", "--trainer.max_epochs", "5"], "has trained 8 steps of --trainer.max_steps 8 "
         "(2 epochs); nothing to train. To train it longer, resume with a larger --trainer.max_steps"),
    ],
)  # fmt: skip
def test_resuming_a_finished_run_says_so_in_one_line_and_neither_trains_nor_tests(run, capsys, limit, said):
    last = find_last_checkpoint(run)  # written after the last batch: the run's end followed it
    with pytest.raises(RunFinished) as finished:
        main(digits_args(run, "--trainer.max_epochs", "2", *limit, "--ckpt_path", "last", "--test_after_fit", "true"))
    assert finished.value.code == 0  # done, as after the run itself: a retry loop stops
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-ssgan:")]
    assert lines == [f"lit-ssgan: the run is finished: {last} {said}"]
    assert versions(run) == ["version_0"] and not list(run.rglob("test.json"))


def test_a_finished_run_trains_on_with_a_larger_max_epochs(run, tmp_path):
    longer = cli(digits_args(tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", str(find_last_checkpoint(run))))
    assert longer.trainer.global_step == 12


class TermDuringFirstValidation(Callback):
    """Sends this process a SIGTERM in the middle of the first epoch's validation (the schedulers'
    state then records no step yet)."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.current_epoch == 0 and batch_idx == 3 and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize(
    "stop", ["tests.test_resume_checks.TermDuringFirstValidation", "tests.helpers.TermDuringValidation"]
)
def test_a_validation_cut_short_by_sigterm_runs_again_on_resume_as_in_an_unbroken_run(tmp_path, capsys, stop):
    args = ["--trainer.max_epochs", "3", "--data.eval_batch_size", "20"]  # 10 validation batches
    with pytest.raises(SystemExit) as stopped:
        cli(digits_args(tmp_path / "stopped", *args, f"--trainer.callbacks+={stop}"))
    assert stopped.value.code == 143
    cut = epoch_lines(capsys.readouterr().out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = cli(digits_args(tmp_path / "stopped", *args, "--ckpt_path", "last"))
    lines = cut + epoch_lines(capsys.readouterr().out)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    straight = cli(digits_args(tmp_path / "straight", *args))
    unbroken = epoch_lines(capsys.readouterr().out)
    assert lines == unbroken and len(unbroken) == 3  # each epoch's images, t-loss and validation scores
    assert "(80, 200) images" in unbroken[0]
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())


@pytest.mark.parametrize(
    "every, checkpoint",
    [([], "epoch=1-step=8.ckpt"), (["--trainer.check_val_every_n_epoch", "2"], "epoch=0-step=4.ckpt")],
)
def test_a_resume_from_after_an_epochs_last_batch_validates_that_epoch_as_an_unbroken_run(
    tmp_path, capsys, every, checkpoint
):
    """The checkpoint is written after the last batch, before the validation that follows it (or,
    with none due, the epoch's end): a resume runs them. The epoch line goes before the checkpoint
    callback, as a Trainer built with both orders them."""
    args = ["--trainer.max_epochs", "3", *every, "--epoch_line", "false"]
    line = "--trainer.callbacks+=lit_ssgan.callbacks.EpochLine"
    straight = cli(digits_args(tmp_path / "a", *EVERY_2_STEPS, line, *args))
    unbroken = epoch_lines(capsys.readouterr().out)
    middle = Path(straight.trainer.log_dir, "checkpoints", checkpoint)
    resumed = cli(digits_args(tmp_path / "b", line, *args, "--ckpt_path", str(middle)))
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    assert epoch_lines(capsys.readouterr().out) == unbroken[1:]  # epochs 2 and 3
