"""The private Lightning APIs lit_ssgan touches (lit_ssgan/internals.py): these fail loudly when
a Lightning upgrade breaks one."""

import lightning
import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from lit_ssgan import DigitsDataModule
from lit_ssgan.internals import CHECKED_WITH_LIGHTNING, step_not_counted
from tests.helpers import make_model, make_trainer


def test_lightning_optimizer_still_has_the_progress_hooks_the_step_count_patch_switches_off():
    opt = LightningOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    assert callable(opt._on_before_step) and callable(opt._on_after_step), (
        f"Lightning {lightning.__version__} changed LightningOptimizer (checked with {CHECKED_WITH_LIGHTNING})"
    )


def test_a_step_inside_step_not_counted_leaves_the_global_step_alone(tmp_path):
    # two optimizer steps a batch, one counted: global_step == batches
    trainer = make_trainer(tmp_path, max_steps=5)
    trainer.fit(make_model(), DigitsDataModule())
    assert trainer.global_step == 5
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 5


def test_a_renamed_hook_is_reported_not_silently_double_counted():
    class Renamed:
        pass

    with pytest.raises(RuntimeError, match="#17958"), step_not_counted(Renamed()):  # type: ignore[arg-type]
        pass
