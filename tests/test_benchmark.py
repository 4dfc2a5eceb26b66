"""The MNIST benchmark, 80 batches of it, so that it cannot rot (``pytest -m slow``)."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_mnist_benchmark_runs_and_reports(tmp_path, mnist_dir, precision):
    command = [sys.executable, str(ROOT / "benchmarks" / "mnist.py"), "--data-dir", str(mnist_dir)]
    command += ["--epochs", "2", "--seeds", "1", "--precision", precision, "--plain-batches", "20"]
    command += ["--ema-decays", "0.9999", "--out", str(tmp_path), "--", "--data.batches_per_epoch=40"]
    command += [
        "--model.d_loss.init_args.consistency=lit_ssgan.consistency.PiModel"
    ]  # the plain twin's consistency pass too
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    assert "package / plain loop" in out and "test error (EMA weights)" in out
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert [e["epoch"] for e in result["curve"]] == [1, 2]
    assert result["batches_per_epoch"] == 40 and result["epoch_seconds"] > 0
    assert 0 <= result["test_error_ema"] < 0.9  # 80 batches already beat chance
    assert all(0 <= e["val_error"] < 0.95 for e in result["curve"])  # what settings are chosen by
    # an extra average with the config's own decay is the EMA callback's average, evaluated again
    assert all(e["test_error_ema_0.9999"] == e["test_error_ema"] for e in result["curve"])
    assert all(0 <= e["val_error_ema_0.9999"] < 0.95 for e in result["curve"])
    assert result["overhead_ratio"] > 0
    # the run's draw, and the record that trains on it again (--data.split_from)
    with open(result["labeled_examples_csv"], newline="") as f:
        recorded = [row[1:] for row in csv.reader(f) if row[0] == "labeled"]
    assert recorded == result["labeled_examples"] and len(recorded) == 100
    confusion = torch.tensor(result["test_confusion"])  # rows: the true class of the 10 000 test digits
    assert confusion.sum() == 10_000
    assert 1 - confusion.trace() / 10_000 == pytest.approx(result["test_error_final_checkpoint"], abs=1e-6)
    assert (Path(result["labeled_examples_csv"]).parent / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_an_interrupted_benchmark_run_goes_on_with_resume_to_the_same_curve(tmp_path, mnist_dir):
    command = [sys.executable, str(ROOT / "benchmarks" / "mnist.py"), "--data-dir", str(mnist_dir)]
    command += ["--epochs", "2", "--seeds", "1", "--plain-batches", "0"]
    small = ["--data.batches_per_epoch=10", "--trainer.limit_val_batches=2"]

    def run(out, *more):
        subprocess.run(command + ["--out", str(out), *more], cwd=ROOT, capture_output=True, timeout=600, check=True)
        return json.loads((out / "ssgan-32-true-e2-s1.json").read_text())["curve"]

    whole = run(tmp_path / "whole", "--", *small)
    # stopped after its first epoch, as if killed there: a checkpoint and one record remain
    assert len(run(tmp_path / "cut", "--", *small, "--trainer.max_epochs=1")) == 1
    resumed = run(tmp_path / "cut", "--resume", "--", *small)
    for record in whole + resumed:
        del record["seconds"]
    assert [e["epoch"] for e in resumed] == [1, 2]
    assert resumed == whole  # exact resume: the same errors, epoch by epoch


@pytest.mark.slow
def test_speed_benchmark_reports_the_ratios_the_targets_are_set_on(mnist_dir):
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--data-dir", str(mnist_dir)]
    command += ["--batches", "30", "--repeats", "1"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    assert out.startswith("CPU: ")
    lines = out.split("ratios:")[1].strip().splitlines()
    ratios = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in lines}
    assert set(ratios) == {
        "package fp32 / naive loop",
        "package bf16 / package fp32",
        "package / plain twin, fp32",
        "package / plain twin, bf16",
    }
    assert all(r > 0 for r in ratios.values())


def test_the_device_scripts_compile_option_is_one_fit_takes():
    """benchmarks/device.sh's compiled stage passes COMPILE_ARGS to fit; a renamed option would only
    show on the GPU machine, as "n/a (option missing)" in its table."""
    script = (ROOT / "benchmarks" / "device.sh").read_text()
    found = re.search(r"COMPILE_ARGS:-(--\S+?)\}", script)
    assert found is not None
    option = found.group(1)
    command = [sys.executable, "-m", "lit_ssgan", "fit", "--config", "configs/mnist.yaml", option, "--print_config"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    key, value = option.removeprefix("--").split("=")
    assert f"{key.rsplit('.', 1)[-1]}: {value}" in out.stdout
