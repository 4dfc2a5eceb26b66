from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from lit_ssgan.cli import cli
from tests.helpers import SHARED_DATA, digits_args, write_png


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _decode_cache_of_the_session(tmp_path_factory) -> Iterator[None]:
    """Image folders decode into a cache of this session's, never the user's ~/.cache (also in the
    commands the tests start as processes of their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def _shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"no copy of {name} at {path}")
    return path


@pytest.fixture
def mnist_dir() -> Path:
    return _shared_dataset("mnist")


@pytest.fixture
def fashion_mnist_dir() -> Path:
    return _shared_dataset("fashion_mnist")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """The ``last.ckpt`` of a 2-batch digits run with the small networks."""
    run = cli(digits_args(tmp_path / "run", "--trainer.max_steps", "2"))
    return Path(run.trainer.log_dir, "checkpoints", "last.ckpt")


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return np.round(data.images * 255 / 16).astype(np.uint8), data.target


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> Path:
    """labeled/<digit>/ (10 a class), unlabeled/ (1 000), test/<digit>/ (300), new/ (100 with their
    true digit kept aside in truth.csv) as 8x8 grey PNGs."""
    root = tmp_path_factory.mktemp("folders")
    images, labels = digits()
    order = np.random.default_rng(0).permutation(len(labels))
    labeled = np.concatenate([order[labels[order] == c][:10] for c in range(10)])
    rest = np.setdiff1d(order, labeled)
    for i in labeled:
        write_png(root / "labeled" / str(labels[i]) / f"img{i}.png", images[i])
    for i in rest[:1000]:
        write_png(root / "unlabeled" / f"img{i}.png", images[i])
    for i in rest[1000:1300]:
        write_png(root / "test" / str(labels[i]) / f"img{i}.png", images[i])
    with open(root / "truth.csv", "w") as f:
        for i in rest[1300:1400]:
            write_png(root / "new" / f"new{i}.png", images[i])
            f.write(f"new{i}.png,{labels[i]}\n")
    return root
