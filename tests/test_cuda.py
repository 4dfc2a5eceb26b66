"""On a CUDA GPU (skipped without one): the conv pair trains in bf16 on channels-last maps, the
loaders hand over page-locked batches, and a training step that does not log never waits on the GPU
(the divergence guard is decided on the device)."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import Callback

from lit_ssgan.cli import cli
from tests.helpers import CONFIGS
from tests.test_decode_cache import write_folder

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


class SyncCounter(Callback):
    """Counts the host-device synchronisations torch reports inside each training step (batch 2 on)."""

    def __init__(self) -> None:
        self.syncs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.on_device = all(t.is_cuda for part in batch.values() for t in part)
        if batch_idx >= 1:
            torch.cuda.set_sync_debug_mode("warn")
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step >= 2 and hasattr(self, "_caught"):
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            self.syncs.append(sum("synchroniz" in str(r.message) for r in self._records))
            del self._caught


def test_the_conv_pair_trains_on_a_gpu_in_bf16_with_pinned_batches_and_no_sync(tmp_path):
    for c in ("a", "b"):
        write_folder(tmp_path / "labeled" / c, 8, size=32, seed=ord(c))
    write_folder(tmp_path / "unlabeled", 256, size=32)
    counter = SyncCounter()
    run = cli(
        ["--config", str(CONFIGS / "image_folder.yaml"), "--data.labeled_dir", str(tmp_path / "labeled")]
        + ["--data.unlabeled_dir", str(tmp_path / "unlabeled"), "--data.cache_dir", str(tmp_path / "cache")]
        + ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "4"]
        + ["--trainer.default_root_dir", str(tmp_path / "run")],
        run=False,
    )
    run.trainer.callbacks.append(counter)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert run.trainer.global_step == 4 and counter.on_device
    loader = run.datamodule.train_dataloader()["unlabeled"]
    assert loader.pin_memory
    assert counter.syncs and max(counter.syncs) == 0, counter.syncs  # no step logs: log_every_n_steps 50
    weights = run.model.discriminator.classifier.v
    assert weights.is_cuda and torch.isfinite(weights).all()
