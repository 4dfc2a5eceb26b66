"""MNIST as folders of PNG files, for the image-folder path; how fast they can feed training; and
what fit and predict cost in memory and time on many colour images.

    python benchmarks/image_folders.py write --data-dir ../shared/data/mnist --out /tmp/mnist_png
    python benchmarks/image_folders.py loader --config configs/image_folder.yaml --workers auto 0
    python benchmarks/image_folders.py decode --folder /tmp/mnist_png/unlabeled --image-size 64
    python benchmarks/image_folders.py write-colour --data-dir ../shared/data/mnist --out /tmp/px128 --count 100000
    python benchmarks/image_folders.py memory --folders /tmp/px128 --unlabeled unlabeled/part0 --work /tmp/mem20k

``write`` makes labeled/<class>/ (10 a class, drawn with --seed), val/<class>/ (100 a class, held
out for choosing settings), unlabeled/ (the other 58 900 training images), test/<class>/ (the
10 000 test images) and new/ (the first 1 000 test images, flat, with truth.csv); from MNIST or
Fashion-MNIST (--data-dir). With --pool, labeled/ holds all 59 000 training images not in val/ and
there is no unlabeled/: ``--data.num_labeled 100`` then draws each run's labels from the pool with
``data_seed`` (the rest train unlabeled), so that ``lit-ssgan draws`` varies the labeled examples.

``loader`` asks whether the loaders keep up with the step: for each ``--workers`` value, it builds
``lit-ssgan fit`` with ``--config`` on a folder (``--folders``: labeled/<class>/ and unlabeled/; by
default random images written at ``--image-size``), then times ImageFolderDataModule's three training
loaders alone (as fit builds them: the config's augmentation and balancing, the workers, page-locked
memory on a GPU), then a few steps of that fit: the step alone (its batch's start to its end; on a GPU
by CUDA events, so the GPU's time) and fit's pace (one batch's start to the next's: the step and any
wait for the loader). Images are those a step takes: three batches (labeled, unlabeled, unlabeled_g).
``decode`` times the two ways to feed training from a folder: decoding every image once into the
decode cache (what ImageFolderDataModule does), then gathering batches from it; and decoding in
DataLoader workers every epoch.

``write-colour`` makes --count colour PNGs of --size px (MNIST digits enlarged, tinted and grained:
about 20 KB a file at 128 px) in unlabeled/part0, part1, ... (20 000 a part), and labeled/<digit>/
(10 a class). ``memory`` runs ``lit-ssgan fit`` (2 steps, a small MLP pair, no augmentation)
twice on a fresh decode cache, then ``lit-ssgan predict`` on the same unlabeled images, each as a
process of its own, and prints each one's peak anonymous memory (``RssAnon``, sampled every 20 ms:
the process's own memory, not the page cache that a memory-mapped file or the PNGs take) and wall
time. ``--tree`` runs another checkout's package (the code before a change).

What the conv pair learns from these folders, over label draws and against the labels alone, is
``lit-ssgan draws`` on what ``write --pool`` wrote (benchmarks/README.md gives the command).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from lit_ssgan.data.datasets import read_idx
from lit_ssgan.data.decode_cache import DecodeCache
from lit_ssgan.data.decoding import read_image
from lit_ssgan.data.image_folder import list_images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from conv_speed import StepTimer, write_random_folder  # noqa: E402
from speed import cpu_model  # noqa: E402


def write(args: argparse.Namespace) -> None:
    data, out = Path(args.data_dir), Path(args.out)
    images = read_idx(data / "train-images-idx3-ubyte.gz")
    labels = read_idx(data / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(data / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(data / "t10k-labels-idx1-ubyte.gz")
    order = np.random.default_rng(args.seed).permutation(len(labels))
    by_class = [order[labels[order] == c] for c in range(10)]
    # the validation images, in class folders, are held out of the training images: settings are
    # chosen on them, never on the test folder (the same images with --pool)
    val_set = {int(i) for c in by_class for i in c[args.per_class : args.per_class + args.val_per_class]}
    # --pool: every other training image is labeled (a pool that --data.num_labeled draws from)
    labeled_set = {int(i) for c in by_class for i in c[: args.per_class]}
    if args.pool:
        labeled_set = set(range(len(labels))) - val_set
    start = time.perf_counter()
    for i in range(len(labels)):
        folder = out / "unlabeled"
        if i in labeled_set or i in val_set:
            folder = out / ("labeled" if i in labeled_set else "val") / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"train{i:05d}.png"), images[i])
    truth = []
    for i in range(len(test_labels)):
        folder = out / "test" / str(test_labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"test{i:05d}.png"), test_images[i])
        if i < 1000:
            (out / "new").mkdir(exist_ok=True)
            cv2.imwrite(str(out / "new" / f"test{i:05d}.png"), test_images[i])
            truth.append(f"test{i:05d}.png,{test_labels[i]}")
    (out / "truth.csv").write_text("\n".join(truth) + "\n")
    print(f"wrote {len(labels) + len(test_labels) + 1000} PNGs to {out} in {time.perf_counter() - start:.0f} s")


class DecodingDataset(Dataset):
    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.paths[i], self.size, 3)).permute(2, 0, 1).float().div_(255)


def decode(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    paths = list_images(folder)[: args.limit]
    n = len(paths)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        images, _, _ = DecodeCache(cache).images(paths, args.image_size, 3, "data.unlabeled_dir", folder, False)
        once = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(n // args.batch_size):  # an epoch from the cache: gather and convert each batch
            torch.from_numpy(images[torch.randint(0, n, (args.batch_size,)).numpy()]).permute(0, 3, 1, 2).float()
        cached_epoch = time.perf_counter() - start
    print(f"{n} images, {args.image_size}x{args.image_size} RGB, {torch.get_num_threads()} threads:")
    print(f"  decode once into the cache: {n / once:,.0f} images/s ({once:.1f} s); then an epoch: {cached_epoch:.2f} s")
    for workers in args.workers:
        dl = DataLoader(
            DecodingDataset(paths, args.image_size),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        start = time.perf_counter()
        for _ in dl:
            pass
        seconds = time.perf_counter() - start
        print(f"  decode in {workers} DataLoader workers, every epoch: {n / seconds:,.0f} images/s ({seconds:.1f} s)")


class BatchTimer(StepTimer):
    """StepTimer's seconds of each step after ``warmup`` (on a GPU, from CUDA events around each
    batch instead: the GPU's time from the step's first work to its last, whatever the host waited
    on), and ``pace``: the mean seconds from one batch's start to the next's over ``steps`` steps."""

    def __init__(self, warmup: int, steps: int) -> None:
        super().__init__(warmup)
        self.timed, self.pace, self._first = steps, 0.0, 0.0
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _mark(self, pl_module: LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            self._first = self._mark(pl_module)
        if trainer.global_step == self.warmup + self.timed:
            self.pace = (self._mark(pl_module) - self._first) / self.timed
        if pl_module.device.type == "cuda" and self.warmup <= trainer.global_step < self.warmup + self.timed:
            self.events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self.events[-1][0].record()
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.events and len(self.events) == trainer.global_step - self.warmup:
            self.events[-1][1].record()
        super().on_train_batch_end(trainer, pl_module, *args)

    def step_seconds(self) -> float:
        if self.events:
            torch.cuda.synchronize()
            return statistics.median(start.elapsed_time(end) / 1000 for start, end in self.events)
        return statistics.median(self.seconds)


def time_loaders(dm: Any, trainer: Trainer, batches: int) -> dict[str, Any]:
    """The data module's three training loaders alone, as ``fit`` on ``trainer`` builds them, read
    together for ``batches`` batches: images a second after the first batch (when the workers start)."""
    dm.trainer = trainer  # what fit sets: the loaders are sized to its device and processes
    dm.setup("fit")
    loaders = dm.train_dataloader()
    unlabeled = loaders["unlabeled"]
    found = {"workers": unlabeled.num_workers, "pinned": unlabeled.pin_memory}
    found["per_step"] = sum(loader.batch_size for loader in loaders.values())
    stream = zip(*loaders.values(), strict=True)
    start = time.perf_counter()
    next(stream)
    found["first"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches - 1):
        next(stream)
    found["rate"] = found["per_step"] * (batches - 1) / (time.perf_counter() - start)
    return found  # the loaders, and their persistent workers, end with this call


def loader(args: argparse.Namespace) -> None:
    """The training loaders' images/s beside the step's, for each ``--workers`` value (module docstring)."""
    from lit_ssgan.cli import cli

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = Path(args.folders) if args.folders else work / "folders"
        if not args.folders:
            write_random_folder(folders, args.image_size)
        warmup = 2  # the first steps: the data-dependent initialisation, the allocator's first sizes
        overrides = [
            "--data.labeled_dir", str(folders / "labeled"), "--data.unlabeled_dir", str(folders / "unlabeled"),
            "--data.image_size", str(args.image_size), "--data.cache_dir", str(args.cache_dir or work / "cache"),
            "--data.batches_per_epoch", str(max(args.batches, warmup + args.steps) + 1),
            "--trainer.max_steps", str(warmup + args.steps + 1), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(work / "run"),
            "--test_after_fit", "false",
            *(["--trainer.precision", args.precision] if args.precision else []),
        ]  # fmt: skip
        rows = []
        for workers in args.workers:
            built = cli(["--config", args.config, *overrides, "--data.num_workers", workers, *args.extra], run=False)
            trainer = built.trainer
            device = trainer.strategy.root_device
            machine = f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, "
            machine += torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
            loaders = time_loaders(built.datamodule, trainer, args.batches)
            timer = BatchTimer(warmup, args.steps)
            trainer.callbacks.append(timer)  # type: ignore[attr-defined]
            trainer.fit(built.model, datamodule=built.datamodule)
            per_step = loaders["per_step"]
            name = f"auto ({loaders['workers']} a stream)" if workers == "auto" else workers
            print(f"num_workers {name}: the loaders' first batch after {loaders['first']:.2f} s", flush=True)
            rows += [
                (f"loaders alone{', pinned' if loaders['pinned'] else ''}", name, loaders["rate"], machine),
                (f"step alone ({trainer.precision})", name, per_step / timer.step_seconds(), machine),
                ("fit: step and loaders", name, per_step / timer.pace, machine),
            ]
        print(
            f"\n{Path(args.config).name} at {args.image_size} px, {per_step} images a step, torch {torch.__version__},"
        )
        print(f"{torch.get_num_threads()} torch threads; --batches {args.batches}, --steps {args.steps}")
        print("| what | data.num_workers | images/s | machine |\n|---|---|---|---|")
        for what, name, rate, where in rows:
            print(f"| {what} | {name} | {rate:,.0f} | {where} |")


def write_colour(args: argparse.Namespace) -> None:
    data, out = Path(args.data_dir), Path(args.out)
    images = read_idx(data / "train-images-idx3-ubyte.gz")
    labels = read_idx(data / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(args.seed)
    tints = rng.uniform(0.3, 1.0, (len(images), 3)).astype(np.float32)

    def colour(i: int) -> np.ndarray:
        digit = cv2.resize(images[i % len(images)], (args.size, args.size), interpolation=cv2.INTER_LINEAR)
        grain = np.random.default_rng(i).integers(0, 24, (args.size, args.size, 3))
        return np.clip(digit[..., None] * tints[i % len(images)] + grain, 0, 255).astype(np.uint8)

    def write_one(item: tuple[Path, int]) -> None:
        cv2.imwrite(str(item[0]), colour(item[1]))

    jobs = []
    for c in range(10):
        (out / "labeled" / str(c)).mkdir(parents=True, exist_ok=True)
        jobs += [(out / "labeled" / str(c) / f"l{i:05d}.png", int(i)) for i in np.flatnonzero(labels == c)[:10]]
    for i in range(args.count):
        part = out / "unlabeled" / f"part{i // 20000}"
        if i % 20000 == 0:
            part.mkdir(parents=True, exist_ok=True)
        jobs.append((part / f"u{i:06d}.png", 100 + i))
    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write_one, jobs, chunksize=256))
    size = sum(p.stat().st_size for p, _ in jobs)
    seconds = time.perf_counter() - start
    print(f"wrote {len(jobs)} PNGs of {args.size} px ({size / 1e9:.2f} GB) to {out} in {seconds:.0f} s")


def peak_anonymous_memory(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, float, str]:
    """Runs ``command``; its peak ``RssAnon`` (bytes, sampled every 20 ms), wall seconds and output."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            try:
                with open(f"/proc/{process.pid}/status") as f:
                    kb = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
                peak[0] = max(peak[0], kb * 1024)
            except (OSError, StopIteration):
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output = process.communicate()[0]
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return peak[0], time.perf_counter() - start, output


def memory(args: argparse.Namespace) -> None:
    folders, work, tree = Path(args.folders), Path(args.work), Path(args.tree or ROOT)
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "2"}
    unlabeled = folders / args.unlabeled
    common = ["--config", str(ROOT / "configs" / "image_folder.yaml"), "--data.image_size", str(args.image_size)]
    # small networks, so that what is measured is the data: the MLP pair, one hidden layer of 64
    common += ["--model.discriminator", "lit_ssgan.models.MLPDiscriminator", "--model.generator"]
    common += ["lit_ssgan.models.MLPGenerator", "--model.discriminator.init_args.hidden", "[64]"]
    common += ["--model.generator.init_args.hidden", "[64]"]
    common += ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    fit = ["fit", *common, "--data.labeled_dir", str(folders / "labeled"), "--data.unlabeled_dir", str(unlabeled)]
    fit += ["--data.train_transforms", "null", "--trainer.max_steps", "2", "--test_after_fit", "false"]
    n = len(list_images(unlabeled))
    print(f"{n} unlabeled images of {args.image_size} px, package at {tree}, {os.cpu_count()} cores")
    print("| run | peak RssAnon | wall |\n|---|---|---|")
    for name in ("fit (decodes)", "fit (again)"):
        root = work / name.split()[1].strip("()")
        command = [sys.executable, "-m", "lit_ssgan", *fit, "--trainer.default_root_dir", str(root)]
        peak, seconds, output = peak_anonymous_memory(command, tree, env)
        print(f"| {name} | {peak / 1e9:.2f} GB | {seconds:.0f} s |", flush=True)
        if args.verbose:
            print(output[-2000:])
    ckpt = next((work / "again").rglob("last.ckpt"))
    predict = ["predict", *common, "--data.predict_dir", str(unlabeled), "--ckpt_path", str(ckpt)]
    predict += ["--data.class_names", str([str(c) for c in range(10)]), "--predictions_csv", str(work / "p.csv")]
    command = [sys.executable, "-m", "lit_ssgan", *predict, "--trainer.default_root_dir", str(work / "predict")]
    peak, seconds, output = peak_anonymous_memory(command, tree, env)
    rows = len((work / "p.csv").read_text().splitlines()) - 1
    print(f"| predict ({rows} rows) | {peak / 1e9:.2f} GB | {seconds:.0f} s |", flush=True)
    cache = sum(p.stat().st_size for p in (work / "cache").rglob("*.npy"))
    print(f"decode cache on disk: {cache / 1e9:.2f} GB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("--data-dir", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--per-class", type=int, default=10)
    w.add_argument("--val-per-class", type=int, default=100, help="validation images per class, held out")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--pool", action="store_true", help="every training image not in val/ in labeled/")
    lo = sub.add_parser("loader")
    lo.add_argument("--config", default=str(ROOT / "configs" / "image_folder.yaml"))
    lo.add_argument("--folders", help="labeled/<class>/ and unlabeled/ (default: random images, written here)")
    lo.add_argument("--image-size", type=int, default=32)
    lo.add_argument("--workers", nargs="+", default=["auto", "0"], help="data.num_workers values to time")
    lo.add_argument("--batches", type=int, default=100, help="training batches (each of 3 loaders) timed alone")
    lo.add_argument("--steps", type=int, default=6, help="steps timed, after 2 warm-up steps")
    lo.add_argument("--precision", help="trainer.precision (default: the config's)")
    lo.add_argument("--threads", type=int, help="torch threads of the step's process (default: torch's)")
    lo.add_argument("--cache-dir", help="the decode cache (default: a temporary folder)")
    lo.add_argument("extra", nargs="*", help="more lit-ssgan options (after --)")
    de = sub.add_parser("decode")
    de.add_argument("--folder", required=True)
    de.add_argument("--image-size", type=int, default=64)
    de.add_argument("--batch-size", type=int, default=100)
    de.add_argument("--limit", type=int, default=20000)
    de.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    wc = sub.add_parser("write-colour")
    wc.add_argument("--data-dir", required=True)
    wc.add_argument("--out", required=True)
    wc.add_argument("--count", type=int, default=100000)
    wc.add_argument("--size", type=int, default=128)
    wc.add_argument("--seed", type=int, default=1)
    me = sub.add_parser("memory")
    me.add_argument("--folders", required=True, help="what write-colour wrote")
    me.add_argument("--unlabeled", default="unlabeled", help="the unlabeled folder, relative to --folders")
    me.add_argument("--work", required=True, help="a folder for the runs and their cache (emptied first)")
    me.add_argument("--image-size", type=int, default=128)
    me.add_argument("--tree", help="the checkout whose package runs (default: this one)")
    me.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    commands = {"write": write, "loader": loader, "decode": decode}
    commands |= {"write-colour": write_colour, "memory": memory}
    commands[args.command](args)
