"""One draw of a ``lit-ssgan draws`` study: what it is (:class:`Draw`), what it left
(:class:`DrawResult`), and the files of its folder: its run folders, its ``test.json`` and
scores."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: the labels-only twin of a draw: every term on unlabeled data off
LABELS_ONLY = [
    "--model.d_loss.init_args.unlabeled_weight=0",
    "--model.d_loss.init_args.unlabeled_entropy_weight=0",
    "--model.d_loss.init_args.consistency=null",
]
#: each draw's log (the fit's output, both streams), in its folder
LOG_NAME = "fit.log"
#: the scores that are errors (lower is better), in the order the ratio and the plot look for them
ERROR_SCORES = ("error", "rmse", "mae")


@dataclass(frozen=True)
class Draw:
    """One run of the study: the config on draw ``seed``, or its labels-only twin."""

    seed: int
    twin: bool
    folder: Path

    @property
    def name(self) -> str:
        return f"seed {self.seed}{', labels only' if self.twin else ''}"

    @property
    def log(self) -> Path:
        return self.folder / LOG_NAME


@dataclass
class DrawResult:
    """What a finished draw left: its test scores (``test.json``), its validation curve (each
    epoch's ``val/`` scores, from the run's logs), and its labeled examples."""

    test: dict[str, float]
    curve: list[tuple[int, dict[str, float]]]
    labeled_examples: Path | None
    labeled_sha256: str = ""

    @property
    def val(self) -> dict[str, float]:
        """The validation scores at the end: the last epoch's."""
        return self.curve[-1][1] if self.curve else {}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def versions(folder: Path) -> list[Path]:
    """The run folders (``lightning_logs/version_N``, any logger's name) under a draw's folder, by N."""
    found = [p for p in folder.glob("*/version_*") if p.is_dir() and p.name.removeprefix("version_").isdigit()]
    return sorted(found, key=lambda p: (int(p.name.removeprefix("version_")), str(p)))


def find_test_json(folder: Path) -> Path | None:
    """The ``test.json`` of a draw: the latest run folder's that has one."""
    found = [version / "test.json" for version in versions(folder) if (version / "test.json").is_file()]
    return found[-1] if found else None


def test_scores(path: Path) -> dict[str, float]:
    return {k: float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).get("scores", {}).items()}


def error_name(scores: Sequence[str], prefix: str) -> str | None:
    """The first of :data:`ERROR_SCORES` among ``scores`` (``prefix`` + name)."""
    return next((f"{prefix}{name}" for name in ERROR_SCORES if f"{prefix}{name}" in scores), None)


def score_text(scores: dict[str, float]) -> str:
    shown = error_name(list(scores), "test/") or next(iter(scores), None)
    return f"{shown} {scores[shown]:.4f}" if shown else "no test scores"
