"""The on-disk decode cache of image folders, and predict that streams: each folder decoded once,
read back memory-mapped (memory flat in the number of images), rebuilt when the folder changes,
never half-written, shared by the processes of one machine, and exact resume unchanged on it."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lit_ssgan.cli import cli
from lit_ssgan.data import ImageFolderDataModule, decoding
from tests.helpers import EVERY_2_STEPS, ROOT, assert_same_weights, checkpoint_weights, folder_args


def write_folder(root: Path, n: int, size: int = 16, seed: int = 0) -> Path:
    """``n`` colour PNGs of ``size`` px under ``root``: a gradient whose level encodes the index."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 60, size, dtype=np.float32)[None, :, None]
    for i in range(n):
        image = (ramp + rng.integers(0, 40, (size, size, 3))).astype(np.uint8)
        image[0, 0] = (i % 256, i // 256 % 256, 7)
        cv2.imwrite(str(root / f"img{i:05d}.png"), image)
    return root


@pytest.fixture
def small(tmp_path) -> dict[str, str]:
    """Two classes of 6 labeled colour images, 40 unlabeled; and a cache folder of its own."""
    for c in ("a", "b"):
        write_folder(tmp_path / "labeled" / c, 6, seed=ord(c))
    write_folder(tmp_path / "unlabeled", 40)
    return {
        "labeled_dir": str(tmp_path / "labeled"),
        "unlabeled_dir": str(tmp_path / "unlabeled"),
        "cache_dir": str(tmp_path / "cache"),
    }


def setup_fit(**kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(**{"image_size": 16, "batch_size": 8, "num_labeled": 4, **kwargs})
    dm.setup("fit")
    return dm


def count_decodes(monkeypatch) -> list[Path]:
    decoded: list[Path] = []
    original = decoding.decode_image

    def counted(data: bytes, path: Path, image_size: int, channels: int) -> np.ndarray:
        decoded.append(path)
        return original(data, path, image_size, channels)

    monkeypatch.setattr(decoding, "decode_image", counted)
    return decoded


def test_a_folder_decodes_once_and_later_runs_read_the_cache_memory_mapped(small, monkeypatch, capsys):
    decoded = count_decodes(monkeypatch)
    first = setup_fit(**small)
    assert len(decoded) == 12 + 40 and "decoding 40 images to 16x16x3, once" in capsys.readouterr().out
    second = setup_fit(**small)
    assert len(decoded) == 12 + 40  # nothing decoded again
    assert "40 images from the decode cache" in capsys.readouterr().out
    for name in ("labeled", "unlabeled"):
        a, b = getattr(first, name), getattr(second, name)
        assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
        # the pixels stay in the mapped file: no array of the images in the process's memory
        assert all(isinstance(array, np.memmap) for array in b.images._arrays)
    pixel = np.asarray(second.unlabeled.images)[:40, 0, 0]  # BGR written, RGB read
    assert sorted(pixel[:, 2].tolist()) == list(range(40))


def test_a_changed_folder_is_read_again_and_its_outdated_cache_removed(small, tmp_path, monkeypatch):
    setup_fit(**small)
    cache = Path(small["cache_dir"])
    assert len(list(cache.glob("unlabeled_dir-*.npy"))) == 1
    # one image rewritten in place: the same file names, so only its size and time tell
    changed = tmp_path / "unlabeled" / "img00003.png"
    image = cv2.imread(str(changed))
    image[0, 0] = (200, 0, 7)
    cv2.imwrite(str(changed), image)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, whatever the clock's grain
    decoded = count_decodes(monkeypatch)
    dm = setup_fit(**small)
    assert len(decoded) == 40  # the labeled folders are unchanged: still read from their cache
    firsts = np.asarray(dm.unlabeled.images)[:40, 0, 0, 2].tolist()
    assert 200 in firsts and 3 not in firsts
    # an image added
    write_folder(tmp_path / "more", 1)
    (tmp_path / "more" / "img00000.png").rename(tmp_path / "unlabeled" / "added.png")
    assert len(setup_fit(**small).unlabeled) == 41 + 12 and len(decoded) == 40 + 41
    assert len(list(cache.glob("unlabeled_dir-*.npy"))) == 1  # the outdated ones are gone


def test_a_cache_of_another_size_or_channels_is_never_used(small, monkeypatch):
    grey = setup_fit(**small, channels=1)
    decoded = count_decodes(monkeypatch)
    colour = setup_fit(**small, image_size=8)
    assert len(decoded) == 52 and colour.unlabeled.images.shape == (52, 8, 8, 3)
    assert grey.unlabeled.images.shape == (52, 16, 16, 1)
    assert len(list(Path(small["cache_dir"]).glob("unlabeled_dir-*.npy"))) == 2  # both kept: each is current


def test_an_unreadable_image_leaves_no_cache_that_looks_complete(small, tmp_path, monkeypatch):
    (tmp_path / "unlabeled" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png could not be read"):
        setup_fit(**small)
    cache = Path(small["cache_dir"])
    assert not list(cache.glob("unlabeled_dir-*.json")) and not list(cache.glob(".*.part"))
    # with skip_bad_images the cache is built, and records the file it skipped
    with pytest.warns(UserWarning, match="skipped 1 unreadable images, e.g. .*broken.png"):
        assert len(setup_fit(**small, skip_bad_images=True).unlabeled) == 40 + 12
    with pytest.raises(ValueError, match="broken.png could not be read.*skip_bad_images true"):  # remembered
        setup_fit(**small)


def test_a_decode_killed_midway_leaves_no_cache_and_the_next_run_decodes_whole(tmp_path):
    folder = write_folder(tmp_path / "unlabeled", 1500, size=96)
    cache = tmp_path / "cache"
    script = (
        "import sys; from lit_ssgan.data.decode_cache import DecodeCache; from lit_ssgan.data.image_folder import "
        "list_images; from pathlib import Path; f = Path(sys.argv[1]); "
        "DecodeCache(sys.argv[2]).images(list_images(f), 96, 3, 'data.unlabeled_dir', f, False)"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", script, str(folder), str(cache)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(cache.glob(".*.part")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)  # as soon as the decode has begun writing
    assert run.wait() == -signal.SIGKILL, "the decode ended before it could be killed"
    assert list(cache.glob(".*.part")) and not list(cache.glob("*.json"))  # half a cache, not taken for one
    dm = setup_fit(
        labeled_dir=str(write_labeled(tmp_path)), unlabeled_dir=str(folder), cache_dir=str(cache), image_size=96
    )
    assert not list(cache.glob(".*.part"))  # the killed decode's file is cleared away
    pixels = np.asarray(dm.unlabeled.images)[:1500]
    assert sorted((pixels[:, 0, 0, 2].astype(int) + 256 * pixels[:, 0, 0, 1].astype(int)).tolist()) == list(range(1500))


def write_labeled(tmp_path: Path) -> Path:
    for c in ("a", "b"):
        write_folder(tmp_path / "labeled" / c, 4, size=64, seed=ord(c))
    return tmp_path / "labeled"


def test_processes_of_one_machine_decode_a_folder_once_and_share_it(tmp_path):
    """Two processes set up the same folders at the same moment (released together once both are
    ready), as the DDP processes of one machine do: one decodes, the other waits for it, then reads."""
    folder = write_folder(tmp_path / "unlabeled", 1500, size=96)
    go = tmp_path / "go"
    script = (
        "import sys, time; from pathlib import Path; from lit_ssgan.data import ImageFolderDataModule; "
        "print('ready', flush=True); "
        "exec('while not Path(sys.argv[4]).exists(): time.sleep(0.001)'); "
        "dm = ImageFolderDataModule(labeled_dir=sys.argv[1], unlabeled_dir=sys.argv[2], cache_dir=sys.argv[3], "
        "image_size=96, batch_size=8, num_labeled=4); dm.setup('fit'); "
        "import numpy as np; print('sum', int(np.asarray(dm.unlabeled.images, dtype=np.int64).sum()))"
    )
    args = [sys.executable, "-c", script, str(write_labeled(tmp_path)), str(folder), str(tmp_path / "cache"), str(go)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert [run.stdout.readline() for run in runs] == ["ready\n"] * 2  # type: ignore[union-attr]
    go.touch()
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sum(out.count("decoding 1500 images") for out in outputs) == 1  # one decoded
    waited = [line for out in outputs for line in out.splitlines() if "unlabeled_dir" in line and "waiting" in line]
    assert len(waited) == 1  # the other waited for it
    assert sum(out.count("1500 images from the decode cache") for out in outputs) == 1  # then read it
    assert len({line for out in outputs for line in out.splitlines() if line.startswith("sum")}) == 1


MEMORY_SCRIPT = """
import os, sys, threading, time
from pathlib import Path
import numpy as np
from lit_ssgan.data import ImageFolderDataModule

def anonymous() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")

peak = [0]
def watch():
    while True:
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.002)
threading.Thread(target=watch, daemon=True).start()
root = Path(sys.argv[1])
dm = ImageFolderDataModule(labeled_dir=str(root / "labeled"), unlabeled_dir=str(root / "unlabeled"),
    predict_dir=str(root / "unlabeled"), image_size=64, batch_size=16, num_labeled=4, eval_batch_size=64)
time.sleep(0.05)
before = anonymous()
dm.setup("fit")
loaders = dm.train_dataloader()
for _, batch in zip(range(3), loaders["unlabeled"]):
    pass
dm.setup("predict")
for batch in dm.predict_dataloader():
    pass
time.sleep(0.05)
print(peak[0] - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_memory_does_not_grow_with_the_number_of_images_in_fit_or_predict(tmp_path):
    """The peak of fit's setup and first batches, then a predict pass, over 200 and over 4 800
    images of 64x64 RGB: 4 600 more images are 57 MB of uint8 pixels (226 MB as float), none of
    which may stay in the process's own memory. (Measured: the code before the cache grew 295 MB
    from 200 to 2 400 images; this grows 0-12 MB from 200 to 4 800, the noise of the decode threads,
    6 MB in 8 runs of 2026-12-05 and once 26 MB while two trainings shared the 2 cores: the bound is
    35 MB, well under the 57 MB of the pixels.)"""
    growth = {}
    for n in (200, 4800):
        root = tmp_path / str(n)
        write_folder(root / "unlabeled", n, size=64)
        write_labeled(root)
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(root)],
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        growth[n] = int(run.stdout.split()[-1])
    assert growth[4800] - growth[200] < 35e6, growth  # the pixels of the 4 600 images: 57 MB


def test_predict_reads_images_a_batch_at_a_time_in_file_name_order(small, tmp_path, monkeypatch):
    dm = ImageFolderDataModule(
        predict_dir=small["unlabeled_dir"], class_names=["a", "b"], image_size=16, eval_batch_size=16
    )
    decoded = count_decodes(monkeypatch)
    dm.setup("predict")
    assert decoded == []  # nothing read before predicting
    batches = iter(dm.predict_dataloader())
    images, labels = next(batches)
    assert len(decoded) == 16 and images.shape == (16, 3, 16, 16) and (labels == -1).all()
    assert sorted(p.name for p in decoded) == dm.predict_files[:16]  # the first 16 by name (threads in any order)
    level = (images[:, 2, 0, 0] * 255).round().long()  # the index written into the first pixel's red
    assert level.tolist() == list(range(16))


@pytest.mark.parametrize("workers", ["0", "1"])  # 1: each loader's persistent worker fetches ahead of the step
def test_exact_resume_mid_epoch_on_cached_data(folders, tmp_path, workers):
    """The straight run decodes the folders; the resumed one reads them from the cache, and ends
    with the same weights."""
    args = ["--trainer.max_epochs", "2", "--data.cache_dir", str(tmp_path / "cache"), *EVERY_2_STEPS]
    args += ["--data.num_workers", workers]
    straight = cli(folder_args(folders, tmp_path / "a", *args))
    middle = Path(straight.trainer.log_dir, "checkpoints", "epoch=1-step=26.ckpt")
    assert middle.is_file(), sorted(p.name for p in middle.parent.iterdir())
    resumed = cli(folder_args(folders, tmp_path / "b", *args, "--ckpt_path", str(middle)))
    assert resumed.trainer.global_step == straight.trainer.global_step == 44
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    assert not torch.equal(
        checkpoint_weights(middle)["discriminator.classifier.v"], resumed.model.discriminator.classifier.v
    )


def test_rows_of_a_mapped_cache_travel_to_loader_workers_as_the_file_not_the_pixels(small):
    images = setup_fit(**small).unlabeled.images
    travelled = pickle.loads(sent := pickle.dumps(images))
    assert len(sent) < 10_000 < images.shape[0] * 16 * 16 * 3  # the index arrays, not the 40 KB of pixels
    assert np.array_equal(np.asarray(travelled), np.asarray(images))
    assert all(isinstance(array, np.memmap) for array in travelled._arrays)


def test_predict_leaves_out_an_unreadable_image_with_skip_bad_images_and_names_it_without(folders, tmp_path):
    run = cli(folder_args(folders, tmp_path, "--trainer.max_steps", "1"))
    new = tmp_path / "new"
    for path in sorted((folders / "new").glob("*.png"))[:20]:
        (new / path.name).parent.mkdir(exist_ok=True)
        (new / path.name).write_bytes(path.read_bytes())
    (new / "m_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "p.csv"
    predict = ["--ckpt_path", str(Path(run.trainer.log_dir, "checkpoints", "last.ckpt")), "--predictions_csv", str(out)]
    predict += ["--data.predict_dir", str(new), "--data.eval_batch_size", "8"]
    with pytest.raises(ValueError, match="m_broken.png could not be read.*skip_bad_images true skips"):
        cli(folder_args(folders, tmp_path, *predict, subcommand="predict"))
    assert not out.exists()
    with pytest.warns(UserWarning, match="1 images could not be read and have no row, e.g. m_broken.png"):
        cli(folder_args(folders, tmp_path, *predict, "--data.skip_bad_images", "true", subcommand="predict"))
    rows = out.read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == sorted(
        p.name for p in new.glob("*.png") if "broken" not in p.name
    )
