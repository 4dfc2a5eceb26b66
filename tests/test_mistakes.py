"""The mistakes a new user makes, and a run stopped from outside, tried as the user tries them: the
``lit-ssgan`` command, in process. Each case gets the behaviour a user expects, or one short line
naming the option, folder, file or row, before the work, with exit status 1 and nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from lightning.pytorch import Callback

from lit_ssgan.checkpoint import find_last_checkpoint
from lit_ssgan.cli import cli, main
from lit_ssgan.data import DigitsDataModule
from lit_ssgan.data.decoding import SKIP_HINT
from lit_ssgan.errors import ConfigError
from lit_ssgan.losses import FeatureMatching
from lit_ssgan.models import Generator, MLPDiscriminator
from lit_ssgan.module import SemiSupervisedGAN
from lit_ssgan.sample_grid import main as samples_main
from lit_ssgan.training import Training
from tests.helpers import (
    CONFIGS,
    ROOT,
    digits_args,
    folder_args,
    make_model,
    make_trainer,
    signalled_after_first_epoch,
    write_png,
)


def refused(*args: str) -> str:
    """The one line ``lit-ssgan`` exits with (status 1) for a user's mistake."""
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    message = stopped.value.code
    assert isinstance(message, str), f"exit status {message}, not a user's error"  # sys.exit(str): status 1
    assert message.startswith("lit-ssgan: error: ") and "\n" not in message, message
    return message


def folder_fit(folders: Path, root: Path, *extra: str) -> list[str]:
    """A 2-batch ``fit`` of ``configs/image_folder.yaml`` on the digits folders, 8x8 grey."""
    return folder_args(
        folders, root, "--data.image_size", "8", "--data.batch_size", "20", "--trainer.max_steps", "2", *extra
    )


@pytest.mark.parametrize("subcommand", ["test", "predict", "validate"])
def test_evaluating_without_a_checkpoint_is_refused_unless_meant(tmp_path, subcommand):
    message = refused(*digits_args(tmp_path, subcommand=subcommand))
    assert f"{subcommand} needs --ckpt_path" in message and "--untrained true" in message
    assert not list(tmp_path.rglob("*"))  # nothing written: no run folder, no report
    run = cli(digits_args(tmp_path, "--untrained", "true", subcommand=subcommand))  # on purpose: it runs
    if subcommand == "predict":
        rows = (Path(run.trainer.log_dir) / "predictions.csv").read_text().splitlines()
        assert len(rows) == 1 + 500  # the header, and every test digit
    else:
        prefix = "val" if subcommand == "validate" else "test"
        assert 0.0 <= run.trainer.callback_metrics[f"{prefix}/acc"].item() < 0.5  # untrained: near chance


@pytest.mark.parametrize(
    "where, says",
    [
        (lambda tmp: "/proc/predictions.csv", "--predictions_csv: /proc/predictions.csv cannot be written"),
        (lambda tmp: str(tmp), "is a folder; give the file to write"),
        (lambda tmp: str(tmp / "a_file" / "predictions.csv"), "a_file is a file"),
    ],
)
def test_an_unwritable_predictions_csv_is_refused_before_predicting(tmp_path, checkpoint, where, says):
    (tmp_path / "a_file").write_text("")
    message = refused(
        *digits_args(
            tmp_path, "--ckpt_path", str(checkpoint), "--predictions_csv", where(tmp_path), subcommand="predict"
        )
    )
    assert says in message


def test_a_default_root_dir_that_is_a_file_is_refused_naming_the_option(tmp_path):
    (tmp_path / "runs").write_text("")
    message = refused(*digits_args(tmp_path / "runs"))
    assert message == f"lit-ssgan: error: --trainer.default_root_dir: {tmp_path / 'runs'} is a file, not a folder"


@pytest.mark.parametrize("option", ["--config", "-c", "--trainer"])
def test_a_config_file_in_another_encoding_or_empty_is_refused_naming_it(tmp_path, option):
    config = tmp_path / "run.yaml"
    config.write_bytes("trainer:\n  default_root_dir: runs/été\n".encode("latin-1"))
    assert refused("fit", option, str(config)) == f"lit-ssgan: error: {option} {config}: not a YAML text file (UTF-8)"
    assert refused("fit", f"{option}={config}") == f"lit-ssgan: error: {option} {config}: not a YAML text file (UTF-8)"
    config.write_text("\n")
    assert refused("fit", option, str(config)) == f"lit-ssgan: error: {option} {config}: the file is empty"


def test_test_after_fit_without_a_test_folder_is_refused_before_training(folders, tmp_path):
    message = refused(*folder_fit(folders, tmp_path, "--test_after_fit", "true"))
    assert "--test_after_fit needs data.test_dir" in message
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_test_class_unknown_to_training_is_refused_before_training(folders, tmp_path):
    test = tmp_path / "test"
    write_png(test / "3" / "a.png", np.zeros((8, 8), np.uint8))
    write_png(test / "eleven" / "b.png", np.zeros((8, 8), np.uint8))
    message = refused(*folder_fit(folders, tmp_path / "run", "--data.test_dir", str(test), "--test_after_fit", "true"))
    assert "data.test_dir: unknown labels ['eleven']" in message
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_a_class_whose_only_images_all_went_to_validation_is_refused_naming_it(folders, tmp_path):
    labeled = tmp_path / "labeled"
    for c in range(3):
        for i in range(6 if c else 1):  # class 0 has one image, which val_size takes (data_seed 4)
            write_png(labeled / f"c{c}" / f"{i}.png", np.full((8, 8), 40 * c + i, np.uint8))
    args = folder_fit(folders, tmp_path / "run", "--data.labeled_dir", str(labeled), "--data.val_size", "5")
    message = refused(*args, "--data.data_seed", "4", "--test_after_fit", "false")
    assert "class 'c0' has no training images left: all 1 went to the validation split" in message


def test_batches_of_one_are_refused_where_batch_norm_needs_two(tmp_path):
    message = refused(*digits_args(tmp_path, "--data.batch_size", "1"))
    assert (
        message == "lit-ssgan: error: data.batch_size 1: the generator's batch norm needs batches of 2 or more images"
    )


def flat_labeled(tmp_path: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        write_png(tmp_path / "flat" / name, np.full((8, 8), 20 * i, np.uint8))
    return tmp_path / "flat"


def test_a_csv_row_with_an_empty_label_is_refused_by_row(folders, tmp_path):
    flat = flat_labeled(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "labels.csv").write_text("file,label\na.png,cat\nb.png,\nc.png,dog\n")
    args = folder_fit(
        folders, tmp_path / "run", "--data.labeled_dir", str(flat), "--data.labels_csv", str(tmp_path / "labels.csv")
    )
    assert refused(*args).endswith("labels.csv, row 3: 'b.png' has an empty label")


def test_a_csv_without_a_header_line_keeps_its_first_row(folders, tmp_path, recwarn):
    flat = flat_labeled(tmp_path, [f"{i}.png" for i in range(6)])
    (tmp_path / "labels.csv").write_text("".join(f"{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(6)))
    labels = ["--data.labeled_dir", str(flat), "--data.labels_csv", str(tmp_path / "labels.csv")]
    dm = cli(folder_fit(folders, tmp_path / "run", *labels, "--test_after_fit", "false")).datamodule
    assert dm.labeled is not None and len(dm.labeled) == 6 and dm.labeled.labels.bincount().tolist() == [3, 3]
    assert any("has no header line: its first row (0.png,dog) is read as data" in str(w.message) for w in recwarn)


def test_a_csv_in_another_encoding_is_refused_naming_the_file_and_the_byte(folders, tmp_path):
    flat = flat_labeled(tmp_path, ["a.png", "b.png"])
    (tmp_path / "labels.csv").write_bytes("file,label\na.png,chat\nb.png,chien méchant\n".encode("latin-1"))
    args = folder_fit(
        folders, tmp_path / "run", "--data.labeled_dir", str(flat), "--data.labels_csv", str(tmp_path / "labels.csv")
    )
    message = refused(*args)
    assert f"{tmp_path / 'labels.csv'} is not UTF-8 text: byte 0xe9 on line 3" in message and "CSV UTF-8" in message


def encoded(suffix: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def test_webp_images_are_read_and_other_files_counted_in_one_line(folders, tmp_path, recwarn):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for i in range(25):
        (unlabeled / f"{i}.webp").write_bytes(encoded(".webp", np.full((8, 8), 10 * i, np.uint8)))
    for name in ("a.gif", "b.gif", "notes.txt", ".DS_Store"):
        (unlabeled / name).write_bytes(b"GIF89a" if name.endswith(".gif") else b"x")
    only = ["--data.unlabeled_dir", str(unlabeled), "--data.unlabeled_includes_labeled", "false"]
    dm = cli(folder_fit(folders, tmp_path / "run", *only, "--test_after_fit", "false")).datamodule
    assert dm.unlabeled is not None and len(dm.unlabeled) == 25
    assert sorted({int(v) for v in dm.unlabeled.images[:, 0, 0, 0]}) == [10 * i for i in range(25)]  # WEBP read
    (said,) = [str(w.message) for w in recwarn if "not images" in str(w.message)]
    assert "skipped 3 files that are not images this reads (.gif, .txt)" in said  # .DS_Store: not counted
    assert "a.gif" in said and ".webp" in said


def test_symlinked_folders_are_followed_once_without_looping(folders, tmp_path):
    real = tmp_path / "real"
    for i in range(30):
        write_png(real / f"{i}.png", np.full((8, 8), i, np.uint8))
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    (unlabeled / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(unlabeled, target_is_directory=True)  # a link back up: must not loop
    only = ["--data.unlabeled_dir", str(unlabeled), "--data.unlabeled_includes_labeled", "false"]
    dm = cli(folder_fit(folders, tmp_path / "run", *only, "--test_after_fit", "false")).datamodule
    assert dm.unlabeled is not None and len(dm.unlabeled) == 30


def test_a_truncated_jpeg_is_named_before_training_or_skipped_on_request(folders, tmp_path, recwarn):
    unlabeled = tmp_path / "unlabeled"
    for i in range(25):
        write_png(unlabeled / f"{i}.png", np.full((8, 8), i, np.uint8))
    whole = encoded(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (unlabeled / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # a download cut short
    args = folder_fit(folders, tmp_path / "run", "--data.unlabeled_dir", str(unlabeled), "--test_after_fit", "false")
    message = refused(*args)
    assert message.endswith("cut.jpg is truncated: it ends before its end-of-image marker " + SKIP_HINT)
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    main([*args, "--data.skip_bad_images", "true"])
    assert any("skipped 1 unreadable images, e.g. " in str(w.message) and "cut.jpg" in str(w.message) for w in recwarn)


def test_a_labeled_folder_with_one_class_or_one_level_too_deep_is_named(folders, tmp_path):
    deep = tmp_path / "labeled" / "animals"
    for kind in ("cat", "dog"):
        for i in range(3):
            write_png(deep / kind / f"{i}.png", np.zeros((8, 8), np.uint8))
    message = refused(*folder_fit(folders, tmp_path / "run", "--data.labeled_dir", str(tmp_path / "labeled")))
    labeled = tmp_path / "labeled"
    assert (
        f"data.labeled_dir {labeled}: a classifier needs two classes or more, found only the class 'animals'" in message
    )
    assert f"its folder holds the subfolders cat, dog: one level too deep? Give data.labeled_dir {deep}" in message
    one = tmp_path / "one"
    write_png(one / "cat" / "a.png", np.zeros((8, 8), np.uint8))
    message = refused(*folder_fit(folders, tmp_path / "run", "--data.labeled_dir", str(one)))
    assert message.endswith("found only the class 'cat'")


def test_a_checkpoint_of_other_data_used_with_the_folder_config_is_named(folders, tmp_path, checkpoint):
    args = ["predict", "--config", str(CONFIGS / "image_folder.yaml"), "--ckpt_path", str(checkpoint)]
    message = refused(*args, "--data.predict_dir", str(folders / "new"), "--trainer.default_root_dir", str(tmp_path))
    assert (
        f"--ckpt_path {checkpoint}: the checkpoint records no class names (it was trained on DigitsDataModule"
        in message
    )


def test_predict_from_the_last_checkpoint_takes_the_class_names_it_records(folders, tmp_path):
    main(folder_fit(folders, tmp_path))
    predict = ["--ckpt_path", "last", "--data.predict_dir", str(folders / "new"), "--data.image_size", "8"]
    main(folder_args(folders, tmp_path, *predict, "--predictions_csv", str(tmp_path / "p.csv"), subcommand="predict"))
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "file,prediction," + ",".join(str(d) for d in range(10))


@pytest.mark.parametrize(
    "out, says",
    [
        ("samples", "--out: samples must end in .png or .jpg"),
        (".", "--out: . must end in"),
        ("/proc/samples.png", "--out: /proc/samples.png cannot be written"),
        ("a_file/samples.png", "a_file is a file"),
    ],
)
def test_a_samples_picture_that_cannot_be_written_is_refused_naming_out(tmp_path, checkpoint, monkeypatch, out, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as stopped:
        samples_main(["--ckpt_path", str(checkpoint), "--out", out])
    assert isinstance(stopped.value.code, str) and says in stopped.value.code and "\n" not in stopped.value.code
    samples_main(["--ckpt_path", str(checkpoint), "--out", "grid.png"])
    assert (tmp_path / "grid.png").is_file()


def test_a_fit_that_fails_before_its_first_step_leaves_no_run_folder(tmp_path):
    no_end = ["--trainer.max_epochs", "-1", "--trainer.max_steps", "-1"]  # the config's decay needs an end
    assert "max_epochs or trainer.max_steps" in refused(*digits_args(tmp_path / "new", *no_end))
    assert not (tmp_path / "new").exists()  # made by the run, removed with it
    (tmp_path / "mine").mkdir()
    refused(*digits_args(tmp_path / "mine", *no_end, "--trainer.logger", "true"))
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())  # the user's folder stays
    main(digits_args(tmp_path / "mine", "--trainer.max_steps", "1"))  # and the next run is version_0
    assert (tmp_path / "mine" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_a_run_that_fails_after_its_first_steps_keeps_its_folder(tmp_path):
    diverging = ["--model.discriminator", "tests.helpers.DivergingDiscriminator"]
    diverging += [
        "--model.discriminator.init_args.hidden",
        "[64, 32]",
        "--model.discriminator.init_args.nan_after",
        "9",
    ]
    diverging += ["--trainer.callbacks.init_args.every_n_train_steps", "1"]
    assert "non-finite loss at step 3" in refused(*digits_args(tmp_path, *diverging, networks=[]))
    assert list(tmp_path.rglob("*.ckpt"))  # the last good checkpoint stays, and its folder


def test_the_folder_config_says_nothing_that_is_not_the_users_to_act_on(folders, tmp_path):
    args = folder_fit(folders, tmp_path, "--test_after_fit", "false")
    i = args.index("--data.train_transforms")
    del args[i : i + 2]  # the config's own augmentation, whose defaults once made jsonargparse warn
    command = [sys.executable, "-m", "lit_ssgan", *args]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "JsonargparseWarning" not in out.stderr, out.stderr  # its dump of albumentations' (0.0, 0.0)
    assert "litlogger" not in out.stderr  # Lightning's advertisement for its cloud logger


def test_a_validation_class_unknown_to_training_is_refused_before_training(folders, tmp_path):
    write_png(tmp_path / "val" / "eleven" / "a.png", np.zeros((8, 8), np.uint8))
    message = refused(
        *folder_fit(folders, tmp_path / "run", "--data.val_dir", str(tmp_path / "val"), "--test_after_fit", "false")
    )
    assert "data.val_dir: unknown labels ['eleven']; the classes are" in message
    assert not (tmp_path / "run").exists()


def test_weights_from_naming_no_file_is_refused_before_the_work_naming_the_option(tmp_path, checkpoint):
    missing = tmp_path / "nowhere.ckpt"
    message = refused(*digits_args(tmp_path / "new", "--model.training.weights_from", str(missing)))
    assert message == f"lit-ssgan: error: model.training.weights_from: {missing} does not exist"
    assert not (tmp_path / "new").exists()
    message = refused(*digits_args(tmp_path / "new", "--model.training.weights_from", str(tmp_path)))
    assert message.endswith(f"weights_from: {tmp_path} is a folder; give the checkpoint or state-dict file")
    # a resume reads no weights_from (the file may be gone since the run began): it goes on
    root = checkpoint.parents[3]
    resumed = cli(
        digits_args(
            root, "--trainer.max_steps", "3", "--ckpt_path", "last", "--model.training.weights_from", str(missing)
        )
    )
    assert resumed.trainer.global_step == 3
    with pytest.raises(ConfigError, match=f"^model.training.weights_from: {missing} does not exist$"):
        Training(weights_from=str(missing)).weights_file()  # what a run from scratch reads


def test_weights_from_naming_no_file_is_refused_naming_the_option_when_a_python_fit_starts(tmp_path):
    missing = tmp_path / "nowhere.ckpt"
    model = make_model(training=Training(weights_from=str(missing)))  # built: the file is read by fit
    with pytest.raises(ConfigError, match=f"^model.training.weights_from: {missing} does not exist$"):
        make_trainer(tmp_path).fit(model, DigitsDataModule(batch_size=20, batches_per_epoch=2))


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """SIGINT with Python's own handler (KeyboardInterrupt), as in a terminal, whatever the test
    runner was started with (a background job ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _python_sigint() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)


#: the console command with a Ctrl-C where its import of torch begins (a finder that raises it)
CTRL_C_IN_THE_IMPORTS = """
import sys
from importlib.abc import MetaPathFinder
class CtrlC(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
import lit_ssgan.__main__ as console
getattr(console, sys.argv[1])()
"""


@pytest.mark.parametrize(("entry", "prog"), [("main", "lit-ssgan"), ("samples", "lit-ssgan-samples")])
def test_ctrl_c_while_the_command_imports_torch_is_one_line_and_status_130(entry, prog):
    """The seconds of importing torch and Lightning come before any of the command's own handling:
    a Ctrl-C typed in them was a traceback of the import machinery."""
    command = [sys.executable, "-c", CTRL_C_IN_THE_IMPORTS, entry, "fit", "--help"]
    out = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "LIT_SSGAN_TRACEBACK": ""}
    )
    assert (out.returncode, out.stderr) == (130, f"{prog}: stopped by Ctrl-C\n")


def test_ctrl_c_during_fit_stops_like_sigterm_with_a_checkpoint_and_exit_status_130(tmp_path):
    args = digits_args(tmp_path, "--trainer.max_epochs", "50", "--data.init_args.batches_per_epoch", "10")
    returncode, stderr = signalled_after_first_epoch(args, signal.SIGINT, preexec_fn=_python_sigint)
    assert returncode == 130, stderr[-3000:]  # 128 + SIGINT: a retry loop that reruns on 143 stops
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    (said,) = [line for line in stderr.splitlines() if line.startswith("lit-ssgan:")]
    last = find_last_checkpoint(tmp_path)
    assert last is not None, stderr[-3000:]
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 500
    assert said.startswith(f"lit-ssgan: stopped by Ctrl-C after step {step} (")
    assert said.endswith(f"; checkpoint written to {last}. Resume with the same command and --ckpt_path last")


def test_ctrl_c_from_a_terminal_reaches_the_loader_workers_too_and_still_stops_with_a_checkpoint(tmp_path):
    """A terminal sends Ctrl-C to the whole process group, the loader workers included: they leave it
    to the main process, which stops as above (a worker killed mid-fetch ended the run in "DataLoader
    worker exited unexpectedly", before its checkpoint)."""
    args = digits_args(tmp_path, "--trainer.max_epochs", "50", "--data.init_args.batches_per_epoch", "40")
    args += ["--data.init_args.num_workers", "2"]
    returncode, stderr = signalled_after_first_epoch(args, signal.SIGINT, preexec_fn=_python_sigint, group=True)
    assert returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert "DataLoader worker" not in stderr, stderr[-3000:]
    assert find_last_checkpoint(tmp_path) is not None, stderr[-3000:]


class CtrlC(Callback):
    """Presses Ctrl-C (a SIGINT to this process) twice after the second batch of epoch 2 (or at
    the end of epoch 1), and once more while the checkpoint of that stop is being saved."""

    def __init__(self, at_epoch_end: bool = False) -> None:
        self.at_epoch_end = at_epoch_end
        self.pressed = False

    def press(self, times: int) -> None:
        self.pressed = True
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1 and not self.at_epoch_end:
            self.press(2)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0 and self.at_epoch_end:
            self.press(2)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.pressed:
            self.press(1)


@pytest.mark.parametrize("at_epoch_end, step, where", [(False, 6, "epoch 2, batch 2"), (True, 4, "end of epoch 1")])
def test_ctrl_c_again_while_stopping_and_saving_changes_nothing(
    tmp_path, capsys, ctrl_c_interrupts, at_epoch_end, step, where
):
    args = digits_args(tmp_path, "--trainer.max_epochs", "5", "--trainer.callbacks+=tests.test_mistakes.CtrlC")
    try:
        cli([*args, "--trainer.callbacks.init_args.at_epoch_end", str(at_epoch_end).lower()])
    except BaseException as exception:  # a KeyboardInterrupt let through fails this test, not the session
        stopped = exception
    else:
        pytest.fail("Ctrl-C did not stop the run")
    assert isinstance(stopped, SystemExit) and stopped.code == 130, repr(stopped)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step  # complete, and of the stop
    (said,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-ssgan:")]
    assert said == (
        f"lit-ssgan: stopped by Ctrl-C after step {step} ({where}); checkpoint written to {last}. "
        "Resume with the same command and --ckpt_path last"
    )


class CtrlCBeforeTraining(Callback):
    """Presses Ctrl-C while the run is being set up, before its first step."""

    def setup(self, trainer, pl_module, stage) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_before_training_says_so_exits_130_and_leaves_no_run_folder(tmp_path):
    args = digits_args(tmp_path / "run", "--trainer.callbacks+=tests.test_mistakes.CtrlCBeforeTraining")
    out = subprocess.run(
        [sys.executable, "-m", "lit_ssgan", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_python_sigint,
    )
    assert out.returncode == 130, out.stderr[-3000:]
    said = [line for line in out.stderr.splitlines() if "Ctrl-C" in line or "KeyboardInterrupt" in line]
    assert said == [
        "lit-ssgan: fit stopped by Ctrl-C; it had not begun to train: nothing to save. Run the same command to start "
        "it again"
    ], out.stderr[-3000:]  # and not Lightning's "Detected KeyboardInterrupt, attempting graceful shutdown"
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.max_epoc", "3"],  # --trainer.max_epochs
        ["draws", "--fit_conf", str(CONFIGS / "digits.yaml"), "--out", "study"],  # --fit_config
        ["export", "--ckpt_pat", "x.ckpt"],  # --ckpt_path
    ],
)
def test_an_option_spelt_short_is_refused_not_taken_for_the_one_it_begins(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    said = f"{stopped.value.code}\n{capsys.readouterr().err}"
    assert stopped.value.code != 0 and f"unrecognized arguments: {args[-4 if args[0] == 'draws' else -2]}" in said
    assert list(tmp_path.iterdir()) == []  # nothing ran


class PlainGenerator(Generator):
    """A generator without batch norm: batches of one are the user's to choose."""

    def __init__(self) -> None:
        super().__init__((1, 8, 8), 4)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (1, 8, 8)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def test_the_pull_away_term_on_batches_of_one_is_refused_before_a_step(tmp_path):
    model = SemiSupervisedGAN(
        MLPDiscriminator(10, (1, 8, 8), hidden=(16,)), PlainGenerator(), g_loss=FeatureMatching(pull_away_weight=1.0)
    )
    trainer = make_trainer(tmp_path, max_steps=2)
    with pytest.raises(ConfigError, match=r"^data.batch_size 1: model.g_loss's pull_away_weight compares pairs"):
        trainer.fit(model, DigitsDataModule(batch_size=1))
    assert trainer.global_step == 0
    model.g_loss = FeatureMatching()  # without the term, batches of one train
    make_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule(batch_size=1))
