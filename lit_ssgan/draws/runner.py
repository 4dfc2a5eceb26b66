"""Running the draws: each a ``lit-ssgan fit`` subprocess with its log, as many at once as may
be (on a GPU sized by the first draw's memory), pinned to their share of the cores; a Ctrl-C or
SIGTERM passed on to them."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from lit_ssgan.draws.runs import LABELS_ONLY, Draw, find_test_json, score_text, test_scores

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


@dataclass
class _Running:
    draw: Draw
    process: subprocess.Popen
    log: Any
    log_start: int  # where in the log this run's output begins
    started: float
    slot: int


def fit_args(fit_config: Path, more: list[str], seed: int, folder: Path, resume: bool = False) -> list[str]:
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


def environment(threads: int | None) -> dict[str, str]:
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
class Runner:
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
            test_json = find_test_json(job.folder)
            if test_json is None:
                pending.append(job)
            else:
                print(f"{job.name}: finished before, not rerun: {score_text(test_scores(test_json))}", flush=True)
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
        command = fit_args(self.fit_config, [*self.options, *(LABELS_ONLY if draw.twin else [])], draw.seed,
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
            env=environment(threads),
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
        test_json = find_test_json(draw.folder)
        if status == 0 and test_json is not None:
            print(f"{draw.name}: done in {took}: {score_text(test_scores(test_json))}", flush=True)
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
