"""The README's examples run as they are written: each ```python block runs (in a scratch directory,
its long training shortened by the substitutions of :data:`SHORTENED`), each ```yaml block of
``model`` options is read by the command's parser and builds the model, and each link to a section
(of the README or of benchmarks/README.md) finds its heading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_ssgan.cli import cli
from tests.helpers import CONFIGS, ROOT

README = ROOT / "README.md"

#: each Python example's long training, and what the test runs in its place: each ``old`` must
#: occur exactly once in the README's examples, so that the test breaks if the README changes shape
SHORTENED = {"max_epochs=30": "max_epochs=1"}

#: the blocks another test runs (it needs a trained, exported classifier): a text each contains
RUN_ELSEWHERE = {'onnxruntime.InferenceSession("classifier.onnx")': ROOT / "tests" / "test_export.py"}


def blocks(language: str, text: str | None = None) -> list[str]:
    """The fenced blocks of ``language`` in ``text`` (default: the README), indented ones too."""
    text = README.read_text() if text is None else text
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", text, flags=re.MULTILINE | re.DOTALL)
    return [re.sub(rf"^{indent}", "", body, flags=re.MULTILINE) for indent, body in found]


def python_examples() -> list[str]:
    examples = [block for block in blocks("python") if not any(key in block for key in RUN_ELSEWHERE)]
    assert examples, "the README has no Python example to run"
    return examples


def shortened(code: str) -> str:
    for old, new in SHORTENED.items():
        code = code.replace(old, new)
    return code


def test_each_shortening_applies_exactly_once():
    examples = "\n".join(python_examples())
    for old in SHORTENED:
        assert examples.count(old) == 1, (
            f"README's Python examples: {old!r} occurs {examples.count(old)} times, not once"
        )


def test_the_blocks_left_to_other_tests_are_run_there():
    for key, test_file in RUN_ELSEWHERE.items():
        assert sum(key in block for block in blocks("python")) == 1, key
        assert "README.md" in test_file.read_text(), f"{test_file.name} no longer runs the README's example"


@pytest.mark.parametrize("index", range(len(python_examples())))
def test_the_python_example_runs(index, tmp_path):
    code = shortened(python_examples()[index])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"README's Python example {index} failed:\n{done.stderr[-3000:]}"


def model_blocks() -> list[str]:
    found = [block for block in blocks("yaml") if block.startswith("model:")]
    assert found, "the README has no YAML block of model options"
    return found


def contained(part: object, whole: object, where: str = "model") -> list[str]:
    """Where ``part`` (a config's values) differs from ``whole`` (the resolved config)."""
    if not isinstance(part, dict):
        return [] if part == whole else [f"{where}: {whole!r} instead of {part!r}"]
    if not isinstance(whole, dict):
        return [f"{where}: {whole!r} is not a mapping"]
    missing = [f"{where}.{key}: missing" for key in part if key not in whole]
    return missing + [
        miss for key in part if key in whole for miss in contained(part[key], whole[key], f"{where}.{key}")
    ]


@pytest.mark.parametrize("index", range(len(model_blocks())))
def test_the_yaml_example_builds_the_model(index, tmp_path, monkeypatch):
    snippet = model_blocks()[index]
    (tmp_path / "example.yaml").write_text(snippet)
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONFIGS / "digits.yaml"), "--config", str(tmp_path / "example.yaml")]
    built = cli(
        [*args, "--trainer.default_root_dir", str(tmp_path / "run")],
        run=False,
        parser_kwargs={"exit_on_error": False},  # an option the model does not take raises, naming it
    )
    differences = contained(yaml.safe_load(snippet)["model"], built.config.model.as_dict())
    assert not differences, f"README's YAML example {index} is not what the command reads: {differences}"
    assert built.model.hparams  # the model was built from them


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)  # no code blocks
    return {anchor(heading) for heading in re.findall(r"^#+ (.*)$", text, flags=re.MULTILINE)}


def test_each_link_to_a_section_finds_its_heading():
    links = re.findall(r"\]\(((?:benchmarks/README\.md)?)#([^)\s]+)\)", README.read_text())
    assert any(page for page, _ in links) and any(not page for page, _ in links)
    broken = [f"{page}#{name}" for page, name in links if name not in anchors(ROOT / (page or "README.md"))]
    assert not broken, f"links to no heading: {broken}"


def test_anchor_follows_github():
    assert anchor("Conv step speed: `conv_speed.py`") == "conv-step-speed-conv_speedpy"
    assert anchor("After a crash: what you can rely on") == "after-a-crash-what-you-can-rely-on"
