"""The one table of ``benchmarks/device.sh``: reads what its stages left in its work folder (their
JSON files, logs and status lines) and prints a markdown table of every figure beside the plain
loop, the 2026-12-04 baseline (package at d5a1fb8, ``../shared/device/README.md``) and the targets
of issue 30, with a mark for each target. Also writes ``results.json`` (every figure) there.

    python benchmarks/device_table.py /tmp/device_run
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

EPOCH = 600  # batches in an MNIST epoch (configs/mnist.yaml: 60 000 unlabeled images, batch 100)
CPU_DRAWS = (1.36, 0.09)  # configs/mnist_fast.yaml, 20 epochs, draws 1-5 on the CPU (benchmarks/README.md)
DRAWS_TOLERANCE = 0.25  # points: a GPU run's mean "as on the CPU" (the GPU's first run: 1.33 ± 0.12 %)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Table:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.rows: list[list[str]] = []
        self.results: dict[str, Any] = {}
        self.marks: list[bool] = []

    def status(self, stage: str) -> str:
        path = self.work / "status" / stage
        return path.read_text().strip() if path.exists() else "not run"

    def missing(self, stage: str) -> str:
        """What stands in a cell whose stage left no figure."""
        status = self.status(stage)
        return status if status != "ok" else "not measured"

    def mark(self, *conditions: bool | None) -> str:
        if any(c is None for c in conditions):
            return "–"
        met = all(conditions)
        self.marks.append(met)
        return "pass" if met else "**fail**"

    def row(self, what: str, figure: str, plain: str = "", ratio: str = "", base: str = "", target: str = "", met="–"):
        self.rows.append([what, figure, plain, ratio, base, target, met])

    def render(self) -> str:
        head = ["what", "this run", "plain loop", "package / plain", "baseline 2026-12-04", "target (issue 30)", "met"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)


def tests_row(t: Table) -> None:
    log = t.work / "tests.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error|deselected).*?)\s*=*$", text, re.M)
    figure = summary[-1] if summary else t.missing("tests")
    first_error = next((line[1:].strip() for line in text.splitlines() if line.startswith("E ")), "")
    if first_error:
        figure += f": {first_error[:140]}"
    last = summary[-1] if summary else ""
    ran = "passed" in last or "failed" in last or "error" in last  # not only skipped (no GPU)
    passed = ("failed" not in last and "error" not in last) if ran else None
    t.results["cuda_tests"] = {"status": t.status("tests"), "summary": figure}
    t.row("`tests/test_cuda.py` (`-m cuda`)", figure, base="fails: 6 syncs a step", target="passes", met=t.mark(passed))


def mnist_rows(t: Table, stage: str, label: str, naive: float | None, baseline: bool) -> float | None:
    """The MNIST epoch in both precisions (speed.py's medians, ms a batch); returns the naive loop's ms."""
    data = read_json(t.work / f"{stage}.json")
    ms = data["ms_per_batch"] if data else {}
    naive = ms.get("naive loop, fp32", naive)
    t.results[stage] = {"ms_per_batch": ms, "batches_measured": data and data["batches"], "status": t.status(stage)}
    plain = f"{EPOCH * naive / 1000:.2f} s (fp32)" if naive else ""
    epochs = {}
    for precision, short, base in (("package, fp32", "fp32", "6.1 s (2.2×)"), ("package, bf16-mixed", "bf16", "7.1 s")):
        value, base = ms.get(precision), base if baseline else ""
        epochs[short] = value
        if value is None:
            t.row(f"MNIST epoch, {short}{label}", t.missing(stage), plain, base=base, target="≤ 1.0 s and ≤ 0.4×")
            continue
        ratio = value / naive if naive else None
        seconds = EPOCH * value / 1000
        t.row(
            f"MNIST epoch, {short}{label} (600 batches)",
            f"{seconds:.2f} s",
            plain,
            f"{ratio:.2f}×" if ratio else "",
            base,
            "≤ 1.0 s and ≤ 0.4×",
            t.mark(seconds <= 1.0, ratio <= 0.4 if ratio else None),
        )
    if epochs["fp32"] and epochs["bf16"]:
        ratio = epochs["bf16"] / epochs["fp32"]
        base = "1.16" if baseline else ""
        t.row(f"MNIST epoch, bf16 / fp32{label}", f"{ratio:.2f}", base=base, target="≤ 1.0", met=t.mark(ratio <= 1.0))
    return naive


def conv_rows(t: Table, stage: str, label: str, naive: dict[str, float], baseline: bool) -> dict[str, float]:
    data = read_json(t.work / f"{stage}.json")
    seconds = data["seconds"] if data else {}
    naive = {k: v for k, v in seconds.items() if k.startswith("naive")} or naive
    t.results[stage] = {"seconds_per_step": seconds, "status": t.status(stage)}
    steps = {}
    for precision, short, base in (("32-true", "fp32", "11.2 ms (7)"), ("bf16-mixed", "bf16", "12.4 ms (8)")):
        value, plain = seconds.get(f"package {precision}"), naive.get(f"naive {short}")
        base = base if baseline else ""
        steps[short] = value
        plain_cell = f"{1000 * plain:.1f} ms" if plain else ""
        if value is None:
            t.row(f"conv step 32 px, {short}{label}", t.missing(stage), plain_cell, base=base, target="≤ 0.8×")
            continue
        ratio = value / plain if plain else None
        t.row(
            f"conv step 32 px, {short}{label} (batch 64)",
            f"{1000 * value:.1f} ms",
            plain_cell,
            f"{ratio:.2f}×" if ratio else "",
            base,
            "≤ 0.8×",
            t.mark(ratio <= 0.8 if ratio else None),
        )
    if steps["fp32"] and steps["bf16"]:
        ratio = steps["bf16"] / steps["fp32"]
        base = "1.11" if baseline else ""
        t.row(f"conv step 32 px, bf16 / fp32{label}", f"{ratio:.2f}", base=base, target="≤ 1.0", met=t.mark(ratio <= 1))
    return naive


def conv_big_row(t: Table, size: int) -> None:
    data = read_json(t.work / "conv_big.json")
    value = data and data["seconds"].get("package bf16-mixed")
    t.results["conv_big"] = {"seconds_per_step": value, "image_size": size, "status": t.status("conv_big")}
    figure = f"{1000 * value:.1f} ms" if value else t.missing("conv_big")
    t.row(f"conv step {size} px, bf16 (batch 64)", figure, base="33.7 ms (128 px)")


def profile_rows(t: Table, cuda: bool) -> None:
    data = read_json(t.work / "profile.json") or []
    by = {r["precision"]: r for r in data}
    t.results["profile"] = {"by_precision": by, "status": t.status("profile")}

    def cells(key: str, form: str) -> str:
        if not by:
            return t.missing("profile")
        return " / ".join(
            form.format(by[p][key]) if p in by and key in by[p] else "–" for p in ("32-true", "bf16-mixed")
        )

    def worst(key: str) -> float | None:
        values = [r[key] for r in by.values() if key in r]
        return max(values) if values else None

    def none_row(label: str, key: str, base: str) -> None:
        """A row whose target is none in any step measured."""
        most = worst(key)
        t.row(label, cells(key, "{:.0f}"), base=base, target="0", met=t.mark(most == 0 if most is not None else None))

    if cuda:
        t.row("kernels a step, MNIST fp32 / bf16 (profiler)", cells("kernels", "{:.0f}"), base="430 / 485")
        busy = cells("gpu_busy_ms", "{:.2f} ms")
        floor = " / ".join(f"{EPOCH * r['gpu_busy_ms'] / 1000:.2f} s" for r in data if r.get("gpu_busy_ms"))
        t.row("GPU busy a step, fp32 / bf16 (epoch at that floor)", f"{busy} ({floor})", base="1.3 ms (0.8 s)")
        none_row("syncs a non-logging step, fp32 / bf16 (most in the window)", "syncs_max", "6")
    else:
        t.row("CPU time a step, MNIST fp32 / bf16 (wall, no GPU here)", cells("wall_ms", "{:.1f} ms"))
    none_row("host reads a step (`.item()`, `bool()`, ...), fp32 / bf16", "host_reads_max", "24")
    t.row("ops dispatched a step, fp32 / bf16 (`TorchDispatchMode`)", cells("ops", "{:.0f}"), base="641 (CPU)")


def draws_rows(t: Table, epochs: int) -> None:
    errors, cells = [], []
    for s in range(1, 6):
        result = next(iter(sorted((t.work / "draws").glob(f"*-e{epochs}-s{s}.json"))), None)
        curve = next(iter(sorted((t.work / "draws" / "runs").glob(f"*-e{epochs}-s{s}/curve.json"))), None)
        done = read_json(result) if result else None
        if done and done.get("test_error_ema") is not None:
            errors.append(100 * done["test_error_ema"])
            cells.append(f"{errors[-1]:.2f}")
        elif curve and (partial := read_json(curve)) and partial[-1].get("test_error_ema") is not None:
            cells.append(f"({100 * partial[-1]['test_error_ema']:.2f} at epoch {partial[-1]['epoch']}, cut)")
        else:
            cells.append("–")
    status = t.status("draws")
    t.results["draws"] = {"epochs": epochs, "test_error_ema_percent": errors, "cells": cells, "status": status}
    t.row(
        f"`mnist_fast.yaml`, {epochs} epoch{'s' if epochs != 1 else ''}, draws 1–5 at once: test error (EMA), each",
        ", ".join(cells) + " %" + ("" if status == "ok" else f" ({status})"),
        base="1.32, 1.13, 1.37, 1.46, 1.37 %",
        target="as on the CPU",
    )
    if len(errors) >= 2:
        mean, std = statistics.mean(errors), statistics.stdev(errors)
        close = abs(mean - CPU_DRAWS[0]) <= DRAWS_TOLERANCE if epochs == 20 and len(errors) == 5 else None
        t.results["draws"] |= {"mean": mean, "std": std}
        t.row(
            "… mean ± std",
            f"{mean:.2f} ± {std:.2f} %",
            base="1.33 ± 0.12 %",
            target=f"CPU {CPU_DRAWS[0]} ± {CPU_DRAWS[1]} % (mean within {DRAWS_TOLERANCE} points)",
            met=t.mark(close),
        )


def main() -> None:
    work = Path(sys.argv[1])
    t = Table(work)
    env = read_json(work / "env.json") or {}
    cuda = env.get("dev") == "cuda"
    t.results["env"] = env
    tests_row(t)
    naive = mnist_rows(t, "mnist", "", None, baseline=True)
    mnist_rows(t, "mnist_compile", ", compiled", naive, baseline=False)
    conv_naive = conv_rows(t, "conv32", "", {}, baseline=True)
    conv_rows(t, "conv32_compile", ", compiled", conv_naive, baseline=False)
    conv_big_row(t, env.get("conv_big_px", 128))
    profile_rows(t, cuda)
    draws_rows(t, int(env.get("draw_epochs", 20)))

    print(f"## `benchmarks/device.sh` on {env.get('device_name', 'an unknown device')}\n")
    print(
        f"torch {env.get('torch')} (CUDA {env.get('cuda')}), lightning {env.get('lightning')}, "
        f"python {env.get('python')}; package at {env.get('commit')}; {env.get('date')}; "
        f"{'QUICK sizes (a try of the script, not the figures)' if env.get('quick') else 'full sizes'}; "
        f"compiled rows: `{env.get('compile_args')}`; whole run {env.get('seconds', '?')} s.\n"
    )
    print(t.render())
    met = sum(t.marks)
    print(
        f"\nTargets met: {met} of {len(t.marks)} marked. Stages: "
        + ", ".join(f"{p.name} {p.read_text().strip()}" for p in sorted((work / "status").glob("*")))
    )
    t.results["targets_met"], t.results["targets_marked"] = met, len(t.marks)
    (work / "results.json").write_text(json.dumps(t.results, indent=1))


if __name__ == "__main__":
    main()
