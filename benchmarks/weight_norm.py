"""lit_ssgan's weight-normalised layers against torch's ``parametrizations.weight_norm``, in one run on
this machine: the paper's MLP discriminator (784-1000-500-250-250-250-10) through a D step's work (one
forward of 100 labeled + 100 unlabeled + 100 generated images and its backward) and a G step's (two
passes of 100 with D frozen, the gradient to the input), fp32 and bf16 autocast, the two kinds
interleaved. Prints ms per D+G pair (median of the repeats) and ops dispatched per pair.

    python benchmarks/weight_norm.py --repeats 3 --steps 40

lit_ssgan's layers run each pass in :func:`~lit_ssgan.models.layers.frozen_weights` (norms once a
pass, as the module does); torch's the plain way.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import cpu_model  # noqa: E402

from lit_ssgan.callbacks.step_counts import DispatchCount  # noqa: E402
from lit_ssgan.models.layers import WNLinear, frozen_weights  # noqa: E402

WIDTHS = [784, 1000, 500, 250, 250, 250, 10]
KINDS = ("lit_ssgan", "torch")


def network(kind: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(WIDTHS, WIDTHS[1:], strict=False):
        layers += [WNLinear(a, b) if kind == "lit_ssgan" else weight_norm(nn.Linear(a, b)), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def pair(m: nn.Sequential, kind: str, autocast: Callable[[], Any], x_d: torch.Tensor, x_g: torch.Tensor) -> None:
    """One D step's and one G step's work through ``m`` (no optimizer)."""
    frozen = (lambda: frozen_weights(m)) if kind == "lit_ssgan" else contextlib.nullcontext
    m.zero_grad(set_to_none=True)
    with frozen(), autocast():
        loss = m(x_d).logsumexp(1).mean()
    loss.backward()
    m.requires_grad_(False)
    with frozen(), autocast():
        with torch.no_grad():
            real = m(x_g.detach())
        fake = m(x_g)
        g_loss = (real.mean(0) - fake.mean(0)).square().sum()
    g_loss.backward()
    x_g.grad = None
    m.requires_grad_(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="timed D+G pairs per measure (after 5 untimed)")
    args = parser.parse_args()
    torch.manual_seed(0)
    x_d, x_g = torch.rand(300, 784), torch.rand(100, 784, requires_grad=True)
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    print("precision  layers      ms a D+G pair (median)  ops a pair")
    for precision in ("fp32", "bf16"):
        autocast: Callable[[], Any] = (
            (lambda: torch.autocast("cpu", torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        )
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        ops: dict[str, int] = {}
        for _ in range(args.repeats):
            for kind in KINDS:
                m = network(kind)
                for _ in range(5):
                    pair(m, kind, autocast, x_d, x_g)
                start = time.perf_counter()
                for _ in range(args.steps):
                    pair(m, kind, autocast, x_d, x_g)
                times[kind].append((time.perf_counter() - start) / args.steps * 1e3)
                with DispatchCount() as count:
                    pair(m, kind, autocast, x_d, x_g)
                ops[kind] = sum(count.ops.values())
        for kind in KINDS:
            print(f"{precision:10} {kind:10} {statistics.median(times[kind]):8.1f}              {ops[kind]:6d}")


if __name__ == "__main__":
    main()
