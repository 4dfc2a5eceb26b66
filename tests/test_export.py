"""``lit-ssgan export``: the classifier of a checkpoint as ONNX and TorchScript files that a process
without lit_ssgan runs to the predictions of ``lit-ssgan predict``; and what a bad call prints."""

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lit_ssgan
from lit_ssgan import SemiSupervisedGAN
from lit_ssgan.cli import cli, main
from lit_ssgan.export import description_path
from lit_ssgan.models import ConvDiscriminator, ConvGenerator, MLPDiscriminator
from lit_ssgan.models.layers import _WeightNorm, fold_weight_norm
from tests.helpers import CONFIGS, ROOT, digits_args, folder_args

RUNNER = Path(__file__).with_name("run_exported.py")
HAVE_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
FORMATS = [
    "torchscript",
    pytest.param("onnx", marks=pytest.mark.skipif(not HAVE_ONNX, reason='needs pip install "lit_ssgan[export]"')),
]


def run_exported(source: Path, *models: Path) -> dict:
    """The outputs of ``models`` on ``source`` (a folder or an .npy), from a fresh process that
    never imports lit_ssgan (tests/run_exported.py checks that it did not)."""
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(source), *map(str, models)], capture_output=True, text=True, cwd=source.parent
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def export(*args: str) -> None:
    main(["export", *args])


@pytest.mark.parametrize(
    "make", [lambda: ConvDiscriminator(10, (3, 32, 32), (16, 32), input_shift=2), MLPDiscriminator]
)
def test_folding_the_weight_norm_keeps_the_eval_outputs(make):
    torch.manual_seed(0)
    discriminator = make()
    for layer in discriminator.modules():
        if isinstance(layer, _WeightNorm):  # scales and biases away from their initial 1 and 0
            layer.g.data.uniform_(0.5, 2.0)
            layer.bias.data.normal_()
    folded = fold_weight_norm(discriminator)
    assert discriminator.training and not folded.training  # a copy: the original keeps its mode
    assert not any(isinstance(m, _WeightNorm) for m in folded.modules())
    x = torch.rand(5, *discriminator.image_shape)
    with torch.no_grad():
        want, got = discriminator.eval()(x), folded(x)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.features, want.features, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def predicted(folders, tmp_path_factory) -> tuple[Path, Path]:
    """A trained image-folder run (with EMA: configs/image_folder.yaml) and ``lit-ssgan predict``'s
    CSV of its test folder, in fp32: its checkpoint and the CSV."""
    tmp = tmp_path_factory.mktemp("exported")
    run = cli(folder_args(folders, tmp / "run", "--trainer.max_epochs", "3"))
    ckpt = Path(run.trainer.log_dir, "checkpoints", "last.ckpt")
    out = tmp / "predictions.csv"
    predict = ["--ckpt_path", str(ckpt), "--data.predict_dir", str(folders / "test"), "--predictions_csv", str(out)]
    cli(folder_args(folders, tmp / "run", *predict, subcommand="predict"))
    return ckpt, out


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_exported_classifier_gives_predicts_probabilities_without_lit_ssgan(predicted, folders, tmp_path, fmt):
    ckpt, csv_path = predicted
    model = tmp_path / f"classifier.{'onnx' if fmt == 'onnx' else 'pt'}"
    export("--ckpt_path", str(ckpt), "--format", fmt, "--out", str(model))
    meta = json.loads(description_path(model).read_text())
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert (meta["image_size"], meta["channels"], meta["input"]["range"]) == (16, 1, [0.0, 1.0])
    assert meta["weights"] == "EMA average" and meta["checkpoint"] == str(ckpt.resolve())
    assert meta["lit_ssgan_version"] == lit_ssgan.__version__

    result = run_exported(folders / "test", model)
    with open(csv_path, newline="") as f:
        rows = {row[0]: row for row in csv.reader(f)}
    header = rows.pop("file")
    assert sorted(rows) == result["files"] and len(rows) == 300
    want = np.array([[float(p) for p in rows[name][2:]] for name in result["files"]])
    got = np.array(result["outputs"][model.name])
    assert np.abs(got - want).max() <= 1e-5  # the CSV's 6 digits included
    names = np.array(header[2:])
    assert (names[got.argmax(1)] == np.array([rows[name][1] for name in result["files"]])).all()


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_each_shipped_config_exports(config, tmp_path, request):
    args = ["fit", "--config", str(CONFIGS / config), "--trainer.max_steps", "1", "--test_after_fit", "false"]
    args += ["--trainer.default_root_dir", str(tmp_path), "--trainer.num_sanity_val_steps", "0"]
    args += ["--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    if "mnist" in config:
        data = request.getfixturevalue("fashion_mnist_dir" if "fashion" in config else "mnist_dir")
        args += ["--data.data_dir", str(data)]
    if config.startswith("image_folder"):  # the conv pair, at the smallest size it takes
        folders = request.getfixturevalue("folders")
        args += ["--data.labeled_dir", str(folders / "labeled"), "--data.unlabeled_dir", str(folders / "unlabeled")]
        args += ["--data.image_size", "16"]
    ckpt = Path(cli(args).trainer.log_dir, "checkpoints", "last.ckpt")
    models = [tmp_path / "classifier.pt"] + ([tmp_path / "classifier.onnx"] if HAVE_ONNX else [])
    for model in models:
        export(
            "--ckpt_path",
            str(ckpt),
            "--format",
            "onnx" if model.suffix == ".onnx" else "torchscript",
            "--out",
            str(model),
        )

    model = SemiSupervisedGAN.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True).eval()
    x = torch.rand(7, *model.discriminator.image_shape, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "images.npy", x.numpy())
    with torch.no_grad():
        want = model(x).softmax(1).numpy()  # what predict gives, in fp32
    result = run_exported(tmp_path / "images.npy", *models)
    for model_file in models:
        np.testing.assert_allclose(np.array(result["outputs"][model_file.name]), want, rtol=0, atol=1e-5)


def test_a_regression_model_exports_its_values(tmp_path):
    run = cli(digits_args(tmp_path, "--trainer.max_steps", "2", "--model.discriminator.init_args.regression", "true"))
    ckpt = Path(run.trainer.log_dir, "checkpoints", "last.ckpt")
    export("--ckpt_path", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "grades.pt"))
    meta = json.loads(description_path(tmp_path / "grades.pt").read_text())
    assert meta["output"]["name"] == "values" and meta["class_names"] is None
    x = torch.rand(6, 1, 8, 8)
    model = SemiSupervisedGAN.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        want = model(x)
    got = torch.jit.load(str(tmp_path / "grades.pt"))(x)
    assert got.shape == (6,)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_an_export_without_an_out_writes_beside_the_checkpoint(checkpoint, capsys):
    export("--ckpt_path", str(checkpoint), "--format", "torchscript")
    assert checkpoint.with_suffix(".pt").is_file() and checkpoint.with_suffix(".pt.json").is_file()
    assert str(checkpoint.with_suffix(".pt")) in capsys.readouterr().out


def bad_calls(tmp_path: Path, checkpoint: Path) -> list[tuple[list[str], str]]:
    plain = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain)  # a checkpoint, not of lit-ssgan fit
    exported = tmp_path / "classifier.onnx"
    exported.write_bytes(b"\x08\x0a\x12\x07pytorch\x1a\x052.9.0")  # how an ONNX model begins
    return [
        (["--ckpt_path", str(tmp_path / "missing.ckpt")], "checkpoint not found: .*missing.ckpt"),
        (
            ["--ckpt_path", str(checkpoint.parent)],
            "checkpoint .*checkpoints is a folder, not a file: give a checkpoint",
        ),
        (["--ckpt_path", str(exported)], "classifier.onnx is not a torch checkpoint .*an .onnx file is an exported"),
        (["--ckpt_path", str(plain)], "weights.ckpt is not a checkpoint of lit-ssgan fit"),
        (["--ckpt_path", str(checkpoint), "--out", "/proc/classifier.onnx"], "--out: /proc/classifier.onnx cannot"),
        (
            ["--ckpt_path", str(checkpoint), "--format", "torchscript", "--out", "x.onnx"],
            "--out: x.onnx must end in .pt",
        ),
    ]


def test_a_bad_export_is_one_line_naming_the_file(checkpoint, tmp_path):
    for args, says in bad_calls(tmp_path, checkpoint):
        with pytest.raises(SystemExit) as exit_:  # its message: what Python prints, with exit status 1
            export(*args)
        message = exit_.value.code
        assert isinstance(message, str) and len(message.splitlines()) == 1, message
        assert message.startswith("lit-ssgan export: error: ") and re.search(says, message), message
    # the console script: status 1 and the line, no traceback
    done = subprocess.run(
        [sys.executable, "-m", "lit_ssgan", "export", "--ckpt_path", str(tmp_path / "missing.ckpt")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"lit-ssgan export: error: checkpoint not found: {tmp_path / 'missing.ckpt'}"
    ]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--ckpt_path", "x.ckpt", "--format", "onnxx"], "--format: expected one of 'onnx', 'torchscript'"),
        ([], "the following arguments are required: export.ckpt_path"),
        (["--ckpt_path", "x.ckpt", "--fmt", "onnx"], "unrecognized arguments: --fmt onnx"),
    ],
)
def test_an_export_command_line_that_does_not_parse_is_a_short_message_and_status_2(capsys, args, says):
    with pytest.raises(SystemExit) as exit_:
        export(*args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err


def test_folding_keeps_a_generators_eval_outputs():  # its output layer: a weight-normed transposed conv
    torch.manual_seed(0)
    generator = ConvGenerator((1, 16, 16), 8, 32)
    generator.upsample[-2].g.data.uniform_(0.5, 2.0)
    folded = fold_weight_norm(generator)
    assert not any(isinstance(m, _WeightNorm) for m in folded.modules())
    z = torch.rand(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(z), generator.eval()(z), rtol=1e-5, atol=1e-5)


def test_onnx_without_its_packages_says_what_to_install(checkpoint, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(SystemExit, match=r'needs onnxscript: pip install "lit_ssgan\[export\]"'):
        export("--ckpt_path", str(checkpoint), "--format", "onnx")


def test_the_console_script_has_the_export_command():
    done = subprocess.run(
        [sys.executable, "-m", "lit_ssgan", "export", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and "--format {onnx,torchscript}" in done.stdout


@pytest.mark.skipif(not HAVE_ONNX, reason='needs pip install "lit_ssgan[export]"')
def test_the_readmes_example_classifies_a_folder_as_predict_does(predicted, folders, tmp_path):
    ckpt, csv_path = predicted
    export("--ckpt_path", str(ckpt), "--out", str(tmp_path / "classifier.onnx"))
    readme = (ROOT / "README.md").read_text()
    example = readme.split("**Classifying a folder**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "classify.py").write_text(example)
    images = sorted((folders / "test").rglob("*.png"))[:40]
    done = subprocess.run(
        [sys.executable, "classify.py", *map(str, images)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    with open(csv_path, newline="") as f:
        predicted_class = {row[0]: row[1] for row in csv.reader(f)}
    lines = [line.split() for line in done.stdout.splitlines()]
    assert [(path, name) for path, name, _ in lines] == [
        (str(p), predicted_class[p.relative_to(folders / "test").as_posix()]) for p in images
    ]
