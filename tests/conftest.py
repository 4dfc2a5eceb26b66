from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_ssgan.cli import cli
from tests.helpers import SHARED_DATA, digits_args


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


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
