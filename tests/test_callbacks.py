"""The callbacks: the moving average of the weights, the sample grids, the random state."""

import cv2
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lit_ssgan import DigitsDataModule
from lit_ssgan.callbacks import EMA, RandomState, SampleGrid, ema_with_warmup
from tests.helpers import make_model, make_trainer


def test_ema_warmup_weights_recent_steps_early_on():
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema_with_warmup(0.9999)(averaged, current, torch.tensor(1))  # after one update: decay min(0.9999, 2/11)
    torch.testing.assert_close(averaged[0], torch.full((3,), 1 - 2 / 11))
    averaged = [torch.zeros(3)]
    ema_with_warmup(0.5)(averaged, current, torch.tensor(10_000))  # late: the decay itself
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.5))


def test_ema_callback_evaluates_and_keeps_the_average(tmp_path):
    model = make_model()
    callbacks = [EMA(decay=0.9), ModelCheckpoint(dirpath=tmp_path, save_last=True)]
    make_trainer(tmp_path, max_steps=6, callbacks=callbacks, enable_checkpointing=True).fit(
        model, DigitsDataModule(batches_per_epoch=3)
    )
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = "discriminator.classifier.v"
    assert not torch.equal(average[name], raw[name])
    # the model ends holding the average: test and predict use it
    assert torch.equal(model.state_dict()[name], average[name])


def test_sample_grid_writes_a_png_and_a_tensorboard_image_every_n_epochs(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="", version="run")
    grid = SampleGrid(num_images=9, every_n_epochs=2)
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=5, logger=logger, callbacks=[grid])
    trainer.fit(make_model(), DigitsDataModule(batches_per_epoch=1))
    pngs = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert pngs == ["epoch=001.png", "epoch=003.png"]  # after epochs 2 and 4
    # 3 x 3 images of 8 px with 2 px padding: 32 px, enlarged 4x
    image = cv2.imread(str(tmp_path / "run" / "samples" / "epoch=001.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (128, 128) and image.min() < image.max()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("kwargs", [{"num_images": 0}, {"every_n_epochs": 0}])
def test_sample_grid_refuses_nothing_to_draw(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SampleGrid(**kwargs)


def test_random_state_is_checkpointed_and_restored_when_training_resumes(tmp_path):
    model = make_model()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    make_trainer(tmp_path, max_steps=2, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        model, DigitsDataModule()
    )
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["rng_states"]
    assert torch.equal(saved["noise"], model.noise_rng.get_state())

    resumed, seen = make_model(), {}

    class Peek(RandomState):
        def on_train_start(self, trainer, pl_module):
            torch.manual_seed(123)  # whatever happened before training starts is undone
            super().on_train_start(trainer, pl_module)
            seen["noise"], seen["torch"] = pl_module.noise_rng.get_state(), torch.get_rng_state()

    resumed.configure_callbacks = lambda: [Peek()]
    make_trainer(tmp_path, max_steps=3).fit(resumed, DigitsDataModule(), ckpt_path=tmp_path / "last.ckpt")
    assert torch.equal(seen["noise"], saved["noise"]) and torch.equal(seen["torch"], saved["torch"])
