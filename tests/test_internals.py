"""The private Lightning APIs lit_ssgan touches (lit_ssgan/internals.py): these fail loudly when
a Lightning upgrade breaks one."""

import ast
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.exceptions import SIGTERMException

import lit_ssgan
from lit_ssgan import DigitsDataModule
from lit_ssgan.internals import CHECKED_WITH_LIGHTNING, move_root_dir, step_not_counted, stop_as_on_sigterm
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


def test_no_module_but_internals_uses_a_private_name_of_lightning_or_of_another_module():
    """Private names (``_x``) of Lightning, torch or another lit_ssgan module are imported nowhere
    else, and no private attribute of an imported Lightning or lit_ssgan module or class is read."""
    package = Path(lit_ssgan.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "internals.py":
            continue
        tree, imported = ast.parse(path.read_text()), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PRIVATE_SOURCES:
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                private += [
                    part
                    for part in node.module.split(".")
                    if part.startswith("_") and part != "__future__" and node.module != VERSION_FILE
                ]
                found += [f"{path.relative_to(package)}: {node.module}.{name}" for name in private]
                if node.module.split(".")[0] in OURS_AND_LIGHTNING:
                    imported |= {a.asname or a.name for a in node.names}
            if isinstance(node, ast.Import):
                imported |= {a.asname or a.name for a in node.names if a.name.split(".")[0] in OURS_AND_LIGHTNING}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
                continue
            if node.value.id in imported and node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{path.relative_to(package)}: {node.value.id}.{node.attr}")
    assert found == []


PRIVATE_SOURCES = {"lightning", "lightning_fabric", "torch", "lit_ssgan", "torchmetrics"}
#: the package's version, in a file named by the usual convention: any module may import ``__version__`` from it
VERSION_FILE = "lit_ssgan._version"
OURS_AND_LIGHTNING = ("lightning", "lightning_fabric", "lit_ssgan")


def test_the_trainer_still_keeps_its_root_where_move_root_dir_sets_it(tmp_path):
    trainer = lightning.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    move_root_dir(trainer, tmp_path / "run")
    assert trainer.default_root_dir == trainer.log_dir == str(tmp_path / "run")


def test_the_trainer_still_reads_the_sigterm_flag_stop_as_on_sigterm_sets(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=50)
    model = make_model()

    class StopAtTheThirdBatch(lightning.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                stop_as_on_sigterm(trainer)

    trainer.callbacks.append(StopAtTheThirdBatch())
    assert not trainer.received_sigterm
    with pytest.raises(SIGTERMException):  # after that batch, as on a SIGTERM
        trainer.fit(model, DigitsDataModule())
    assert trainer.global_step == 3
    with pytest.raises(RuntimeError, match="#20806"):
        stop_as_on_sigterm(object())
