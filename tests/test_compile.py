"""model.training.compile: the training step's loss computations through torch.compile. The tests use the
``aot_eager`` backend (dynamo's trace and AOTAutograd's forward and backward graphs, run by eager
kernels: what inductor would compile, without the minutes of C++ compilation)."""

import pytest
import torch
from torch._dynamo.utils import counters

from lit_ssgan import DigitsDataModule
from lit_ssgan.compiling import compile_options
from lit_ssgan.consistency import PiModel
from lit_ssgan.errors import ConfigError
from lit_ssgan.losses import DiscriminatorLoss
from lit_ssgan.training import Training
from tests.helpers import StepLosses, make_model, make_trainer

TRACED = {"backend": "aot_eager"}


def fit(tmp_path, compile=None, steps=3) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The weights after ``steps`` batches of a small digits model, and each batch's D loss."""
    torch.manual_seed(0)
    model, losses = (
        make_model(
            d_loss=DiscriminatorLoss(consistency=PiModel(0.3)),
            training=Training(data_dependent_init=True, compile=compile),
        ),
        StepLosses(),
    )
    trainer = make_trainer(tmp_path, max_steps=steps, callbacks=[losses])
    trainer.fit(model, DigitsDataModule(batch_size=20, batches_per_epoch=4))
    return model.state_dict(), losses.by_epoch[0]


def test_the_compiled_step_is_one_graph_a_network_and_computes_the_eager_steps_losses(tmp_path):
    torch._dynamo.reset()
    counters.clear()
    (compiled, compiled_losses), (eager, eager_losses) = fit(tmp_path / "c", TRACED), fit(tmp_path / "e")
    assert counters["stats"]["unique_graphs"] == 2  # D's losses and G's, each traced once for all steps
    assert not counters["graph_break"]
    assert compiled.keys() == eager.keys()  # the checkpoints, the export and the EMA see the same module
    # the same algorithm, noise and data: the first batch's loss (before Adam's first, sign-like,
    # update magnifies the rounding of weight norm as plain ops against the eager custom kernels)
    assert compiled_losses[0] == pytest.approx(eager_losses[0], rel=1e-5)
    assert compiled_losses[-1] == pytest.approx(eager_losses[-1], rel=0.05)
    initial = make_model().state_dict()
    assert not torch.equal(compiled["discriminator.classifier.v"], initial["discriminator.classifier.v"])


def test_the_compiled_step_is_not_the_eager_step_by_accident(tmp_path, monkeypatch):
    # the check above would pass if the option were ignored: the compiled code must really run
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: calls.append(options) or fn)
    fit(tmp_path, "reduce-overhead", steps=1)
    assert calls == [{"mode": "reduce-overhead"}] * 2


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), (False, None), (True, {}), ("default", {"mode": "default"}), (TRACED, TRACED)],
)
def test_compile_takes_a_switch_a_mode_or_torch_compiles_arguments(value, expected):
    assert compile_options(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [("fast", "compile must be one of 'default'"), ({"modes": "x"}, "compile: modes is not a torch.compile argument")],
)
def test_a_wrong_compile_option_is_named_when_the_model_is_built(value, message):
    with pytest.raises(ConfigError, match=message):
        make_model(training=Training(compile=value))
