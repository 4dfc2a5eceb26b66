"""MNIST as folders of PNG files, for the image-folder path; and how fast they can feed training.

    python benchmarks/image_folders.py write --data-dir ../shared/data/mnist --out /tmp/mnist_png
    python benchmarks/image_folders.py loader --folder /tmp/mnist_png/unlabeled --image-size 64

``write`` makes labeled/<digit>/ (10 a class, drawn with --seed), unlabeled/ (the other 59 900
training images), test/<digit>/ (the 10 000 test images) and new/ (the first 1 000 test images,
flat, with truth.csv). ``loader`` times the two ways to feed training from a folder on this
machine: decoding every image once into memory (what ImageFolderDataModule does), and decoding in
DataLoader workers every epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_ssgan.data.datasets import read_idx
from lit_ssgan.data.image_folder import list_images, read_image, read_images


def write(args: argparse.Namespace) -> None:
    data, out = Path(args.data_dir), Path(args.out)
    images = read_idx(data / "train-images-idx3-ubyte.gz")
    labels = read_idx(data / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(data / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(data / "t10k-labels-idx1-ubyte.gz")
    order = np.random.default_rng(args.seed).permutation(len(labels))
    labeled = np.concatenate([order[labels[order] == c][: args.per_class] for c in range(10)])
    labeled_set = set(labeled.tolist())
    start = time.perf_counter()
    for i in range(len(labels)):
        folder = out / "labeled" / str(labels[i]) if i in labeled_set else out / "unlabeled"
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


def loader(args: argparse.Namespace) -> None:
    paths = list_images(Path(args.folder))[: args.limit]
    n = len(paths)
    start = time.perf_counter()
    images, _, _ = read_images(paths, args.image_size, 3)
    once = time.perf_counter() - start
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    start = time.perf_counter()
    for _ in range(n // args.batch_size):  # an epoch from memory: indexing only
        tensors[torch.randint(0, n, (args.batch_size,))]
    memory_epoch = time.perf_counter() - start
    print(f"{n} images, {args.image_size}x{args.image_size} RGB, {torch.get_num_threads()} threads:")
    print(f"  decode once into memory: {n / once:,.0f} images/s ({once:.1f} s); then an epoch: {memory_epoch:.2f} s")
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("--data-dir", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--per-class", type=int, default=10)
    w.add_argument("--seed", type=int, default=1)
    lo = sub.add_parser("loader")
    lo.add_argument("--folder", required=True)
    lo.add_argument("--image-size", type=int, default=64)
    lo.add_argument("--batch-size", type=int, default=100)
    lo.add_argument("--limit", type=int, default=20000)
    lo.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    args = parser.parse_args()
    write(args) if args.command == "write" else loader(args)
