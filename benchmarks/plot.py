"""Test error against epochs from the JSON files of ``benchmarks/mnist.py``, as a PNG.

pip install -e ".[bench]"
python benchmarks/plot.py benchmarks/results/*.json --out benchmarks/mnist_error.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/mnist_error.png"))
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, path in enumerate(sorted(args.results)):
        run = json.loads(path.read_text())
        epochs = [e["epoch"] for e in run["curve"]]
        kind = "supervised only" if run["supervised"] else "semi-supervised"
        label, color = f"{kind}, {run['precision']}, seed {run['seed']}", f"C{i}"
        if run["curve"][0].get("test_error_ema") is not None:
            ax.plot(epochs, [100 * e["test_error_ema"] for e in run["curve"]], color=color, label=f"{label}: EMA")
        raw = [100 * e["test_error"] for e in run["curve"]]
        ax.plot(epochs, raw, "--", color=color, alpha=0.4, label=f"{label}: raw (dashed)" if i == 0 else None)
    ax.axhline(0.93, color="grey", linestyle=":", label="paper, 300 epochs (0.93 %)")
    ax.axhline(0.795, color="black", linestyle="-.", linewidth=0.8, label="Bad GAN, up to 2000 epochs (0.795 %)")
    ax.set(xlabel="epoch (600 batches)", ylabel="test error (%)", yscale="log", title="MNIST, 100 labels")
    ax.set_ylim(0.5, 40)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
