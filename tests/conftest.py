from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# The real datasets sit beside the checkout (../shared/data), never in the repository.
SHARED_DATA = Path(os.environ.get("LIT_SSGAN_DATA", ROOT.parent / "shared" / "data"))


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


def digits_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments for a small, quick digits run under ``root``."""
    return [
        "--config",
        str(CONFIGS / "digits.yaml"),
        "--model.discriminator.init_args.hidden",
        "[64, 32]",
        "--model.generator.init_args.hidden",
        "[32]",
        "--model.num_sample_images",
        "16",
        "--data.init_args.batch_size",
        "20",
        "--data.init_args.batches_per_epoch",
        "4",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--test_after_fit",
        "false",
        *extra,
    ]
