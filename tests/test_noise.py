"""Noise a user cannot act on: importing the package connects to nothing and changes no warning
filter; the command filters Lightning's warnings of that kind (lit_ssgan/warning_filters.py) and
keeps the others; the EMA callback evaluates a checkpoint without Lightning's warning; lit_ssgan's
own warnings print as one line under the command."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

import lit_ssgan.cli
from lit_ssgan import DigitsDataModule
from lit_ssgan.callbacks import EMA
from lit_ssgan.cli import cli
from lit_ssgan.warning_filters import NOISE, PACKAGE, OneLineFormat, filter_noise, install
from tests.helpers import ROOT, digits_args, make_model, make_trainer

# -- the import ---------------------------------------------------------------------------------

#: a process in which every connection and name lookup is refused and reported on stderr
NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    print("network:", args[1:], file=sys.stderr)
    raise OSError("no network in this test")
socket.socket.connect = socket.socket.connect_ex = socket.getaddrinfo = refuse
"""


def python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("users", [None, "0"])
def test_importing_the_package_connects_to_nothing_unless_the_user_asks_albumentations_to(users):
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    if users is not None:
        env["NO_ALBUMENTATIONS_UPDATE"] = users
    # lit_ssgan.data imports albumentations (import lit_ssgan alone imports none of the package's parts)
    code = NO_NETWORK + "import os, lit_ssgan.data\nprint(os.environ['NO_ALBUMENTATIONS_UPDATE'])"
    done = python(code, env=env)
    assert done.returncode == 0, done.stderr
    if users is None:  # nothing printed but the switch the package set
        assert (done.stdout, done.stderr) == ("1\n", "")
    else:  # the user's setting is kept, and albumentations' update check runs (so this test would see it)
        assert done.stdout == "0\n"
        assert "network:" in done.stderr and "Error fetching version info" in done.stderr


#: imports what the package imports from elsewhere (some of which set filters of their own), then
#: every module of the package, and prints what the package's own imports changed
IMPORT_EVERYTHING = """
import ast, importlib, pkgutil, sys, warnings
from pathlib import Path
outside = set()
for path in Path("lit_ssgan").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            outside |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            outside.add(node.module)
for name in sorted(m for m in outside if m.split(".")[0] != "lit_ssgan"):
    importlib.import_module(name)
filters, formats, shows = list(warnings.filters), warnings.formatwarning, warnings.showwarning
import lit_ssgan
for module in pkgutil.walk_packages(lit_ssgan.__path__, "lit_ssgan."):
    if module.name != "lit_ssgan.__main__":
        importlib.import_module(module.name)
print("filters added:", [f for f in warnings.filters if f not in filters])
print("filters removed:", [f for f in filters if f not in warnings.filters])
print("format changed:", warnings.formatwarning is not formats, "show changed:", warnings.showwarning is not shows)
"""


def test_importing_every_module_of_the_package_changes_no_warning_filter_and_no_format():
    done = python(IMPORT_EVERYTHING)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "filters added: []",
        "filters removed: []",
        "format changed: False show changed: False",
    ]


# -- Lightning's noise --------------------------------------------------------------------------


def messages(args: list[str], filtered_for: str | None) -> list[str]:
    """The warnings of ``cli(args)``, every one of them, after the command's filters for the
    subcommand ``filtered_for`` (None: no filter)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if filtered_for is not None:
            filter_noise(filtered_for)
        cli(args)
    return [str(w.message) for w in caught]


def found(pattern: str, texts: list[str]) -> bool:
    return any(pattern in text for text in texts)


DIRPATH = "The dirpath has changed from"
SUMMARY = "Precision bf16-mixed is not supported by the model summary"
EMPTY_VALIDATION = "Total length of `list` across ranks is zero"
FIT_ONLY_CALLBACK = "Please add the following callbacks: ['EpochLine']"  # validate, test, predict of a fit's checkpoint
LOGGING_INTERVAL = "smaller than the logging interval"  # the user can act on it: kept
LIGHTNING_NOISE = (DIRPATH, SUMMARY, EMPTY_VALIDATION)


@pytest.mark.parametrize("filtered", [False, True])
def test_the_command_filters_lightning_s_noise_and_keeps_what_the_user_can_act_on(tmp_path, filtered):
    # fit in bf16 with the model summary, no validation set; a resume; validate without a validation set
    no_val = ["--data.val_size", "0"]
    fit = digits_args(tmp_path, *no_val, "--trainer.max_steps", "2", "--trainer.precision", "bf16-mixed")
    fit[fit.index("--trainer.enable_model_summary") + 1] = "true"
    resume = digits_args(tmp_path, *no_val, "--trainer.max_steps", "4", "--ckpt_path", "last")
    validate = digits_args(tmp_path, *no_val, "--ckpt_path", "last", subcommand="validate")
    of_fit = messages(fit, "fit" if filtered else None) + messages(resume, "fit" if filtered else None)
    of_validate = messages(validate, "validate" if filtered else None)
    if not filtered:  # this Lightning raises each of them here, so the check below can fail
        assert all(found(noise, of_fit) for noise in LIGHTNING_NOISE), of_fit
        assert found(FIT_ONLY_CALLBACK, of_validate), of_validate
    else:
        assert not any(found(noise, of_fit) for noise in LIGHTNING_NOISE), of_fit
        assert not found(DIRPATH, of_validate) and not found(FIT_ONLY_CALLBACK, of_validate)
    assert found(LOGGING_INTERVAL, of_fit)
    # validate with nothing to validate: the one sign of it stays
    assert found(EMPTY_VALIDATION, of_validate)


def test_the_filters_name_lightning_s_modules_and_are_added_once_however_often_installed():
    with warnings.catch_warnings():
        filter_noise("fit")
        filter_noise("fit")
        ours = [f for f in warnings.filters if f[0] == "ignore" and f[3] is not None and "lightning" in f[3].pattern]
    assert len(ours) == len([noise for noise in NOISE if noise.subcommands is None or "fit" in noise.subcommands])
    assert all(noise.module.startswith("lightning.pytorch.") for noise in NOISE)


# -- the EMA callback ---------------------------------------------------------------------------


class Evaluated(Callback):
    """The model's weights when validate or test starts."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def on_validation_start(self, trainer, pl_module) -> None:
        self.weights = {name: t.clone() for name, t in pl_module.state_dict().items()}

    on_test_start = on_validation_start


def test_ema_evaluates_a_checkpoint_on_its_average_without_lightning_s_warning(tmp_path):
    dm, model = DigitsDataModule(batches_per_epoch=3), make_model()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = make_trainer(tmp_path, max_steps=6, callbacks=[EMA(decay=0.9), checkpoint], enable_checkpointing=True)
    trainer.fit(model, dm)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    average, raw = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(average[name], raw[name]) for name in average)  # so the check tells them apart
    # a new Trainer (the test and validate subcommands), and one that has fit (--test_after_fit with a best checkpoint)
    evaluated = Evaluated()
    fresh = make_trainer(tmp_path, callbacks=[EMA(decay=0.9), evaluated])
    trainer.callbacks.append(evaluated)
    for run in (fresh.test, fresh.validate, trainer.test):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(make_model(), dm, ckpt_path=tmp_path / "last.ckpt", verbose=False)
        assert not found("WeightAveraging", [str(w.message) for w in caught])
        assert all(torch.equal(evaluated.weights[name], average[name]) for name in average)


# -- lit_ssgan's own warnings -------------------------------------------------------------------


def default_format(message, category, filename, lineno, line=None) -> str:
    return f"{filename}:{lineno}: {category.__name__}: {message}\n"


def test_warnings_of_the_package_are_one_line_and_all_others_keep_their_format():
    formatted = OneLineFormat(default_format)
    ours, torchs = lit_ssgan.cli.__file__, torch.__file__
    assert formatted("no last.ckpt", UserWarning, ours, 136) == "lit-ssgan: warning: no last.ckpt\n"
    assert formatted("elsewhere", UserWarning, torchs, 7) == default_format("elsewhere", UserWarning, torchs, 7)
    # torch's deprecation of a call in lit_ssgan's code is not lit_ssgan's word: its full form says where
    deprecated = default_format("old", DeprecationWarning, ours, 3)
    assert formatted("old", DeprecationWarning, ours, 3) == deprecated
    assert formatted("x", UserWarning, "<string>", 1) == default_format("x", UserWarning, "<string>", 1)


def test_install_wraps_the_format_once(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", default_format)
    with warnings.catch_warnings():
        install("fit")
        install("fit")
    assert isinstance(warnings.formatwarning, OneLineFormat) and warnings.formatwarning.previous is default_format


#: the command with its warning treatment, as ``lit_ssgan.cli.main`` installs it
COMMAND = (
    "import sys\nfrom lit_ssgan import warning_filters\nfrom lit_ssgan.cli import main\n"
    "warning_filters.install(sys.argv[1])\nmain()"
)


def test_the_command_prints_lit_ssgan_s_warnings_in_one_line(tmp_path):
    root = tmp_path / "run"
    args = digits_args(root, "--data.val_size", "0", "--trainer.max_steps", "1", "--ckpt_path", "last")
    done = python(COMMAND, *args)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert f"lit-ssgan: warning: --ckpt_path last: no last.ckpt under {root} yet; starting from scratch" in lines
    assert str(PACKAGE) not in done.stderr and EMPTY_VALIDATION not in done.stderr
    # Lightning's own warning keeps Lightning's format: its file and line first
    (interval,) = [line for line in lines if LOGGING_INTERVAL in line]
    assert interval.startswith(str(Path(lightning.__file__).parent))
