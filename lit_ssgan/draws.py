"""``lit-ssgan draws``: one ``fit`` config over several draws of its labeled examples, each draw
a ``lit-ssgan fit`` of its own (a subprocess, in a folder of its own), and one table of their
scores with mean ± std, beside each draw's ``labeled_examples.csv`` and a plot of the validation
curves.

A draw ``S`` is the config run with ``--seed_everything S --data.init_args.data_seed S``: the
labeled examples, the initial weights and the batches all follow from ``S``. Its labels-only twin
is the same draw with every term on unlabeled data off (:data:`LABELS_ONLY`).

The study is resumable: a draw whose folder holds its ``test.json`` is read, not rerun; one that
stopped (a ``last.ckpt`` but no ``test.json``) goes on from its checkpoint with ``--ckpt_path last``.
``OUT/study.json`` records the config's digest and the fit options, so that draws of another
config or other options are never read into the same table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import numpy as np

from lit_ssgan.errors import ConfigError, MissingFileError, UserError
from lit_ssgan.files import write_atomically, write_json
from lit_ssgan.outputs import check_output_folder

__all__ = ["LABELS_ONLY", "DrawsFailedError", "draws"]

#: the labels-only twin of a draw: every term on unlabeled data off
LABELS_ONLY = [
    "--model.d_loss.init_args.unlabeled_weight=0",
    "--model.d_loss.init_args.unlabeled_entropy_weight=0",
    "--model.d_loss.init_args.consistency=null",
]

#: the fit options each draw sets itself, refused in ``fit_options``
SET_BY_DRAWS = {
    "--seed_everything": "each draw's seed",
    "--data.init_args.data_seed": "each draw's seed",
    "--data.data_seed": "each draw's seed",
    "--trainer.default_root_dir": "each draw's folder under --out",
    "--ckpt_path": "last, for a draw that stopped",
    "--test_after_fit": "true: the table needs each draw's test scores",
}

#: each draw's log (the fit's output, both streams), in its folder
LOG_NAME = "fit.log"
#: what a study in ``out`` is: the config's digest and the fit options
STUDY_NAME = "study.json"
#: the scores that are errors (lower is better), in the order the ratio and the plot look for them
ERROR_SCORES = ("error", "rmse", "mae")
#: cores a draw takes when several run on one GPU (the step's Python thread, its data)
CORES_PER_DRAW = 2
#: on a GPU, the share of the free memory the draws may fill, and the margin on the first's peak
GPU_MEMORY_SHARE, GPU_MEMORY_MARGIN = 0.9, 1.25
#: the least GPU memory a draw is taken to need (MiB), whatever was measured
GPU_MEMORY_FLOOR_MIB = 1024.0
#: how long the first draw on a GPU is measured at most, if it does not end its first epoch sooner
MEASURE_LIMIT_S = 300.0
#: seconds between two looks at the running draws
POLL_S = 0.5
#: the line EpochLine prints after each epoch's validation
EPOCH_LINE = re.compile(r"^Epoch \d+ \[", re.MULTILINE)


class DrawsFailedError(UserError, RuntimeError):
    """One or more draws failed (their logs say why); the table holds the others."""


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


@dataclass
class _Running:
    draw: Draw
    process: subprocess.Popen
    log: Any
    log_start: int  # where in the log this run's output begins
    started: float
    slot: int


def draws(
    fit_config: Path,
    out: Path,
    draws: int | list[int] = 5,
    labels_only: bool = False,
    parallel: int | None = None,
    fit_options: list[str] | None = None,
) -> Path:
    """Runs ``fit_config`` over several label draws and writes their table.

    Each draw runs ``python -m lit_ssgan fit --config FIT_CONFIG [FIT_OPTIONS] --seed_everything S
    --data.init_args.data_seed S --test_after_fit true --trainer.default_root_dir OUT/NAME/seed-S``
    (``NAME``: the config's file name without ``.yaml``; ``NAME-labels-only`` for the twins), its
    output in ``fit.log`` in that folder, and prints a line when it starts and when it ends (its
    test error and time, or the log's last line). A draw with ``test.json`` in its folder is read,
    not rerun; one with a ``last.ckpt`` and no ``test.json`` resumes from it (``--ckpt_path last``).
    Before any draw starts, the config is built once as each kind of draw builds it (in a
    subprocess, through ``lit_ssgan.cli.cli(..., run=False)``) and its test set checked.

    Written in ``out``: ``draws.csv`` and ``draws.md`` (per draw: the seed, the sha256 of its
    ``labeled_examples.csv``, the last validation scores, the test scores of its ``test.json``;
    with ``labels_only`` the twin's and the ratio of the test errors; then the mean and the sample
    std of each column, the ratio row being the ratio of the means), ``seed-S-labeled_examples.csv``
    for each draw, ``curves.png`` (each draw's validation error by epoch, read from the run's
    TensorBoard events or CSV logger) and ``study.json``.

    Several draws at once: on a CPU one at a time unless ``parallel`` says more. On a GPU, with
    ``parallel`` unset, the first draw runs alone until it has ended its first epoch (at most
    :data:`MEASURE_LIMIT_S`); the GPU memory it took then (the device's free memory before and
    after, by ``nvidia-smi``), times :data:`GPU_MEMORY_MARGIN`, sizes how many more fit in
    :data:`GPU_MEMORY_SHARE` of the memory still free, at most one per :data:`CORES_PER_DRAW`
    cores. Without ``nvidia-smi``: one at a time. With more than one at once, each draw is pinned
    to its share of the cores and gets ``OMP_NUM_THREADS`` of that share (at most the one set).

    A Ctrl-C or SIGTERM is passed on to the running draws, which stop with a checkpoint; the table
    of the finished draws is written, and the command exits with 130 or 143: run it again to go on.

    Args:
        fit_config: a lit-ssgan fit config (YAML), as for lit-ssgan fit --config
        out: the folder of the study: each draw's run folder, the table, the plot
        draws: N (draws 1 to N: draw S runs with seed_everything and data_seed S), or a list of seeds
        labels_only: also run each draw's labels-only twin (unlabeled_weight 0, unlabeled_entropy_weight
            0, no consistency), and give the ratio of the test errors
        parallel: draws at once (default: 1 on a CPU; on a GPU sized to its free memory and the cores)
        fit_options: more lit-ssgan fit options for every draw: --fit_options+=--trainer.max_epochs=3, once an
            option, or a list, '["--trainer.max_epochs=3", "--data.init_args.num_labeled=100"]'

    Returns:
        The table, ``draws.md``.

    Raises:
        MissingFileError: ``fit_config`` does not exist.
        ConfigError: naming the option, before any draw starts: ``draws`` below 1 or a list with a
            seed twice or below 0, ``parallel`` below 1, an ``out`` that cannot be written or that
            holds a study of another config or other fit options, a fit option that each draw sets
            itself, or a config with fit options that ``lit-ssgan fit`` refuses.
        DrawsFailedError: one or more draws failed (after the others ran and the table was written).
    """
    fit_config, out = Path(fit_config), Path(out)
    options = list(fit_options or [])
    seeds = _seeds(draws)
    if parallel is not None and (isinstance(parallel, bool) or parallel < 1):
        raise ConfigError(f"--parallel must be 1 or more, got {parallel}")
    if not fit_config.is_file():
        raise MissingFileError(f"--fit_config {fit_config}: no such file")
    _check_options(options)
    check_output_folder(out, "--out")
    study = {"fit_config_sha256": _sha256(fit_config), "fit_options": options}
    _check_study(out, study, fit_config)
    _check_config(fit_config, options, labels_only, seeds[0])
    write_json(out / STUDY_NAME, {"fit_config": str(fit_config.resolve()), **study})

    name = fit_config.stem
    jobs = [
        Draw(seed, twin, out / (f"{name}-labels-only" if twin else name) / f"seed-{seed}")
        for seed in seeds
        for twin in ((False, True) if labels_only else (False,))
    ]
    runner = _Runner(fit_config, options, parallel)
    stopped = runner.run(jobs)
    results = {job: _read_result(job.folder) for job in jobs}
    table = _write_outputs(out, fit_config, options, seeds, labels_only, results)
    summary = _summary(seeds, labels_only, results)
    if summary:
        print(summary, flush=True)
    if stopped is not None:
        done = sum(result is not None for result in results.values())
        print(
            f"lit-ssgan draws: stopped ({'Ctrl-C' if stopped == signal.SIGINT else 'SIGTERM'}); {done} of "
            f"{len(jobs)} draws finished; the same command goes on with the others",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(128 + stopped)
    failed = [job for job, result in results.items() if result is None]
    if failed:
        raise DrawsFailedError(
            f"{len(failed)} of {len(jobs)} draws failed ({'; '.join(f'{j.name}: {j.log}' for j in failed)}); "
            f"the table {table} holds the others; the same command runs the failed ones again"
        )
    return table


# -- the checks before the work ----------------------------------------------------------------


def _seeds(draws: int | Sequence[int]) -> list[int]:
    if isinstance(draws, bool):
        raise ConfigError(f"--draws must be a number of draws or a list of seeds, got {draws}")
    if isinstance(draws, int):
        if draws < 1:
            raise ConfigError(f"--draws must be 1 or more, got {draws}")
        return list(range(1, draws + 1))
    seeds = list(draws)
    if not seeds:
        raise ConfigError("--draws: an empty list of seeds")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"--draws: seeds must be whole numbers 0 or more, got {seeds}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"--draws: seed {', '.join(map(str, twice))} given twice")
    return seeds


def _check_options(options: list[str]) -> None:
    """Refuses a fit option that each draw sets itself."""
    for option in options:
        key = option.split("=", 1)[0]
        if key in SET_BY_DRAWS:
            raise ConfigError(f"--fit_options: {key} is set by lit-ssgan draws ({SET_BY_DRAWS[key]})")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_study(out: Path, study: dict[str, Any], fit_config: Path) -> None:
    """Refuses an ``out`` whose draws ran another config (another digest) or other fit options."""
    path = out / STUDY_NAME
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    differs = [key for key in study if recorded.get(key) != study[key]]
    if differs:
        was = recorded.get("fit_config", "?"), shlex.join(recorded.get("fit_options") or [])
        raise ConfigError(
            f"--out {out} holds draws of another study (--fit_config {was[0]} --fit_options [{was[1]}]); "
            f"--fit_config {fit_config} {'as it is now ' if 'fit_config_sha256' in differs else ''}"
            f"{'and these fit options ' if 'fit_options' in differs else ''}would mix other runs into its table: "
            "give another --out, or that study's config and fit options to go on with it"
        )


#: run in a subprocess: builds the config once per list of fit options (argv[1], JSON) as
#: ``lit-ssgan fit`` does, checks its test set, and writes the first refusal to argv[2] as JSON
_CHECK = r"""
import json, sys
from lit_ssgan.cli import cli, condensed
from lit_ssgan.errors import user_error
for index, args in enumerate(json.loads(sys.argv[1])):
    try:
        built = cli(args, run=False, parser_kwargs={"exit_on_error": False})
        built.datamodule.check_test_set("--test_after_fit")
    except (Exception, SystemExit) as err:
        message = condensed(str(user_error(err) or err)) if isinstance(err, Exception) else "asks for --help"
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            json.dump({"index": index, "message": message}, f)
        sys.exit(3)
"""


def _check_config(fit_config: Path, options: list[str], labels_only: bool, seed: int) -> None:
    """Builds the config with the fit options (and the twin's) as a draw does, in a subprocess,
    before any draw starts.

    Raises:
        ConfigError: naming the config and options, with fit's reason in one line.
    """
    kinds = [[*options], *([[*options, *LABELS_ONLY]] if labels_only else [])]
    with tempfile.TemporaryDirectory() as folder:
        lists = [_fit_args(fit_config, more, seed, Path(folder) / "run")[4:] for more in kinds]
        refusal = Path(folder) / "refusal.json"
        command = [sys.executable, "-c", _CHECK, json.dumps(lists), str(refusal)]
        done = subprocess.run(command, capture_output=True, text=True, env=_environment(None))
        if done.returncode == 3 and refusal.is_file():
            found = json.loads(refusal.read_text(encoding="utf-8"))
            reason = " ".join(line.strip() for line in found["message"].splitlines() if line.strip())
            given = f"--fit_config {fit_config}" + (f" --fit_options [{shlex.join(options)}]" if options else "")
            twin = f" with the labels-only options of --labels_only ({' '.join(LABELS_ONLY)})" if found["index"] else ""
            raise ConfigError(f"{given}{twin}: lit-ssgan fit refuses them: {reason}")
        if done.returncode != 0:
            raise RuntimeError(f"checking --fit_config {fit_config} failed:\n{done.stderr[-4000:]}")


def _fit_args(fit_config: Path, more: list[str], seed: int, folder: Path, resume: bool = False) -> list[str]:
    """The command line of one draw."""
    return [
        sys.executable,
        "-m",
        "lit_ssgan",
        "fit",
        "--config",
        str(fit_config),
        "--trainer.enable_progress_bar=false",  # a log file, not a terminal
        *more,
        f"--seed_everything={seed}",
        f"--data.init_args.data_seed={seed}",
        "--test_after_fit=true",
        f"--trainer.default_root_dir={folder}",
        *(["--ckpt_path=last"] if resume else []),
    ]


# -- running the draws -------------------------------------------------------------------------


def _environment(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the log is current when the draw stops
    if threads is not None:
        given = env.get("OMP_NUM_THREADS", "")
        env["OMP_NUM_THREADS"] = str(min(threads, int(given)) if given.isdigit() and int(given) > 0 else threads)
    return env


def _cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def core_sets(cores: Sequence[int], slots: int) -> list[list[int]]:
    """``cores`` shared among ``slots`` draws: contiguous groups, as even as can be, one core each
    (shared round) where there are fewer cores than slots.

    Example:
        >>> core_sets(range(16), 3)
        [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]
        >>> core_sets([0, 1], 3)
        [[0], [1], [0]]
    """
    cores = list(cores)
    if slots > len(cores):
        return [[cores[i % len(cores)]] for i in range(slots)]
    return [[int(core) for core in group] for group in np.array_split(np.array(cores), slots)]


def gpu_slots(free_mib: float, draw_mib: float, cap: int) -> int:
    """How many draws run at once on a GPU where one is running, has taken ``draw_mib`` and left
    ``free_mib`` free: the running one and as many more as fit in :data:`GPU_MEMORY_SHARE` of the
    free memory at :data:`GPU_MEMORY_MARGIN` times ``draw_mib`` each (at least
    :data:`GPU_MEMORY_FLOOR_MIB`); 1 to ``cap``.

    Example:
        >>> gpu_slots(free_mib=100_000, draw_mib=4_000, cap=8)  # 18 more would fit; 8 cores' worth
        8
        >>> gpu_slots(free_mib=12_000, draw_mib=4_000, cap=8)
        3
    """
    need = max(draw_mib * GPU_MEMORY_MARGIN, GPU_MEMORY_FLOOR_MIB)
    return max(1, min(cap, 1 + int(free_mib * GPU_MEMORY_SHARE // need)))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_free_mib() -> float | None:
    """The free memory of the first visible GPU (MiB), by ``nvidia-smi``; None without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    query = [smi, f"--id={visible or 0}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
        return float(done.stdout.split()[0]) if done.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class _GpuSizer:
    """Measures the first draw on a GPU (``first``, once started) and says how many run at once
    (:func:`gpu_slots`)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.before = _gpu_free_mib()
        self.peak = 0.0
        self.first: _Running | None = None
        self.slots: int | None = None if self.before is not None else 1
        if self.before is None:
            print("one draw at a time: no nvidia-smi to measure a draw's GPU memory (--parallel N sets it)", flush=True)

    def update(self) -> None:
        """One look at the first draw: its memory so far; the number at once when it has ended its
        first epoch, or its run, or after :data:`MEASURE_LIMIT_S`."""
        if self.slots is not None or self.first is None or self.before is None:
            return
        free = _gpu_free_mib()
        if free is not None:
            self.peak = max(self.peak, self.before - free)
        ended = self.first.process.poll() is not None
        epoch = not ended and _epoch_ended(self.first)
        if ended or epoch or free is None or time.monotonic() - self.first.started > MEASURE_LIMIT_S:
            free = free if free is not None else self.before
            self.slots = gpu_slots(free, self.peak, self.cap)
            when = "by the end of its first epoch" if epoch else "in its run" if ended else "as measured"
            print(
                f"{self.slots} draws at once on the GPU: the first took {self.peak / 1024:.1f} GiB {when}, "
                f"{free / 1024:.1f} GiB is free, {len(_cores())} cores (one draw for {CORES_PER_DRAW})",
                flush=True,
            )


def _epoch_ended(running: _Running) -> bool:
    """Whether the draw has printed an epoch's line (EpochLine's) since it started."""
    try:
        with running.draw.log.open("rb") as f:
            f.seek(running.log_start)
            return EPOCH_LINE.search(f.read().decode("utf-8", errors="replace")) is not None
    except OSError:
        return False


@dataclass
class _Runner:
    """Starts the draws that are not finished, as many at once as it may, and reports each."""

    fit_config: Path
    options: list[str]
    parallel: int | None
    running: list[_Running] = field(default_factory=list)
    stop: int | None = None  # the signal that stops the study

    def run(self, jobs: list[Draw]) -> int | None:
        """Runs the unfinished ``jobs``; returns the signal that stopped them, or None."""
        pending = []
        for job in jobs:
            test_json = _test_json(job.folder)
            if test_json is None:
                pending.append(job)
            else:
                print(f"{job.name}: finished before, not rerun: {_score_text(_test_scores(test_json))}", flush=True)
        if not pending:
            return None
        cores = _cores()
        sizer = None
        if self.parallel is not None:
            slots = cap = min(self.parallel, len(pending))
        elif _cuda_available():
            cap = max(1, min(len(pending), len(cores) // CORES_PER_DRAW))
            sizer = _GpuSizer(cap) if cap > 1 else None
            slots = cap if sizer is None else 1
        else:
            slots = cap = 1
        if sizer is None:
            at_once = min(slots, len(pending))
            print(f"{at_once} draws at once" if at_once > 1 else "one draw at a time", flush=True)
        sets = core_sets(cores, cap)
        threads = max(1, len(cores) // cap) if cap > 1 else None
        with self._signals():
            while (pending and self.stop is None) or self.running:
                if sizer is not None:
                    sizer.update()
                    slots = sizer.slots or 1
                while pending and self.stop is None and len(self.running) < slots:
                    self._start(pending.pop(0), sets if cap > 1 else None, threads)
                    if sizer is not None and sizer.first is None:
                        sizer.first = self.running[-1]
                time.sleep(POLL_S)
                for running in [r for r in self.running if r.process.poll() is not None]:
                    self.running.remove(running)
                    self._finish(running)
        return self.stop

    def _start(self, draw: Draw, sets: list[list[int]] | None, threads: int | None) -> None:
        draw.folder.mkdir(parents=True, exist_ok=True)
        resume = any(draw.folder.rglob("last*.ckpt"))
        command = _fit_args(self.fit_config, [*self.options, *(LABELS_ONLY if draw.twin else [])], draw.seed,
                            draw.folder, resume)  # fmt: skip
        slot = min(set(range(len(sets or [0]))) - {r.slot for r in self.running})
        cpus = sets[slot] if sets is not None and hasattr(os, "sched_setaffinity") else None
        log = open(draw.log, "a", encoding="utf-8")  # noqa: SIM115 (closed when the draw ends)
        log.write(f"\n== lit-ssgan draws: {'resumed' if resume else 'started'}: {shlex.join(command)}\n")
        log.flush()
        log_start = log.tell()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(threads),
            start_new_session=True,  # a Ctrl-C reaches the draws once, through this process
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None,
        )
        self.running.append(_Running(draw, process, log, log_start, time.monotonic(), slot))
        how = "resumed from its last.ckpt" if resume else "started"
        print(f"{draw.name}: {how} (log: {draw.log})", flush=True)

    def _finish(self, running: _Running) -> None:
        running.log.close()
        draw, status = running.draw, running.process.returncode
        took = _duration(time.monotonic() - running.started)
        test_json = _test_json(draw.folder)
        if status == 0 and test_json is not None:
            print(f"{draw.name}: done in {took}: {_score_text(_test_scores(test_json))}", flush=True)
        elif self.stop is not None:  # stopped with a checkpoint, or before it had one
            again = "its last.ckpt resumes it" if any(draw.folder.rglob("last*.ckpt")) else "it starts again"
            print(f"{draw.name}: stopped after {took} (exit status {status}); {again}", flush=True)
        else:
            print(
                f"{draw.name}: failed after {took} (exit status {status}): {_last_line(draw.log, running.log_start)}",
                flush=True,
            )

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """While the draws run, a Ctrl-C or SIGTERM stops the study: passed on once to each running
        draw (each stops with a checkpoint), and no more are started."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop is None:
                self.stop = signum
                for running in self.running:
                    if running.process.poll() is None:
                        running.process.send_signal(signum)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _last_line(path: Path, start: int = 0) -> str:
    """The log's last line from ``start`` on that names an error (the command's own ``error:``
    line, before its tip), else its last line."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            lines = [line.strip() for line in f.read().decode("utf-8", errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    lines = [line for line in lines if line]
    return next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "(empty log)")


# -- reading a draw ----------------------------------------------------------------------------


def _versions(folder: Path) -> list[Path]:
    """The run folders (``lightning_logs/version_N``, any logger's name) under a draw's folder, by N."""
    found = [p for p in folder.glob("*/version_*") if p.is_dir() and p.name.removeprefix("version_").isdigit()]
    return sorted(found, key=lambda p: (int(p.name.removeprefix("version_")), str(p)))


def _test_json(folder: Path) -> Path | None:
    """The ``test.json`` of a draw: the latest run folder's that has one."""
    found = [version / "test.json" for version in _versions(folder) if (version / "test.json").is_file()]
    return found[-1] if found else None


def _test_scores(path: Path) -> dict[str, float]:
    return {k: float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).get("scores", {}).items()}


def _error_name(scores: Sequence[str], prefix: str) -> str | None:
    """The first of :data:`ERROR_SCORES` among ``scores`` (``prefix`` + name)."""
    return next((f"{prefix}{name}" for name in ERROR_SCORES if f"{prefix}{name}" in scores), None)


def _score_text(scores: dict[str, float]) -> str:
    shown = _error_name(list(scores), "test/") or next(iter(scores), None)
    return f"{shown} {scores[shown]:.4f}" if shown else "no test scores"


def _read_result(folder: Path) -> DrawResult | None:
    """A finished draw's :class:`DrawResult`; None if it has no ``test.json``."""
    test_json = _test_json(folder)
    if test_json is None:
        return None
    labeled = test_json.parent / "labeled_examples.csv"
    if not labeled.is_file():  # the run folder that wrote the test may not be the one that trained
        candidates = [v / "labeled_examples.csv" for v in _versions(folder) if (v / "labeled_examples.csv").is_file()]
        labeled = candidates[-1] if candidates else labeled
    return DrawResult(
        test=_test_scores(test_json),
        curve=validation_curve(folder),
        labeled_examples=labeled if labeled.is_file() else None,
        labeled_sha256=_sha256(labeled) if labeled.is_file() else "",
    )


def validation_curve(folder: Path) -> list[tuple[int, dict[str, float]]]:
    """Each epoch's validation scores (``val/...``) of the run under ``folder``, by epoch (1 for
    the first), as its loggers wrote them: TensorBoard's event files or the CSV logger's
    ``metrics.csv``, of every run folder in order (a resumed run's epochs replace those its
    predecessor logged). An epoch validated more than once keeps its last scores."""
    epochs: dict[int, dict[str, float]] = {}
    for version in _versions(folder):
        for records in (_event_records(version), _csv_records(version)):
            for record in records:
                scores = {k: v for k, v in record.items() if k.startswith("val/")}
                if scores and "epoch" in record:
                    epochs.setdefault(int(record["epoch"]) + 1, {}).update(scores)
    return sorted(epochs.items())


def _event_records(version: Path) -> list[dict[str, float]]:
    """The scalars of the TensorBoard event files in ``version``, one dict per step and file."""
    records = []
    for path in sorted(version.glob("events.out.tfevents.*")):
        by_step: dict[int, dict[str, float]] = {}
        for step, tag, value in _scalars(path):
            by_step.setdefault(step, {})[tag] = value
        records += [by_step[step] for step in sorted(by_step)]
    return records


def _scalars(path: Path) -> Iterator[tuple[int, str, float]]:
    """``(step, tag, value)`` of each scalar in a TensorBoard event file (TFRecord of ``Event``
    protos, read with tensorboardX's proto classes); a torn last record ends it."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto import event_pb2

    data, at = path.read_bytes(), 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        start = at + 12  # the length, then its CRC
        if start + length + 4 > len(data):
            return
        event = event_pb2.Event()
        try:
            event.ParseFromString(data[start : start + length])
        except DecodeError:
            return
        at = start + length + 4  # the record, then its CRC
        for value in event.summary.value:
            if value.HasField("simple_value"):
                yield event.step, value.tag, value.simple_value


def _csv_records(version: Path) -> list[dict[str, float]]:
    path = version / "metrics.csv"
    if not path.is_file():
        return []
    records = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            record = {}
            for key, value in row.items():
                try:
                    record[key] = float(value)
                except (TypeError, ValueError):
                    continue
            records.append(record)
    return records


# -- the outputs -------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (None where there are too few values)."""
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


@dataclass
class _Table:
    """The study's table: a header and rows of cells (None: empty), then the mean and std rows."""

    header: list[str]
    rows: list[list[Any]]
    mean: list[Any]
    std: list[Any]


def _table(seeds: list[int], labels_only: bool, results: dict[Draw, DrawResult | None]) -> _Table:
    by_seed = {(d.seed, d.twin): r for d, r in results.items()}
    kinds = (False, True) if labels_only else (False,)
    names = {twin: _score_names([r for (s, t), r in by_seed.items() if t == twin and r is not None]) for twin in kinds}
    header = ["seed", "labeled_sha256", *names[False]]
    if labels_only:
        header += ["labels_only/labeled_sha256", *(f"labels_only/{n}" for n in names[True])]
    error = _error_name(names[False], "test/") if labels_only else None
    if error is not None and error not in names[True]:
        error = None
    if error is not None:
        header.append(f"ratio {error}")
    rows = []
    for seed in seeds:
        row: list[Any] = [seed]
        for twin in kinds:
            result = by_seed.get((seed, twin))
            scores = {**(result.val if result else {}), **(result.test if result else {})}
            row += [result.labeled_sha256 if result else None, *(scores.get(n) for n in names[twin])]
        if error is not None:
            ssl, alone = row[header.index(error)], row[header.index(f"labels_only/{error}")]
            row.append(ssl / alone if ssl is not None and alone else None)
        rows.append(row)
    mean: list[Any] = ["mean"]
    std: list[Any] = ["std"]
    for column, title in enumerate(header[1:], start=1):
        values = [row[column] for row in rows if isinstance(row[column], float)]
        m, s = _mean_std(values) if "sha256" not in title else (None, None)
        mean.append(m)
        std.append(s)
    if error is not None:  # the ratio of the means, over the draws that have both
        both = [row for row in rows if row[-1] is not None]
        ssl = _mean_std([row[header.index(error)] for row in both])[0]
        alone = _mean_std([row[header.index(f"labels_only/{error}")] for row in both])[0]
        mean[-1] = ssl / alone if ssl is not None and alone else None
        std[-1] = None
    return _Table(header, rows, mean, std)


def _score_names(results: list[DrawResult]) -> list[str]:
    """The validation then the test scores the draws have, in the order they were logged."""
    val = dict.fromkeys(name for r in results for name in r.val)
    test = dict.fromkeys(name for r in results for name in r.test)
    return [*val, *test]


def _write_outputs(
    out: Path,
    fit_config: Path,
    options: list[str],
    seeds: list[int],
    labels_only: bool,
    results: dict[Draw, DrawResult | None],
) -> Path:
    """``draws.csv``, ``draws.md``, each draw's ``labeled_examples.csv`` and ``curves.png``."""
    table = _table(seeds, labels_only, results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    for row in [*table.rows, table.mean, table.std]:
        writer.writerow(["" if cell is None else repr(cell) if isinstance(cell, float) else cell for cell in row])
    _write_bytes(out / "draws.csv", buffer.getvalue().encode("utf-8"))
    _write_bytes(out / "draws.md", _markdown(table, fit_config, options, labels_only).encode("utf-8"))
    for draw, result in results.items():
        if not draw.twin and result is not None and result.labeled_examples is not None:
            copied = out / f"seed-{draw.seed}-labeled_examples.csv"
            _write_bytes(copied, result.labeled_examples.read_bytes())
    curves = {draw: result.curve for draw, result in results.items() if result is not None}
    _, png = cv2.imencode(".png", curves_picture(curves))
    _write_bytes(out / "curves.png", png.tobytes())
    return out / "draws.md"


def _write_bytes(path: Path, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))


def _markdown(table: _Table, fit_config: Path, options: list[str], labels_only: bool) -> str:
    def cell(value: Any, title: str) -> str:
        if value is None:
            return "–"
        if "sha256" in title:
            return f"`{value[:12]}`"
        return (
            f"{value:.3f}" if title.startswith("ratio") else f"{value:.4f}" if isinstance(value, float) else str(value)
        )

    def summary(column: int, title: str) -> str:
        mean, std = table.mean[column], table.std[column]
        if mean is None:
            return ""
        return cell(mean, title) + (f" ± {cell(std, title)}" if std is not None else "")

    titles = [t.replace("labels_only/", "labels only: ").replace("_sha256", " (sha256)") for t in table.header]
    lines = [
        f"# {fit_config.name} over {len(table.rows)} label draws",
        "",
        f"`lit-ssgan fit --config {fit_config}"
        + (f" {shlex.join(options)}" if options else "")
        + " --seed_everything S --data.init_args.data_seed S --test_after_fit true`"
        + (f", and each draw's labels-only twin (`{' '.join(LABELS_ONLY)}`)" if labels_only else "")
        + ". Validation scores: the last epoch's; test scores: the run's test.json. The last row: mean ± sample std"
        + (" (the ratio: of the means)" if table.header[-1].startswith("ratio") else "")
        + ". Each draw's labeled examples: seed-S-labeled_examples.csv; its run: the folder seed-S.",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(titles))) + "|",
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(cell(v, t) for v, t in zip(row, table.header, strict=True)) + " |")
    lines.append("| mean ± std | " + " | ".join(summary(i, t) for i, t in enumerate(table.header[1:], start=1)) + " |")
    return "\n".join(lines) + "\n"


def _summary(seeds: list[int], labels_only: bool, results: dict[Draw, DrawResult | None]) -> str:
    """One line: the mean ± std of the test error (and the twin's, and the ratio of the means)."""
    table = _table(seeds, labels_only, results)
    error = _error_name(table.header, "test/")
    if error is None or table.mean[table.header.index(error)] is None:
        return ""

    def shown(title: str) -> str:
        at = table.header.index(title)
        mean, std = table.mean[at], table.std[at]
        return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")

    count = sum(isinstance(row[table.header.index(error)], float) for row in table.rows)
    line = f"{count} draw{'s' if count > 1 else ''}: {error} {shown(error)}"
    if f"labels_only/{error}" in table.header and table.mean[table.header.index(f"labels_only/{error}")] is not None:
        line += f"; labels only {shown(f'labels_only/{error}')}"
        if table.header[-1].startswith("ratio") and table.mean[-1] is not None:
            line += f"; ratio of the means {table.mean[-1]:.3f}"
    return line


#: the draws' colours (BGR), in turn
COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]  # fmt: skip


def curves_picture(
    curves: dict[Draw, list[tuple[int, dict[str, float]]]], size: tuple[int, int] = (900, 520)
) -> np.ndarray:
    """The validation error (the first of :data:`ERROR_SCORES` logged) of each draw by epoch, as a
    BGR image: a colour per seed, a thick line for the draw, a thin one for its labels-only twin;
    the seeds named on the right. A draw with no validation scores has no line."""
    width, height = size
    left, right, top, bottom = 70, 190, 40, 50
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    names = [name for points in curves.values() for _, scores in points for name in scores]
    score = _error_name(names, "val/") or next(iter(names), None)
    lines = {
        draw: [(epoch, scores[score]) for epoch, scores in points if score in scores and math.isfinite(scores[score])]
        for draw, points in curves.items()
    }
    lines = {draw: points for draw, points in lines.items() if points}
    title = f"{score} by epoch" if score else "no validation scores logged"
    cv2.putText(image, title, (left, 24), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    if not lines:
        return image
    xs = [x for points in lines.values() for x, _ in points]
    ys = [y for points in lines.values() for _, y in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y_ticks = _ticks(min(0.0, min(ys)), max(ys) if max(ys) > min(0.0, min(ys)) else min(0.0, min(ys)) + 1)
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[int, int]:
        return int(round(left + (x - x0) / (x1 - x0) * plot_w)), int(round(top + (y1 - y) / (y1 - y0) * plot_h))

    for y in y_ticks:
        cv2.line(image, at(x0, y), at(x1, y), (225, 225, 225), 1)
        text = f"{y:g}"
        (w, h), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(image, text, (left - w - 8, at(x0, y)[1] + h // 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    for x in _ticks(x0, x1, whole=True):
        if x0 <= x <= x1:
            text = f"{x:g}"
            (w, h), _ = cv2.getTextSize(text, font, scale, 1)
            cv2.putText(
                image, text, (at(x, y0)[0] - w // 2, top + plot_h + h + 8), font, scale, (0, 0, 0), 1, cv2.LINE_AA
            )
    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    cv2.putText(image, "epoch", (left + plot_w // 2 - 20, height - 10), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    seeds = sorted({draw.seed for draw in lines})
    colour = {seed: COLOURS[i % len(COLOURS)] for i, seed in enumerate(seeds)}
    for draw, points in sorted(lines.items(), key=lambda item: (item[0].twin, item[0].seed)):
        pixels = np.array([at(x, y) for x, y in points], dtype=np.int32)
        thickness = 1 if draw.twin else 2
        cv2.polylines(image, [pixels], False, colour[draw.seed], thickness, cv2.LINE_AA)
        for point in pixels:
            cv2.circle(image, (int(point[0]), int(point[1])), thickness + 1, colour[draw.seed], -1, cv2.LINE_AA)
    for i, seed in enumerate(seeds):
        y = top + 10 + i * 20
        cv2.line(image, (left + plot_w + 15, y), (left + plot_w + 40, y), colour[seed], 2, cv2.LINE_AA)
        cv2.putText(image, f"seed {seed}", (left + plot_w + 46, y + 5), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if any(draw.twin for draw in lines):
        y = top + 10 + len(seeds) * 20
        cv2.putText(image, "thin: labels only", (left + plot_w + 15, y + 5), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def _ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round values from at most ``low`` to at least ``high``, about ``count`` steps apart."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if whole:
        step = max(1.0, round(step))
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step - 1e-9)) + 1)]
