"""``lit-ssgan draws``: two tiny draws of the digits config and their labels-only twins, the table
against each run's files, the study run again after a stop, a draw resumed from its checkpoint,
and the refusals before any draw starts."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from lightning.pytorch import Callback

from lit_ssgan.cli import main
from lit_ssgan.draws import COLOURS, DrawsFailedError, draws, validation_curve
from lit_ssgan.draws import runner as draws_runner
from lit_ssgan.errors import ConfigError, MissingFileError
from tests.helpers import CONFIGS, EVERY_2_STEPS, ROOT, SMALL_NETWORKS, write_png

CONFIG = CONFIGS / "digits.yaml"
# 2 epochs of 4 batches of 20 with the small networks; a checkpoint every 2 batches, all kept
OPTIONS = [
    *SMALL_NETWORKS,
    "--data.init_args.batch_size=20",
    "--data.init_args.batches_per_epoch=4",
    "--trainer.max_epochs=2",
    "--trainer.enable_model_summary=false",
    *EVERY_2_STEPS,
    "--trainer.callbacks+=tests.test_draws.SecondApart",  # after the checkpoint's options, which go to the last
]
KINDS = {False: "digits", True: "digits-labels-only"}


class SecondApart(Callback):
    """Sleeps a second when ``fit`` ends. tensorboardX names an event file by the second it was made
    and overwrites one of the same name: a fit under a second long would lose its file (its
    validation scores) to the test's, made the same second."""

    def on_fit_end(self, trainer, pl_module) -> None:
        time.sleep(1.0)


def run_folder(out: Path, seed: int, twin: bool = False) -> Path:
    return out / KINDS[twin] / f"seed-{seed}"


def version(out: Path, seed: int, twin: bool = False, number: int = 0) -> Path:
    return run_folder(out, seed, twin) / "lightning_logs" / f"version_{number}"


def table_rows(out: Path) -> dict[str, dict[str, str]]:
    """draws.csv's rows by their first cell (the seed, mean, std)."""
    with (out / "draws.csv").open(newline="") as f:
        return {row["seed"]: row for row in csv.DictReader(f)}


def epoch_lines(log: Path) -> list[dict[str, float]]:
    """The scores of EpochLine's lines in a draw's log, in order."""
    return [
        {f"val/{name}": float(value) for name, value in re.findall(r"(acc|error): ([0-9.]+)", line)}
        for line in log.read_text().splitlines()
        if line.startswith("Epoch ")
    ]


def run(out: Path, fit_config: Path = CONFIG, **kwargs) -> tuple[Path, str]:
    """``draws`` of the two draws with their twins into ``out``; its table and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        table = draws(fit_config, out, draws=2, labels_only=True, fit_options=OPTIONS, **kwargs)
    return table, printed.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    """The study, run as on a GPU whose free memory falls by 3 000 MiB with the first draw, on
    one core a draw: the first draw alone until its first epoch ends, then two at once."""
    readings = iter([80_000.0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(draws_runner, "_cuda_available", lambda: True)
        patch.setattr(draws_runner, "_gpu_free_mib", lambda: next(readings, 77_000.0))
        patch.setattr(draws_runner, "CORES_PER_DRAW", len(draws_runner._cores()) // 2 or 1)
        out = tmp_path_factory.mktemp("study") / "out"
        table, printed = run(out)
    return out, printed


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rerun(study, tmp_path_factory) -> tuple[Path, str, dict[str, dict[str, int]]]:
    """The study copied and stopped: draw 2 never started; its twin stopped after 2 of its 8 batches
    (its test.json and later checkpoints gone, last.ckpt the one of batch 2); then run again on a
    CPU (one at a time). Also the files of draw 1 and its twin before the run."""
    out = tmp_path_factory.mktemp("rerun") / "out"
    shutil.copytree(study[0], out)
    shutil.rmtree(run_folder(out, 2))
    stopped = version(out, 2, twin=True)
    (stopped / "test.json").unlink()
    checkpoints = stopped / "checkpoints"
    for path in checkpoints.glob("epoch=*.ckpt"):
        if path.name != "epoch=0-step=2.ckpt":
            path.unlink()
    shutil.copyfile(checkpoints / "epoch=0-step=2.ckpt", checkpoints / "last.ckpt")
    before = {str(twin): files_of(run_folder(out, 1, twin)) for twin in (False, True)}
    _, printed = run(out)
    return out, printed, before


# -- the table ---------------------------------------------------------------------------------


def test_the_tables_figures_are_each_runs_test_json_labeled_examples_and_last_validation(study):
    out, _ = study
    rows = table_rows(out)
    assert [seed for seed in rows] == ["1", "2", "mean", "std"]
    for seed in (1, 2):
        row = rows[str(seed)]
        for twin, prefix in ((False, ""), (True, "labels_only/")):
            folder = version(out, seed, twin)
            scores = json.loads((folder / "test.json").read_text())["scores"]
            assert set(scores) == {"test/acc", "test/error"}
            for name, value in scores.items():
                assert float(row[prefix + name]) == value  # the same float, to the last bit
            labeled = (folder / "labeled_examples.csv").read_bytes()
            assert row[f"{prefix}labeled_sha256"] == hashlib.sha256(labeled).hexdigest()
            last = epoch_lines(run_folder(out, seed, twin) / "fit.log")[-1]  # printed to 3 decimals
            assert {k: float(row[prefix + k]) for k in last} == pytest.approx(last, abs=5e-4)
        # the draw's identity beside the table; the twin trained on the same labeled examples
        copied = out / f"seed-{seed}-labeled_examples.csv"
        assert copied.read_bytes() == (version(out, seed) / "labeled_examples.csv").read_bytes()
        assert row["labeled_sha256"] == row["labels_only/labeled_sha256"]
    assert rows["1"]["labeled_sha256"] != rows["2"]["labeled_sha256"]  # two draws, two sets of labels
    markdown = (out / "draws.md").read_text()
    assert f"| 1 | `{rows['1']['labeled_sha256'][:12]}` |" in markdown
    assert "| seed | labeled examples (sha256) | val/" in markdown
    assert "| labels only: labeled examples (sha256) | labels only: val/" in markdown
    assert f"{float(rows['1']['test/error']):.4f}" in markdown


def test_the_mean_and_the_sample_std_of_each_score(study):
    out, _ = study
    rows = table_rows(out)
    for column in rows["mean"]:
        if column == "seed" or "sha256" in column or column.startswith("ratio"):
            continue
        a, b = float(rows["1"][column]), float(rows["2"][column])
        assert float(rows["mean"][column]) == pytest.approx((a + b) / 2, abs=1e-12)
        # of two values, the sample std is |a - b| / sqrt(2) (the population std: |a - b| / 2)
        assert float(rows["std"][column]) == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-12)
    errors = [float(rows[s]["test/error"]) for s in "12"]
    shown = f"{statistics.fmean(errors):.4f} ± {statistics.stdev(errors):.4f}"
    assert shown in (out / "draws.md").read_text()
    assert f"2 draws: test/error {shown}" in study[1]


def test_the_labels_only_twin_turns_every_unlabeled_term_off_and_the_ratio_is_of_the_test_errors(study):
    out, printed = study
    for twin, weights in ((False, (0.5, 0.0, None)), (True, (0.0, 0.0, None))):
        config = yaml.safe_load((version(out, 1, twin) / "config.yaml").read_text())
        loss = config["model"]["d_loss"]["init_args"]
        assert (loss["unlabeled_weight"], loss["unlabeled_entropy_weight"], loss["consistency"]) == weights
    rows = table_rows(out)
    ratios = []
    for seed in "12":
        ratio = float(rows[seed]["test/error"]) / float(rows[seed]["labels_only/test/error"])
        assert float(rows[seed]["ratio test/error"]) == pytest.approx(ratio, rel=1e-12)
        ratios.append(ratio)
    of_means = float(rows["mean"]["test/error"]) / float(rows["mean"]["labels_only/test/error"])
    assert float(rows["mean"]["ratio test/error"]) == pytest.approx(of_means, rel=1e-12)
    assert of_means != pytest.approx(statistics.fmean(ratios), rel=1e-3)  # not the mean of the ratios
    assert rows["std"]["ratio test/error"] == ""
    assert f"ratio of the means {of_means:.3f}" in printed


def test_the_curves_are_each_draws_validation_scores_by_epoch(study):
    out, _ = study
    for seed in (1, 2):
        for twin in (False, True):
            curve = validation_curve(run_folder(out, seed, twin))
            lines = epoch_lines(run_folder(out, seed, twin) / "fit.log")
            assert [epoch for epoch, _ in curve] == [1, 2]
            for (_, scores), printed in zip(curve, lines, strict=True):
                assert {k: scores[k] for k in printed} == pytest.approx(printed, abs=5e-4)
    picture = cv2.imread(str(out / "curves.png"))
    assert picture.shape == (520, 900, 3)
    for colour in COLOURS[:2]:  # a line of each seed's colour
        assert (picture == colour).all(axis=2).sum() > 50


def test_on_a_gpu_the_first_draw_runs_alone_and_its_memory_sizes_how_many_run_at_once(study):
    _, printed = study
    lines = printed.splitlines()
    starts = [i for i, line in enumerate(lines) if ": started" in line]
    sized = next(i for i, line in enumerate(lines) if "draws at once on the GPU" in line)
    assert lines[starts[0]].startswith("seed 1: started") and starts[0] < sized < starts[1]
    assert "2 draws at once on the GPU: the first took 2.9 GiB" in lines[sized]
    running = most = 0
    for line in lines:
        running += (": started" in line) - (": done" in line)
        most = max(most, running)
    assert most == 2 and printed.count(": done in") == 4


# -- run again ---------------------------------------------------------------------------------


def test_a_study_run_again_reruns_nothing_of_a_finished_draw(rerun):
    out, printed, before = rerun
    for twin in (False, True):
        assert files_of(run_folder(out, 1, twin)) == before[str(twin)]  # not a file written or touched
    assert "seed 1: finished before, not rerun: test/error" in printed
    assert "seed 1, labels only: finished before, not rerun: test/error" in printed
    assert printed.count(": started") == 1 and "one draw at a time" in printed


def test_a_study_run_again_completes_the_draw_that_never_started(rerun, study):
    out, printed, _ = rerun
    assert f"seed 2: started (log: {run_folder(out, 2) / 'fit.log'})" in printed
    # the same draw as in the study run through: the same labels and scores
    was, now = version(study[0], 2), version(out, 2)
    assert (now / "labeled_examples.csv").read_bytes() == (was / "labeled_examples.csv").read_bytes()
    assert (
        json.loads((now / "test.json").read_text())["scores"] == json.loads((was / "test.json").read_text())["scores"]
    )
    assert (out / "draws.csv").read_text() == (study[0] / "draws.csv").read_text()


def test_a_stopped_draw_resumes_from_its_last_checkpoint(rerun, study):
    out, printed, _ = rerun
    assert f"seed 2, labels only: resumed from its last.ckpt (log: {run_folder(out, 2, True) / 'fit.log'})" in printed
    log = (run_folder(out, 2, True) / "fit.log").read_text()
    first, again = log.split("== lit-ssgan draws: resumed: ")
    assert "--ckpt_path=last" in again.splitlines()[0] and "Restored all states from the checkpoint" in again
    # batches 3 to 8 only: its new run folder has the checkpoints from batch 4 on, none of batch 2
    resumed = version(out, 2, twin=True, number=1)
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == [
        "epoch=0-step=4.ckpt",
        "epoch=1-step=6.ckpt",
        "epoch=1-step=8.ckpt",
        "last.ckpt",
    ]
    record = json.loads((resumed / "test.json").read_text())
    uninterrupted = json.loads((version(study[0], 2, twin=True) / "test.json").read_text())
    assert record["global_step"] == 8 and record["scores"] == uninterrupted["scores"]  # as if never stopped


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fit_config": CONFIGS / "nothing.yaml"}, MissingFileError, "--fit_config .*nothing.yaml: no such file"),
        ({"draws": 0}, ConfigError, "--draws must be 1 or more, got 0"),
        ({"draws": [3, 1, 3]}, ConfigError, "--draws: seed 3 given twice"),
        ({"parallel": 0}, ConfigError, "--parallel must be 1 or more, got 0"),
        ({"out": "FILE/out"}, ConfigError, "--out: .*FILE/out cannot be written: .* is a file"),
        ({"fit_options": ["--seed_everything=3"]}, ConfigError, "--fit_options: --seed_everything is set by"),
        ({"fit_options": ["--ckpt_path", "x"]}, ConfigError, "--fit_options: --ckpt_path is set by"),
    ],
)
def test_what_is_refused_before_the_config_is_built(tmp_path, kwargs, error, message):
    (tmp_path / "FILE").write_text("")
    given = {"fit_config": CONFIG, "out": tmp_path / "out", **kwargs}
    given["out"] = tmp_path / given["out"]
    with pytest.raises(error, match=message):
        draws(**given)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_data_options_fit_refuses_at_setup_are_refused_before_any_draw_starts(tmp_path):
    for name in ("cat", "dog"):
        write_png(tmp_path / "labeled" / name / "0.png", np.zeros((8, 8), np.uint8))
    out, labeled = tmp_path / "out", f"--data.init_args.labeled_dir={tmp_path / 'labeled'}"
    with pytest.raises(ConfigError, match="lit-ssgan fit refuses them: fit needs data.unlabeled_dir, or data.num_la"):
        draws(CONFIGS / "image_folder_cpu.yaml", out, draws=1, fit_options=[labeled])
    assert not out.exists()


def test_a_study_of_other_fit_options_is_refused_in_the_same_out(study, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(study[0], out)
    before = files_of(out)
    with pytest.raises(ConfigError, match=r"--out .* holds draws of another study .*and these fit options"):
        draws(CONFIG, out, draws=2, fit_options=[*OPTIONS, "--trainer.max_epochs=3"])
    assert files_of(out) == before


def test_the_config_with_other_comments_is_the_same_study_and_with_another_value_another(study, tmp_path):
    """The study's identity is the config as parsed: notes added to it orphan no finished draw."""
    out = tmp_path / "out"
    shutil.copytree(study[0], out)
    runs = {str(twin): files_of(run_folder(out, 1, twin)) for twin in (False, True)}
    noted = tmp_path / "noted" / CONFIG.name
    noted.parent.mkdir()
    noted.write_text("# my notes: draws 1-2\n\n" + CONFIG.read_text().replace("\n", "  \n", 3) + "# the end\n")
    _, printed = run(out, fit_config=noted)
    assert printed.count("finished before, not rerun") == 4 and ": started" not in printed
    assert {str(twin): files_of(run_folder(out, 1, twin)) for twin in (False, True)} == runs
    assert (out / "draws.csv").read_text() == (study[0] / "draws.csv").read_text()

    changed = tmp_path / "changed" / CONFIG.name
    changed.parent.mkdir()
    changed.write_text(CONFIG.read_text().replace("input_noise: 0.2", "input_noise: 0.25", 1))
    before = files_of(out)
    with pytest.raises(ConfigError, match=rf"another study .*--fit_config {changed} as it is now would mix"):
        run(out, fit_config=changed)
    assert files_of(out) == before


def test_the_command_refuses_a_fit_option_in_one_line_before_any_draw_starts(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["draws", "--fit_config", str(CONFIG), "--out", str(out), "--labels_only", "true"]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--fit_options+=--trainer.max_epochz=3"])
    message = str(refused.value.code)
    assert message.startswith(f"lit-ssgan draws: error: --fit_config {CONFIG} --fit_options [--trainer.max_epochz=3]")
    assert message.endswith("lit-ssgan fit refuses them: unrecognized arguments: --trainer.max_epochz=3")
    assert "\n" not in message and not out.exists() and capsys.readouterr().out == ""


def test_the_command_reads_a_finished_study_and_prints_its_table(study, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(study[0], out)
    args = ["draws", "--fit_config", str(CONFIG), "--out", str(out), "--draws", "[2]", "--labels_only", "false"]
    main([*args, "--fit_options", json.dumps(OPTIONS)])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("seed 2: finished before, not rerun: test/error")
    assert printed[1].startswith("1 draw: test/error") and printed[-1] == f"table written to {out / 'draws.md'}"
    rows = table_rows(out)
    assert list(rows) == ["2", "mean", "std"] and "labels_only/test/error" not in rows["2"]
    assert rows["mean"]["test/error"] == rows["2"]["test/error"] and rows["std"]["test/error"] == ""


def test_a_failed_draw_is_reported_with_its_logs_last_line_and_the_others_still_run(tmp_path, capsys):
    out = tmp_path / "out"
    # draw 1 stopped with a torn last.ckpt: its resume fails; draw 2 runs all the same
    torn = version(out, 1) / "checkpoints" / "last.ckpt"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(DrawsFailedError, match=r"1 of 2 draws failed \(seed 1: .*fit.log\)"):
        draws(CONFIG, out, draws=2, fit_options=[*OPTIONS, "--trainer.max_epochs=1"])
    printed = capsys.readouterr().out
    assert re.search(rf"seed 1: failed after \d+ s \(exit status 1\): lit-ssgan: error: .*{torn}", printed)
    assert "seed 2: done in" in printed and list(table_rows(out)) == ["1", "2", "mean", "std"]


def test_a_ctrl_c_stops_the_running_draw_starts_no_other_and_exits_130(tmp_path):
    out = tmp_path / "out"
    code = "import sys; from lit_ssgan.draws import draws; draws(sys.argv[1], sys.argv[2], 2, fit_options=sys.argv[3:])"
    command = [sys.executable, "-c", code, str(CONFIG), str(out), *OPTIONS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    assert process.stdout.readline() == "one draw at a time\n"
    assert process.stdout.readline().startswith("seed 1: started")
    process.send_signal(signal.SIGINT)  # the draws run in sessions of their own: only through the command
    printed, errors = process.communicate(timeout=300)
    assert process.returncode == 130
    assert re.match(r"seed 1: stopped after \d+ s \(exit status -?\d+\); ", printed) and "seed 2" not in printed
    assert errors.splitlines()[-1].startswith("lit-ssgan draws: stopped (Ctrl-C); 0 of 2 draws finished")
    assert not run_folder(out, 2).exists() and (out / "draws.csv").is_file()
