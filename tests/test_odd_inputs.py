"""Odd inputs in image folders: file names that are not UTF-8 or hold a newline or a colon (read,
and named in a form that round-trips), symbolic links to nothing (named with their target), labels
CSVs with a third field or a name that matches two files (refused by row), a decode cache whose
files were rewritten under the same size and time (decoded again, naming the file), and a decode
stopped by SIGTERM or Ctrl-C or killed (no part file left)."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lit_ssgan.data import ImageFolderDataModule, decode_cache, decoding
from lit_ssgan.data.decoding import UNREADABLE, DecodingDataset
from lit_ssgan.data.image_folder import list_images
from lit_ssgan.data.record import read_record, write_record
from lit_ssgan.errors import BadFileError, ConfigError
from tests.helpers import ROOT, write_png
from tests.test_decode_cache import write_folder

#: names as bytes, as a file system allows them: Latin-1 (not UTF-8), two bytes that are no text
#: at all (OpenCV's imread crashed the process on them), a newline, a colon
ODD = [b"caf\xe9.png", b"\xff\xfe.png", b"new\nline.png", b"co:lon.png"]


def write_named(folder: Path, name: bytes, level: int) -> int:
    """A 6x6 grey PNG of ``level`` at ``folder/name``, named by bytes (no str reaches the file system)."""
    os.makedirs(os.fsencode(folder), exist_ok=True)
    ok, data = cv2.imencode(".png", np.full((6, 6), level, np.uint8))
    assert ok
    fd = os.open(os.fsencode(folder) + b"/" + name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    os.write(fd, data.tobytes())
    os.close(fd)
    return level


def escaped(name: bytes) -> str:
    """How names are written: UTF-8 where they are, ``\\xNN`` for each byte that is not."""
    return name.decode("utf-8", "backslashreplace")


def check_odd_names(root: Path) -> None:
    """Labeled (by class folder and by CSV), unlabeled and predict folders of odd names: each
    image read with its own pixels, the names recorded, matched and written back as they were, and
    named in messages on one printable line. Run in a process of its own
    (:func:`test_odd_file_names_are_read_in_labeled_and_predict_folders`): a name that reaches
    OpenCV as a path ends a process with a segmentation fault."""
    level = {}
    odd_class = os.fsdecode(os.fsencode(root / "labeled") + b"/b\xe9")  # a class folder not UTF-8 either
    for k, name in enumerate(ODD):
        level["a/" + escaped(name)] = write_named(root / "labeled" / "a", name, 10 + k)
        level["b\\xe9/" + escaped(name)] = write_named(Path(odd_class), name, 50 + k)
        level[escaped(name)] = write_named(root / "flat", name, 90 + k)
        write_named(root / "unlabeled", name, 130 + k)
        level["predict/" + escaped(name)] = write_named(root / "predict", name, 170 + k)
    options = {"image_size": 6, "channels": 1, "batch_size": 2, "cache_dir": str(root / "cache")}
    unlabeled = str(root / "unlabeled")

    # class folders: each image with its label, and the record of the examples written and read back
    dm = ImageFolderDataModule(
        labeled_dir=str(root / "labeled"), unlabeled_dir=unlabeled, num_labeled=4, data_seed=1, **options
    )
    dm.setup("fit")
    assert dm.class_names == ["a", "b\\xe9"], dm.class_names
    assert sorted(dm.read_files["labeled_dir"]) == sorted(k for k in level if k.startswith(("a/", "b")))
    examples = dm.labeled_examples["labeled"]
    assert all(name.split("/")[0] == label for name, label in examples)
    assert np.asarray(dm.labeled.images)[:, 0, 0, 0].tolist() == [level[name] for name, _ in examples]
    record = root / "labeled_examples.csv"
    write_record(record, dm.labeled_examples)  # UTF-8: no name that cannot be written
    assert read_record(record) == dm.labeled_examples
    again = ImageFolderDataModule(
        labeled_dir=str(root / "labeled"),
        unlabeled_dir=unlabeled,
        num_labeled=4,
        data_seed=2,
        **options,
        split_from=str(record),
    )
    again.setup("fit")  # the record names the examples as the data does: the same draw
    assert again.labeled_examples == dm.labeled_examples

    # a labels CSV names them as they are written: escaped where not UTF-8, a newline inside quotes
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["file", "label"])
    writer.writerows([escaped(name) if k % 2 else escaped(name)[:-4], "xy"[k % 2]] for k, name in enumerate(ODD))
    (root / "labels.csv").write_text(rows.getvalue(), encoding="utf-8")
    flat = ImageFolderDataModule(
        labeled_dir=str(root / "flat"), labels_csv=str(root / "labels.csv"), unlabeled_dir=unlabeled, **options
    )
    flat.setup("fit")
    named = flat.labeled_examples["labeled"]
    assert sorted(named) == sorted((escaped(name), "xy"[k % 2]) for k, name in enumerate(ODD))
    assert np.asarray(flat.labeled.images)[:, 0, 0, 0].tolist() == [level[name] for name, _ in named]

    # predict: in file-name order, each with its pixels; the names as a predictions CSV keeps them
    predict = ImageFolderDataModule(predict_dir=str(root / "predict"), class_names=["x", "y"], **options)
    predict.setup("predict")
    assert predict.predict_files == [escaped(name) for name in sorted(ODD, key=os.fsdecode)]
    (images, labels) = next(iter(predict.predict_dataloader()))
    assert (images[:, 0, 0, 0] * 255).round().long().tolist() == [level["predict/" + f] for f in predict.predict_files]
    written = io.StringIO(newline="")
    csv.writer(written).writerows([[f, "x"] for f in predict.predict_files])
    written.getvalue().encode("utf-8")  # UTF-8: no name that cannot be written
    assert [row[0] for row in csv.reader(io.StringIO(written.getvalue(), newline=""))] == predict.predict_files

    # an odd name that cannot be read is named on one printable line, as it is written
    broken = os.fsencode(root / "predict") + b"/\xfe\nbroken.png"
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    files = sorted(Path(root / "predict", os.fsdecode(name)) for name in os.listdir(os.fsencode(root / "predict")))
    try:
        DecodingDataset(files, 6, 1).__getitems__(list(range(len(files))))
        raise AssertionError("a broken file was read")
    except BadFileError as err:
        message = str(err)
    assert message.isprintable() and "\\xfe\\nbroken.png could not be read as an image" in message, message
    print(message)
    print("ok")


def test_odd_file_names_are_read_in_labeled_and_predict_folders(tmp_path):
    try:
        write_named(tmp_path / "probe", ODD[1], 0)
    except OSError:  # macOS's file systems, for one, take UTF-8 names alone
        pytest.skip("this file system refuses names that are not UTF-8")
    script = "import sys; from pathlib import Path; from tests.test_odd_inputs import check_odd_names; "
    run = subprocess.run(
        [sys.executable, "-c", script + "check_odd_names(Path(sys.argv[1]))", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        errors="backslashreplace",
    )
    assert run.returncode == 0 and run.stdout.endswith("ok\n"), (run.returncode, run.stdout[-2000:], run.stderr[-4000:])


def labeled_and_unlabeled(root: Path, n: int = 3) -> dict[str, object]:
    """Two classes of ``n`` colour PNGs, 8 unlabeled, a cache folder: a data module's options."""
    for c in ("a", "b"):
        write_folder(root / "labeled" / c, n, seed=ord(c))
    write_folder(root / "unlabeled", 8)
    return {
        "labeled_dir": str(root / "labeled"),
        "unlabeled_dir": str(root / "unlabeled"),
        "cache_dir": str(root / "cache"),
        "image_size": 16,
        "batch_size": 4,
    }


def test_a_symbolic_link_to_nothing_is_named_with_its_target_and_skipped_as_unreadable(tmp_path):
    options = labeled_and_unlabeled(tmp_path)
    link = tmp_path / "labeled" / "a" / "gone.png"
    link.symlink_to(tmp_path / "elsewhere" / "gone.png")
    target = os.path.realpath(tmp_path / "elsewhere" / "gone.png")
    said = f"{link} is a symbolic link to {target}, which does not exist"
    with pytest.raises(BadFileError) as refused:
        ImageFolderDataModule(**options).setup("fit")
    assert str(refused.value) == f"{said} (data.skip_bad_images true skips such files)"
    skipping = ImageFolderDataModule(**options, skip_bad_images=True)
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable images, e\.g\. {link} \(the first: {said}\)"):
        skipping.setup("fit")
    assert sorted(skipping.read_files["labeled_dir"]) == [f"{c}/img{i:05d}.png" for c in "ab" for i in range(3)]
    # the link mended: the cache's record saw no file there, and decodes the folder again
    write_folder(tmp_path / "elsewhere", 1)
    (tmp_path / "elsewhere" / "img00000.png").rename(target)
    assert "a/gone.png" in setup(ImageFolderDataModule(**options)).read_files["labeled_dir"]

    # in a predict folder, a relative link: the same, a batch at a time
    (tmp_path / "unlabeled" / "lost.png").symlink_to("missing.png")
    predict = ImageFolderDataModule(predict_dir=str(tmp_path / "unlabeled"), class_names=["a", "b"], image_size=16)
    predict.setup("predict")
    with pytest.raises(BadFileError, match=rf"^{tmp_path}/unlabeled/lost.png is a symbolic link to {tmp_path}/"):
        next(iter(predict.predict_dataloader()))
    predict = ImageFolderDataModule(
        predict_dir=str(tmp_path / "unlabeled"), class_names=["a", "b"], image_size=16, skip_bad_images=True
    )
    predict.setup("predict")
    labels = torch.cat([labels for _, labels in predict.predict_dataloader()])
    assert labels.tolist() == [-1] * 8 + [UNREADABLE] and predict.predict_files[-1] == "lost.png"


def setup(dm: ImageFolderDataModule) -> ImageFolderDataModule:
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    "rows, refusal",
    [
        ("a.png,x\nb.png,y,extra\n", "labels.csv, row 3: 3 fields (b.png,y,extra); expected 2, filename,label"),
        ("a.png,x,\nb.png,y,, \n", None),  # empty fields after the label, as a spreadsheet pads rows: nothing
        ("a.png,x\n\nc,y\n", "labels.csv, row 4: 'c' matches c.jpg and c.png; give the file name with its extension"),
        ("a.png,x\nc.png,y\nc.jpg,x\n", None),  # each named whole
    ],
)
def test_a_labels_csv_row_of_three_fields_or_a_name_of_two_files_is_refused_by_row(tmp_path, rows, refusal):
    for name in ("a.png", "b.png", "c.png", "c.jpg"):
        write_png(tmp_path / "flat" / name, np.full((8, 8, 3), len(name), np.uint8))
    (tmp_path / "labels.csv").write_text("filename,label\n" + rows)
    options = labeled_and_unlabeled(tmp_path) | {"labeled_dir": str(tmp_path / "flat")}
    options["labels_csv"] = str(tmp_path / "labels.csv")
    if refusal is None:
        assert len(setup(ImageFolderDataModule(**options)).labeled) == rows.count("\n")
    else:
        with pytest.raises(ConfigError) as refused:
            ImageFolderDataModule(**options)  # when built, before any image is read
        assert str(refused.value).startswith(f"{tmp_path}/{refusal}")


def write_bmp(path: Path, image: np.ndarray) -> int:
    """``image`` as an uncompressed BMP: its size is its shape's alone, whatever its pixels."""
    ok, data = cv2.imencode(".bmp", image)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.exists() else "wb") as f:  # in place: the same file, rewritten
        f.write(data.tobytes())
    return len(data)


def test_a_file_rewritten_with_its_size_and_time_kept_is_decoded_again_naming_it(tmp_path, monkeypatch, capsys):
    for c in ("a", "b"):
        for i in range(3):
            write_bmp(tmp_path / "labeled" / c / f"{i}.bmp", np.full((8, 8, 3), 10 * i, np.uint8))
    for i in range(8):
        write_bmp(tmp_path / "unlabeled" / f"{i}.bmp", np.full((8, 8, 3), 100 + i, np.uint8))
    options = {"labeled_dir": str(tmp_path / "labeled"), "unlabeled_dir": str(tmp_path / "unlabeled")}
    options |= {"cache_dir": str(tmp_path / "cache"), "image_size": 8, "batch_size": 4}
    setup(ImageFolderDataModule(**options))
    # other pixels, written in place, with the size and modification time of the old (as cp -p or
    # rsync -t leave them); the change time, which no one can set, is what moves
    target = tmp_path / "unlabeled" / "3.bmp"
    before = os.stat(target)
    for _ in range(100):
        assert write_bmp(target, np.full((8, 8, 3), 250, np.uint8)) == before.st_size
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
        if os.stat(target).st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.01)  # the change time's grain: write again until it moves
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    capsys.readouterr()
    dm = setup(ImageFolderDataModule(**options))
    out = capsys.readouterr().out
    assert (
        f"data.unlabeled_dir {tmp_path}/unlabeled: {target} changed since it was decoded into the cache: "
        "decoding the folder again\n"
    ) in out
    assert "data.labeled_dir" in out and "labeled: 6 images from the decode cache" in out  # the other folder kept
    assert 250 in np.asarray(dm.unlabeled.images)[:8, 0, 0, 0].tolist()

    # touched, or copied over with the same bytes: not decoded again, and the record learns the new
    # status, so that the run after reads no file at all
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    decoded, read = [], []
    original_decode, original_read = decoding.decode_image, decode_cache.read_file
    monkeypatch.setattr(decoding, "decode_image", lambda *args: decoded.append(args[1]) or original_decode(*args))
    monkeypatch.setattr(decode_cache, "read_file", lambda path: read.append(path) or original_read(path))
    setup(ImageFolderDataModule(**options))
    assert decoded == [] and read == [target]
    setup(ImageFolderDataModule(**options))
    assert decoded == [] and read == [target]


SLOW_DECODE = """
import sys, time
from pathlib import Path
from lit_ssgan.data import decoding
from lit_ssgan.data.decode_cache import DecodeCache
from lit_ssgan.data.image_folder import list_images

original = decoding.decode_image
def slow(*args):
    time.sleep(0.05)
    return original(*args)
decoding.decode_image = slow
folder = Path(sys.argv[1])
DecodeCache(sys.argv[2]).images(list_images(folder), 8, 3, "data.unlabeled_dir", folder, False)
"""


def test_sigterm_during_a_decode_removes_its_part_file_and_says_so(tmp_path):
    folder = write_folder(tmp_path / "unlabeled", 200, size=8)
    cache = tmp_path / "cache"
    run = subprocess.Popen(
        [sys.executable, "-c", SLOW_DECODE, str(folder), str(cache)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(cache.glob(".*.part")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGTERM)  # as soon as the decode has begun writing
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143, (run.returncode, err[-2000:])
    assert err.splitlines()[-1] == (
        f"lit-ssgan: data.unlabeled_dir {folder}: decode stopped by SIGTERM; its part file is removed (the next run "
        "decodes the folder from the start: run the same command again)"
    )
    assert sorted(p.name for p in cache.iterdir() if p.suffix != ".lock") == []  # no part, no cache


def test_ctrl_c_during_a_decode_removes_its_part_file_says_so_and_goes_on_as_keyboard_interrupt(
    tmp_path, monkeypatch, capsys
):
    folder = write_folder(tmp_path / "unlabeled", 60, size=8)
    cache = tmp_path / "cache"
    original, calls = decoding.decode_image, []

    def interrupted(*args):
        calls.append(args[1])
        if len(calls) == 5:  # Ctrl-C, to the main thread, as a terminal sends it
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.01)
        return original(*args)

    monkeypatch.setattr(decoding, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode_cache.DecodeCache(cache).images(list_images(folder), 8, 3, "data.unlabeled_dir", folder, False)
    assert len(calls) < 60
    assert capsys.readouterr().err.endswith(
        f"data.unlabeled_dir {folder}: decode stopped by Ctrl-C; its part file is removed (the next run decodes "
        "the folder from the start)\n"
    )
    assert sorted(p.name for p in cache.iterdir() if p.suffix != ".lock") == []


def test_part_files_of_killed_decodes_are_removed_at_the_next_start_unless_a_decode_holds_them(tmp_path, capsys):
    fcntl = pytest.importorskip("fcntl")
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / ".unlabeled_dir-old-8px-rgb-aaaa.npy.4242.part"  # another cache's, its lock free
    stale.write_bytes(bytes(1500))
    (cache / "unlabeled_dir-old-8px-rgb-aaaa.lock").touch()
    busy = cache / ".labeled_dir-x-8px-rgb-bbbb.npy.4343.part"  # one another process is writing
    busy.write_bytes(bytes(10))
    folder = write_folder(tmp_path / "unlabeled", 4, size=8)
    with open(cache / "labeled_dir-x-8px-rgb-bbbb.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        decode_cache.DecodeCache(cache).images(list_images(folder), 8, 3, "data.unlabeled_dir", folder, False)
    assert not stale.exists() and busy.exists()
    assert f"  removed {stale} (1.5 KB), left by a decode that was killed\n" in capsys.readouterr().out
