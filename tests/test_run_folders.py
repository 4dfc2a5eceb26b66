"""Run folders: runs sharing a ``default_root_dir`` each write into a ``version_N`` of their own,
also when started together; a run refused before it has done anything leaves no folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_ssgan.callbacks import run_folder
from lit_ssgan.callbacks.run_folder import claim_run_folder
from lit_ssgan.cli import main
from tests.helpers import ROOT, ddp_run, digits_args


class TwoRunsAtOnce(TensorBoardLogger):
    """TensorBoard's logger that, once it has its version, waits for the other run's logger to have
    one before going on to make or write anything: two runs' choices of a folder then happen as if
    at the same instant, however the processes are scheduled."""

    def __init__(self, save_dir: str, barrier: str) -> None:
        super().__init__(save_dir)
        self.barrier = Path(barrier)
        self._waited = False

    @property
    def version(self) -> int | str:
        version = super().version
        if not self._waited:
            self._waited = True
            (self.barrier / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(self.barrier.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        return version


def test_two_fits_started_together_on_one_root_each_write_a_version_folder_of_their_own(tmp_path):
    root, barrier = tmp_path / "runs", tmp_path / "barrier"
    barrier.mkdir()
    logger = [
        "--trainer.logger",
        "tests.test_run_folders.TwoRunsAtOnce",
        "--trainer.logger.init_args.save_dir",
        str(root),
    ]
    logger += ["--trainer.logger.init_args.barrier", str(barrier)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "lit_ssgan", *digits_args(root, "--trainer.max_steps", str(steps), *logger)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for steps in (2, 3)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
    folders = sorted((root / "lightning_logs").iterdir())
    assert [f.name for f in folders] == ["version_0", "version_1"]
    steps = []
    for folder in folders:  # each folder one run's: its config, and checkpoints of that run alone
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
            f"epoch=0-step={config['trainer']['max_steps']}.ckpt",
            "last.ckpt",
        ]
        last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == config["trainer"]["max_steps"]
        steps.append(last["global_step"])
    assert sorted(steps) == [2, 3]


def test_a_version_folder_another_run_makes_after_this_ones_choice_is_left_to_it(tmp_path, monkeypatch):
    """The race itself, in one process: the number is chosen, then another run makes that folder."""
    root = tmp_path / "lightning_logs"
    (root / "version_0").mkdir(parents=True)
    choose = run_folder.next_version

    def chosen_then_taken(folder: Path) -> int:
        version = choose(folder)
        (folder / f"version_{version}").mkdir()
        (folder / f"version_{version}" / "config.yaml").write_text("the other run's\n")
        return version

    monkeypatch.setattr(run_folder, "next_version", chosen_then_taken)
    # two loggers on one root share a folder, as in Lightning; one given its version keeps it
    tensorboard, csv, named = TensorBoardLogger(tmp_path), CSVLogger(tmp_path), TensorBoardLogger(tmp_path, version=7)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=[tensorboard, csv, named], enable_progress_bar=False)
    assert claim_run_folder(trainer) == [root / "version_2"]
    assert tensorboard.version == csv.version == 2 and named.version == 7
    assert tensorboard.log_dir == csv.log_dir == str(root / "version_2")
    assert (root / "version_1" / "config.yaml").read_text() == "the other run's\n"
    assert sorted(p.name for p in root.iterdir()) == ["version_0", "version_1", "version_2"]


def refused(*args: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    assert isinstance(stopped.value.code, str), stopped.value.code
    return stopped.value.code


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_a_refused_validate_test_or_predict_leaves_no_run_folder(tmp_path, checkpoint, subcommand):
    new, mine = tmp_path / "new", tmp_path / "mine"
    no_test_set = ["--ckpt_path", str(checkpoint), "--data.init_args.test_size", "0"]
    # while the Trainer runs (the data module's checks, after Lightning made the log directory)
    assert "must be between 1 and" in refused(*digits_args(new, *no_test_set, subcommand=subcommand))
    assert not new.exists()
    mine.mkdir()
    refused(*digits_args(mine, *no_test_set, subcommand=subcommand))
    assert mine.is_dir() and not list(mine.iterdir())  # the user's folder stays, empty
    # before the Trainer runs: nothing made
    message = refused(*digits_args(new, "--ckpt_path", "last", subcommand=subcommand))
    assert message == f"lit-ssgan: error: --ckpt_path last: no last.ckpt under {new}"
    assert not new.exists()
    # and the next run is version_0
    main(digits_args(mine, "--ckpt_path", str(checkpoint), subcommand=subcommand))
    assert [p.name for p in (mine / "lightning_logs").iterdir()] == ["version_0"]


def test_runs_without_a_logger_each_write_a_version_folder_of_their_own(tmp_path, checkpoint):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "config.yaml").write_text("# the user's own notes\n")  # a root may hold the user's files
    no_logger = ("--trainer.logger", "false", "--trainer.max_steps", "2")
    main(digits_args(root, *no_logger))
    main(digits_args(root, *no_logger))
    runs = root / "lightning_logs"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    for run in runs.iterdir():  # each its own config and checkpoints, none in the root
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (root / "config.yaml").read_text() == "# the user's own notes\n"
    assert sorted(p.name for p in root.iterdir()) == ["config.yaml", "lightning_logs"]
    # --ckpt_path last resumes the newest run's last.ckpt, into a folder of its own again
    main(digits_args(root, "--trainer.logger", "false", "--trainer.max_steps", "4", "--ckpt_path", "last"))
    resumed = torch.load(runs / "version_2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    # a run refused while the Trainer runs leaves no folder behind
    no_test_set = ["--ckpt_path", str(checkpoint), "--data.init_args.test_size", "0", "--trainer.logger", "false"]
    assert "must be between 1 and" in refused(*digits_args(root, *no_test_set, subcommand="test"))
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1", "version_2"]


def test_a_ddp_run_without_a_logger_writes_a_version_folder_of_its_own(tmp_path):
    root = tmp_path / "runs"
    ema = "--trainer.callbacks+=lit_ssgan.callbacks.EMA"  # as the shipped image configs; it failed under DDP
    (root / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier run's: this one takes the next
    # the first process makes the folder; the second writes nothing of its own
    done = ddp_run(root, "--trainer.logger", "false", "--trainer.max_epochs", "1", "--test_after_fit", "true", ema)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = root / "lightning_logs"
    assert sorted(p.name for p in root.iterdir()) == ["lightning_logs"]
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    assert not list((runs / "version_0").iterdir())
    run = runs / "version_1"
    written = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert written == [
        "checkpoints/epoch=0-step=4.ckpt",
        "checkpoints/last.ckpt",
        "config.yaml",
        "confusion_matrix.png",
        "labeled_examples.csv",
        "per_class.csv",
        "samples/epoch=000.png",
        "test.json",
    ], written
