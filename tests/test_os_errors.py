"""An OS error while writing (a full disk, permission denied, a read-only file system, a folder on
the way that is a file) ends the command in one line naming the file and the cause; for a
checkpoint, also the checkpoint on disk that is intact and how to resume from it. The part files
that a process killed while writing left are removed at the next start, and only those.

The faults are simulated where ``lit_ssgan.files`` opens and renames its part files: a full disk
by opening ``/dev/full`` instead (every write to it fails with ``ENOSPC``, as on a full disk)."""

from __future__ import annotations

import builtins
import errno
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import jsonargparse
import pytest
import torch

from lit_ssgan import files
from lit_ssgan.checkpoint import SafeCheckpointIO, load_checkpoint_file
from lit_ssgan.cli import cli, main
from lit_ssgan.errors import WriteError, exit_on_user_error
from lit_ssgan.export import SUFFIXES
from lit_ssgan.files import PART_NAME, STARTED, remove_stale_parts, write_json, writing
from tests.helpers import EVERY_2_STEPS, ROOT, digits_args

#: above any pid_max (2**22 at most on Linux): no process has it
DEAD_PID = 2**22 + 1
FULL = Path("/dev/full")
STRERROR = {code: os.strerror(code) for code in (errno.ENOSPC, errno.EACCES, errno.EROFS)}


class Fault:
    """From the ``after + 1``-th part file of ``lit_ssgan.files`` whose destination's name ends in
    ``suffix`` on, writing it fails: ``disk full`` (written to ``/dev/full``), ``permission
    denied`` (opening it), or ``read-only`` (renaming it into place)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, suffix: str, how: str, after: int = 0) -> None:
        if how == "disk full" and not FULL.exists():
            pytest.skip("no /dev/full to fill")
        self.suffix, self.after, self.count = suffix, after, 0
        real_open, real_replace = builtins.open, os.replace

        def opening(file, mode="r", *args, **kwargs):
            if how != "read-only" and self._hit(file):
                if how == "disk full":
                    return real_open(FULL, mode, *args, **kwargs)
                raise PermissionError(errno.EACCES, STRERROR[errno.EACCES], str(file))
            return real_open(file, mode, *args, **kwargs)

        def replacing(src, dst, *args, **kwargs):
            if how == "read-only" and self._hit(src):
                raise OSError(errno.EROFS, STRERROR[errno.EROFS], str(src), None, str(dst))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(files, "open", opening, raising=False)  # the builtin, in lit_ssgan.files only
        monkeypatch.setattr(os, "replace", replacing)

    def _hit(self, file: object) -> bool:
        match = PART_NAME.match(Path(str(file)).name)
        if match is None or not match["name"].endswith(self.suffix):
            return False
        self.count += 1
        return self.count > self.after


def refused(*args: str, prog: str = "lit-ssgan") -> str:
    """The one line the command exits with (status 1)."""
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    message = stopped.value.code
    assert isinstance(message, str), f"exit status {message}, not a user's error"  # sys.exit(str): status 1
    assert message.startswith(f"{prog}: error: ") and "\n" not in message, message
    return message


def parts_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if PART_NAME.match(p.name)]


@pytest.mark.parametrize(
    "how, cause",
    [("disk full", errno.ENOSPC), ("permission denied", errno.EACCES), ("read-only", errno.EROFS)],
)
def test_a_checkpoint_that_cannot_be_written_ends_fit_in_one_line_naming_it_and_the_intact_one(
    tmp_path, monkeypatch, how, cause
):
    # checkpoints after steps 2 (epoch=0-step=2.ckpt, last.ckpt) and 4: the one of step 4 fails
    fault = Fault(monkeypatch, ".ckpt", how, after=2)
    message = refused(*digits_args(tmp_path, *EVERY_2_STEPS, "--trainer.max_steps", "6"))
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    intact = folder / "last.ckpt"
    assert message == (
        f"lit-ssgan: error: cannot write the checkpoint {folder / 'epoch=0-step=4.ckpt'}: {STRERROR[cause]}. The "
        f"last complete checkpoint, {intact}, is intact: resume from it with the same command and --ckpt_path {intact}"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]  # no part file
    assert load_checkpoint_file(intact)["global_step"] == 2
    if how == "disk full":  # room again: the command the line gives resumes the run
        monkeypatch.undo()
        assert fault.count == 3
        resumed = cli(digits_args(tmp_path, *EVERY_2_STEPS, "--trainer.max_steps", "6", "--ckpt_path", str(intact)))
        assert resumed.trainer.global_step == 6


def test_a_checkpoint_folder_under_a_file_is_named_in_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    folder = tmp_path / "a_file" / "checkpoints"
    message = refused(
        *digits_args(tmp_path / "run", "--trainer.max_steps", "2", f"--trainer.callbacks.dirpath={folder}")
    )
    assert message == (
        f"lit-ssgan: error: cannot write the checkpoint {folder / 'epoch=0-step=2.ckpt'}: {tmp_path / 'a_file'} is a "
        f"file, not a folder. No complete checkpoint is in {folder} yet"
    )


def test_a_config_that_lightning_cannot_write_is_one_line_naming_it(tmp_path, monkeypatch):
    # Lightning writes config.yaml through jsonargparse, not lit_ssgan.files: a read-only file system there
    def read_only(self, cfg, path, *args, **kwargs):
        raise OSError(errno.EROFS, STRERROR[errno.EROFS], str(path))

    monkeypatch.setattr(jsonargparse.ArgumentParser, "save", read_only)
    message = refused(*digits_args(tmp_path, "--trainer.max_steps", "2"))
    config = tmp_path / "lightning_logs" / "version_0" / "config.yaml"
    assert message == f"lit-ssgan: error: cannot write {config}: Read-only file system"


def test_an_os_error_of_a_bug_keeps_its_traceback():
    with pytest.raises(FileNotFoundError), exit_on_user_error("lit-ssgan"):
        open(Path("/nonexistent") / "settings.yaml")  # noqa: SIM115 (no full disk, no read-only file system)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_that_cannot_be_written_is_one_line_naming_the_file(checkpoint, tmp_path, monkeypatch, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / "out" / f"classifier{SUFFIXES[fmt]}"
    Fault(monkeypatch, out.name, "disk full")
    message = refused(
        "export", "--ckpt_path", str(checkpoint), "--format", fmt, "--out", str(out), prog="lit-ssgan export"
    )
    assert message == f"lit-ssgan export: error: cannot write {out}: {STRERROR[errno.ENOSPC]}"
    assert list(out.parent.iterdir()) == []  # neither the file nor a part of it
    assert load_checkpoint_file(checkpoint)["global_step"] == 2


def test_a_predictions_csv_that_cannot_be_written_is_one_line_naming_it(checkpoint, tmp_path, monkeypatch):
    Fault(monkeypatch, ".csv", "disk full")
    csv = tmp_path / "predictions.csv"
    message = refused(
        *digits_args(tmp_path, "--ckpt_path", str(checkpoint), "--predictions_csv", str(csv), subcommand="predict")
    )
    assert message == f"lit-ssgan: error: cannot write {csv}: {STRERROR[errno.ENOSPC]}"
    assert not csv.exists() and not parts_under(tmp_path)
    # raised where the rows are written, not only when the callbacks are told of a failure (they
    # all are, then: one raising there would keep the others from hearing of it)
    with pytest.raises(WriteError) as failed:
        cli(digits_args(tmp_path, "--ckpt_path", str(checkpoint), "--predictions_csv", str(csv), subcommand="predict"))
    assert "on_exception" not in [frame.name for frame in traceback.extract_tb(failed.value.__traceback__)]


def test_a_write_in_the_body_of_writing_names_the_file_and_what_it_is(tmp_path):
    (tmp_path / "a_file").write_text("")
    target = tmp_path / "a_file" / "config.yaml"
    with pytest.raises(WriteError) as failed, writing(target, "the config"):
        target.write_text("seed: 0")
    assert str(failed.value) == f"cannot write the config {target}: {tmp_path / 'a_file'} is a file, not a folder"
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'a_file' / 'x.json'}: .*a_file is a file"):
        write_json(tmp_path / "a_file" / "x.json", {})


def stale(path: Path, when: float = STARTED - 60) -> Path:
    """A part file, last written at ``when`` (default: before this process started)."""
    path.write_bytes(b"half a checkpoint")
    os.utime(path, (when, when))
    return path


def test_only_the_part_files_no_process_can_still_be_writing_are_removed(tmp_path):
    removed = [
        stale(tmp_path / f".last.ckpt.{DEAD_PID}.part"),  # of a process that runs no more
        stale(tmp_path / f".epoch=0-step=2.ckpt.{os.getpid()}.part"),  # this pid, before this process (a container)
    ]
    kept = [
        stale(tmp_path / f".last.ckpt.{os.getppid()}.part"),  # of a process still running here
        stale(tmp_path / f".epoch=1-step=8.ckpt.{DEAD_PID}.part", time.time() + 60),  # written since: another machine
        stale(tmp_path / f".predictions.csv.{DEAD_PID}.part"),  # not a checkpoint's
        stale(tmp_path / "last.ckpt.part"),  # not lit_ssgan's own
        stale(tmp_path / ".last.ckpt.part"),
        stale(tmp_path / f"last.ckpt.{DEAD_PID}.part"),
    ]
    assert sorted(remove_stale_parts(tmp_path, suffix=".ckpt")) == sorted(removed)
    assert sorted(p for p in tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_parts(tmp_path / "missing") == {}


def test_loading_or_first_writing_a_checkpoint_removes_the_stale_parts_beside_it(tmp_path):
    io = SafeCheckpointIO()
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, folder / "last.ckpt")
    leftover = stale(folder / f".epoch=0-step=4.ckpt.{DEAD_PID}.part")
    SafeCheckpointIO().load_checkpoint(folder / "last.ckpt")
    assert not leftover.exists()
    # a new run's first checkpoint: also in the other runs' checkpoint folders beside its own
    leftovers = [stale(folder / f".last.ckpt.{DEAD_PID}.part"), stale(folder / f".last.ckpt.{os.getpid()}.part")]
    writing_now = stale(folder / f".epoch=0-step=6.ckpt.{os.getpid()}.part", time.time())  # by this process
    SafeCheckpointIO().save_checkpoint(
        {"state_dict": {}}, tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "a.ckpt"
    )
    assert not any(p.exists() for p in leftovers) and writing_now.exists()


def test_the_part_file_of_a_checkpoint_write_killed_in_a_run_is_gone_when_it_resumes(tmp_path):
    cli(digits_args(tmp_path, "--trainer.max_steps", "2"))
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    leftover = stale(folder / f".last.ckpt.{DEAD_PID}.part")
    resumed = cli(digits_args(tmp_path, "--trainer.max_steps", "4", "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 4
    assert not leftover.exists() and not parts_under(tmp_path)


EXITING = """
import atexit, errno, os, threading
from lit_ssgan.errors import exit_on_user_error

def flush_events():  # a logger's atexit hook, on the full disk
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def writer_thread():  # its writer thread, whose file the failed flush closed
    def write():
        raise OSError("handle is closed")
    thread = threading.Thread(target=write)
    thread.start()
    thread.join()

def bug():
    raise ValueError("a bug at exit")

for hook in (bug, writer_thread, flush_events):  # run in the reverse order
    atexit.register(hook)
with exit_on_user_error("lit-ssgan"):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/events.out")
"""


def test_after_the_line_of_a_full_disk_what_meets_it_again_at_exit_says_nothing():
    done = subprocess.run([sys.executable, "-c", EXITING], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    first, *rest = done.stderr.splitlines()
    assert first == f"lit-ssgan: error: cannot write runs/events.out: {STRERROR[errno.ENOSPC]}"
    assert "OSError" not in done.stderr and rest[-1] == "ValueError: a bug at exit"  # a bug still shows
