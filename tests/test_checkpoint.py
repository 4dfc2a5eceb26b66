"""Checkpoint files: atomic writes, safe loading, finding the last one, warm starts from matching
tensors, and refusing a checkpoint that does not fit the config."""

import re
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_ssgan import DigitsDataModule, SemiSupervisedGAN
from lit_ssgan.checkpoint import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    SafeCheckpointIO,
    UnsafeCheckpointError,
    find_last_checkpoint,
    load_checkpoint_file,
    load_matching_weights,
)
from lit_ssgan.cli import cli, main
from lit_ssgan.errors import CheckpointError
from lit_ssgan.training import Training
from tests.helpers import digits_args, make_model, make_trainer


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # what a signal does in the middle of torch.save

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # nothing left aside


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_is_refused_naming_the_file(tmp_path, checkpoint, damage):
    bad = tmp_path / f"{damage}.ckpt"
    raw = checkpoint.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"this is not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match=f"{damage}.ckpt"):
        cli(digits_args(tmp_path, "--trainer.max_steps", "4", "--ckpt_path", str(bad)))


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_needs_arbitrary_unpickling_is_refused_and_runs_nothing(tmp_path, checkpoint):
    marker = tmp_path / "code-ran"
    unsafe = tmp_path / "unsafe.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    contents["extra"] = Payload(marker)
    torch.save(contents, unsafe)
    with pytest.raises(UnsafeCheckpointError, match="unsafe.ckpt.*unpickling"):
        cli(digits_args(tmp_path, "--trainer.max_steps", "4", "--ckpt_path", str(unsafe)))
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint_file(unsafe)
    assert not marker.exists()


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        load_checkpoint_file(tmp_path / "nowhere.ckpt")


def refused(*args: str) -> str:
    """The one line the ``lit-ssgan`` command exits with (status 1)."""
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("lit-ssgan: error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_folder_as_ckpt_path_is_named_a_folder_with_what_to_give(tmp_path, checkpoint, subcommand):
    folder = checkpoint.parent
    message = refused(*digits_args(tmp_path, "--ckpt_path", str(folder), subcommand=subcommand))
    assert re.fullmatch(
        f"lit-ssgan: error: checkpoint {re.escape(str(folder))} is a folder, not a file: give a checkpoint file "
        rf"\(a \.ckpt, e\.g\. {re.escape(str(folder))}/[^ ]+\.ckpt\), or last \(lit-ssgan's --ckpt_path last: the "
        r"newest last\.ckpt under the run's root\)",
        message,
    ), message
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty is a folder, not a file: give a checkpoint file \(a \.ckpt\)"):
        load_checkpoint_file(tmp_path / "empty")


def not_a_checkpoint(path: Path, kind: str) -> Path:
    """A file that torch.save did not write, or a TorchScript model."""
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "an ONNX model":
        onnx = pytest.importorskip("onnx")
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [], [])
        onnx.save(onnx.helper.make_model(graph, producer_name="pytorch"), path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        with warnings.catch_warnings():  # torch deprecates TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    return path


@pytest.mark.parametrize(
    "kind, name, says",
    [
        ("random bytes", "random.ckpt", "is not a torch checkpoint (it is neither torch's zip format nor a pickle)"),
        (
            "an ONNX model",
            "classifier.onnx",
            "is not a torch checkpoint (it is neither torch's zip format nor a pickle; an .onnx file is an exported "
            "classifier): give a .ckpt file that lit-ssgan fit wrote",
        ),
        ("empty", "empty.ckpt", "is not a torch checkpoint (it is empty)"),
        (
            "a TorchScript model",
            "classifier.pt",
            "is a TorchScript model (as lit-ssgan export writes), not a checkpoint",
        ),
    ],
)
def test_a_file_torch_did_not_write_is_not_a_torch_checkpoint(tmp_path, kind, name, says):
    path = not_a_checkpoint(tmp_path / name, kind)
    message = refused(*digits_args(tmp_path, "--ckpt_path", str(path), subcommand="test"))
    assert message.startswith(f"lit-ssgan: error: {path} ") and says in message, message
    for load in (load_checkpoint_file, lambda p: SemiSupervisedGAN.load_from_checkpoint(str(p))):
        with pytest.raises(CorruptCheckpointError) as failed:
            load(path)
        assert says in str(failed.value) and "weights_only" not in str(failed.value)


def test_ckpt_path_last_with_no_checkpoint_yet_starts_from_scratch(tmp_path):
    with pytest.raises(FileNotFoundError, match="no last.ckpt"):  # but never tests untrained weights
        cli(digits_args(tmp_path, "--ckpt_path", "last", subcommand="test"))
    run = cli(digits_args(tmp_path, "--trainer.max_steps", "2", "--ckpt_path", "last"))
    assert run.trainer.global_step == 2
    tested = cli(digits_args(tmp_path, "--ckpt_path", "last", subcommand="test"))
    assert Path(tested.trainer.ckpt_path) == find_last_checkpoint(tmp_path)  # the fit's last.ckpt
    assert "test/acc" in tested.trainer.callback_metrics


def test_a_checkpoint_of_other_networks_is_refused_naming_both_shapes_and_its_data(tmp_path, checkpoint):
    model = make_model(hidden=(48, 32))
    with pytest.raises(CheckpointMismatchError) as refused:
        make_trainer(tmp_path, max_steps=4).fit(model, DigitsDataModule(), ckpt_path=checkpoint)
    message = str(refused.value)
    assert "discriminator.hidden.0.0.v is (64, 64) in the checkpoint but (48, 64)" in message
    assert "trained on DigitsDataModule (images (1, 8, 8), 10 classes)" in message


def test_a_digits_checkpoint_resumed_with_the_mnist_config_names_both_data_modules(tmp_path, checkpoint, mnist_dir):
    # the checkpoint's own network config wins (LightningCLI reads it), but the data decides the
    # input size: 28x28 MNIST images do not fit a network trained on 8x8 digits
    args = ["fit", "--config", str(Path(__file__).parents[1] / "configs" / "mnist.yaml")]
    args += [
        "--data.data_dir",
        str(mnist_dir),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--ckpt_path",
        str(checkpoint),
    ]
    with pytest.raises(CheckpointMismatchError) as refused:
        cli(args)
    message = str(refused.value)
    assert "(64, 64) in the checkpoint but (64, 784)" in message
    assert "DigitsDataModule (images (1, 8, 8)" in message and "MNISTDataModule (images (1, 28, 28)" in message
    assert not list(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))


class NotATensor:
    pass


def test_weights_from_copies_the_tensors_whose_names_and_shapes_match(tmp_path):
    source = make_model()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    narrower = make_model(hidden=(64, 16))
    loaded = load_matching_weights(narrower, path)
    assert "discriminator.hidden.0.0.v" in loaded and "discriminator.hidden.1.0.v" not in loaded  # 32 vs 16 units
    first = "discriminator.hidden.0.0.v"
    assert torch.equal(narrower.state_dict()[first], source.state_dict()[first])

    # in fit, from scratch: applied before the first step (lr 0, so the step changes nothing)
    frozen = partial(torch.optim.Adam, lr=0.0)
    training = Training(weights_from=str(path), data_dependent_init=True)
    model = make_model(training=training, d_optimizer=frozen, g_optimizer=frozen)
    make_trainer(tmp_path, max_steps=1).fit(model, DigitsDataModule())
    for name, tensor in source.discriminator.state_dict().items():
        assert torch.equal(model.discriminator.state_dict()[name], tensor), name

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": source.state_dict(), "extra": NotATensor()}, unsafe)
    with pytest.raises(UnsafeCheckpointError, match="unsafe.pt"):
        load_matching_weights(narrower, unsafe)
    torch.save({"unrelated": torch.zeros(2)}, tmp_path / "unrelated.pt")
    with pytest.raises(ValueError, match="weights_from: no tensor in .*unrelated.pt"):
        load_matching_weights(narrower, tmp_path / "unrelated.pt")
