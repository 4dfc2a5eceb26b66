"""A config's bf16 on a CPU without bf16 kernels trains in fp32 (lit_ssgan.precision)."""

from __future__ import annotations

import platform
import warnings

import pytest
import torch

from lit_ssgan import DigitsDataModule
from lit_ssgan.cli import cli
from lit_ssgan.precision import cpu_bf16_is_slow, fast_cpu_precision
from tests.helpers import digits_args, make_model, make_trainer


@pytest.fixture
def cpu(monkeypatch):
    """Sets what torch says of the CPU: ``cpu("AVX2")``, optionally another architecture."""

    def set_cpu(capability: str, machine: str = "x86_64") -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(platform, "machine", lambda: machine)

    return set_cpu


def test_bf16_is_slow_on_x86_below_avx512_only(cpu):
    for capability, machine, slow in [
        ("AVX2", "x86_64", True),
        ("DEFAULT", "AMD64", True),
        ("AVX512", "x86_64", False),
        ("DEFAULT", "arm64", False),  # no rule known for other architectures
        ("SVE256", "aarch64", False),
    ]:
        cpu(capability, machine)
        assert cpu_bf16_is_slow() is slow, (capability, machine)


def test_a_configs_bf16_on_a_cpu_without_bf16_kernels_becomes_fp32(cpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu("AVX2")
    for precision in ("bf16-mixed", "bf16", "bf16-true"):
        for accelerator in ("cpu", "auto"):
            kept, message = fast_cpu_precision(precision, accelerator)
            assert kept == "32-true" and f"trainer.precision {precision}" in message and "AVX2" in message
    for precision, accelerator in [("32-true", "cpu"), ("16-mixed", "cpu"), (None, "auto"), ("bf16-mixed", "gpu")]:
        assert fast_cpu_precision(precision, accelerator) == (precision, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # auto picks the GPU
    assert fast_cpu_precision("bf16-mixed", "auto") == ("bf16-mixed", None)
    cpu("AVX512")
    assert fast_cpu_precision("bf16-mixed", "cpu") == ("bf16-mixed", None)


def bf16_config(tmp_path):
    path = tmp_path / "bf16.yaml"
    path.write_text("trainer:\n  precision: bf16-mixed\n  accelerator: cpu\n")
    return ["--config", str(path)]


def test_fit_of_a_bf16_config_on_such_a_cpu_trains_in_fp32_and_says_so(cpu, tmp_path):
    cpu("AVX2")
    with pytest.warns(UserWarning, match=r"bf16-mixed on this CPU \(AVX2, no AVX-512\).*training in 32-true") as said:
        run = cli(digits_args(tmp_path, *bf16_config(tmp_path), "--trainer.max_steps", "2"))
    assert run.trainer.precision == "32-true" and run.trainer.global_step == 2
    assert sum("AVX2" in str(w.message) for w in said) == 1  # said once: the module does not warn again
    saved = next(tmp_path.rglob("config.yaml")).read_text()
    assert "precision: 32-true" in saved  # the run's config says what it trained in


def test_bf16_given_on_the_command_line_or_on_a_cpu_with_bf16_is_kept(cpu, tmp_path, recwarn):
    cpu("AVX2")
    run = cli(
        digits_args(tmp_path, *bf16_config(tmp_path), "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "1")
    )
    assert run.trainer.precision == "bf16-mixed"  # the user's own choice: kept, with a warning when it runs
    said = [str(w.message) for w in recwarn if "AVX2" in str(w.message)]
    assert len(said) == 1 and "32-true trains as fast as this CPU can" in said[0]
    cpu("AVX512")
    assert cli(digits_args(tmp_path, *bf16_config(tmp_path))[1:], run=False).trainer.precision == "bf16-mixed"


def test_a_python_trainer_in_bf16_on_such_a_cpu_is_warned_once_for_fit_and_test(cpu, tmp_path, recwarn):
    cpu("AVX2")
    warnings.simplefilter("always")  # as the command shows its warnings: each one, not once a place
    trainer = make_trainer(tmp_path, max_steps=1, precision="bf16-mixed")
    model, data = make_model(), DigitsDataModule()
    trainer.fit(model, data)
    trainer.test(model, data)
    said = [w for w in recwarn if "no AVX-512" in str(w.message)]
    assert len(said) == 1 and trainer.precision == "bf16-mixed"
