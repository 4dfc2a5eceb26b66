"""The ``draws`` function: its checks before any draw starts (the seeds, the options, ``out``'s
study, the config as a draw builds it), then the draws run, the table written, the outcome
reported."""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lit_ssgan.draws.runner import Runner, environment, fit_args
from lit_ssgan.draws.runs import LABELS_ONLY, Draw
from lit_ssgan.draws.table import read_result, summary_line, write_outputs
from lit_ssgan.errors import ConfigError, MissingFileError, UserError
from lit_ssgan.files import write_json
from lit_ssgan.outputs import check_output_folder

#: the fit options each draw sets itself, refused in ``fit_options``
SET_BY_DRAWS = {
    "--seed_everything": "each draw's seed",
    "--data.init_args.data_seed": "each draw's seed",
    "--data.data_seed": "each draw's seed",
    "--trainer.default_root_dir": "each draw's folder under --out",
    "--ckpt_path": "last, for a draw that stopped",
    "--test_after_fit": "true: the table needs each draw's test scores",
}
#: what a study in ``out`` is: the config's digest (:func:`config_digest`) and the fit options
STUDY_NAME = "study.json"


class DrawsFailedError(UserError, RuntimeError):
    """One or more draws failed (their logs say why); the table holds the others."""


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
    :data:`~lit_ssgan.draws.runner.MEASURE_LIMIT_S`); the GPU memory it took then (the device's
    free memory before and after, by ``nvidia-smi``), times
    :data:`~lit_ssgan.draws.runner.GPU_MEMORY_MARGIN`, sizes how many more fit in
    :data:`~lit_ssgan.draws.runner.GPU_MEMORY_SHARE` of the memory still free, at most one per
    :data:`~lit_ssgan.draws.runner.CORES_PER_DRAW` cores. Without ``nvidia-smi``: one at a time.
    With more than one at once, each draw is pinned to its share of the cores and gets
    ``OMP_NUM_THREADS`` of that share (at most the one set).

    A Ctrl-C or SIGTERM is passed on to the running draws, which stop with a checkpoint; the table
    of the finished draws is written, and the command exits with 130 or 143: run it again to go on.

    Args:
        fit_config: a lit-ssgan fit config (YAML), as for lit-ssgan fit --config
        out: the folder of the study: each draw's run folder, the table, the plot
        draws: N (draws 1 to N: draw S runs with seed_everything and data_seed S), or a list of seeds
        labels_only: also run each draw's labels-only twin (unlabeled_weight 0, unlabeled_entropy_weight
            0, no consistency: D trains on the labeled batch alone, the generator not at all), and give
            the ratio of the test errors
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
    study = {"fit_config_digest": config_digest(fit_config), "fit_options": options}
    _check_study(out, study, fit_config)
    _check_config(fit_config, options, labels_only, seeds[0])
    write_json(out / STUDY_NAME, {"fit_config": str(fit_config.resolve()), **study})

    name = fit_config.stem
    jobs = [
        Draw(seed, twin, out / (f"{name}-labels-only" if twin else name) / f"seed-{seed}")
        for seed in seeds
        for twin in ((False, True) if labels_only else (False,))
    ]
    runner = Runner(fit_config, options, parallel)
    stopped = runner.run(jobs)
    results = {job: read_result(job.folder) for job in jobs}
    table = write_outputs(out, fit_config, options, seeds, labels_only, results)
    summary = summary_line(seeds, labels_only, results)
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


def config_digest(path: Path) -> str:
    """The sha256 of a YAML config as parsed (JSON with sorted keys): the same for an edit of its
    comments, blank lines, quoting or key order, which changes no run; of its bytes where it is not
    YAML (``lit-ssgan fit`` refuses it before any draw)."""
    text = path.read_bytes()
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError:
        return hashlib.sha256(text).hexdigest()
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


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
            f"--fit_config {fit_config} {'as it is now ' if 'fit_config_digest' in differs else ''}"
            f"{'and these fit options ' if 'fit_options' in differs else ''}would mix other runs into its table: "
            "give another --out, or that study's config and fit options to go on with it"
        )


#: run in a subprocess: builds the config once per list of fit options (argv[1], JSON) as
#: ``lit-ssgan fit`` does, checks its data options, and writes the first refusal to argv[2] as JSON
_CHECK = r"""
import json, sys
from lit_ssgan.cli import cli, condensed
from lit_ssgan.errors import user_error
for index, args in enumerate(json.loads(sys.argv[1])):
    try:
        built = cli(args, run=False, parser_kwargs={"exit_on_error": False})
        built.datamodule.check_fit_set()
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
        lists = [fit_args(fit_config, more, seed, Path(folder) / "run")[4:] for more in kinds]
        refusal = Path(folder) / "refusal.json"
        command = [sys.executable, "-c", _CHECK, json.dumps(lists), str(refusal)]
        done = subprocess.run(command, capture_output=True, text=True, env=environment(None))
        if done.returncode == 3 and refusal.is_file():
            found = json.loads(refusal.read_text(encoding="utf-8"))
            reason = " ".join(line.strip() for line in found["message"].splitlines() if line.strip())
            given = f"--fit_config {fit_config}" + (f" --fit_options [{shlex.join(options)}]" if options else "")
            twin = f" with the labels-only options of --labels_only ({' '.join(LABELS_ONLY)})" if found["index"] else ""
            raise ConfigError(f"{given}{twin}: lit-ssgan fit refuses them: {reason}")
        if done.returncode != 0:
            raise RuntimeError(f"checking --fit_config {fit_config} failed:\n{done.stderr[-4000:]}")
