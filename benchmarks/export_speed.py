"""Images per second of an exported classifier under onnxruntime (CPU) against ``lit-ssgan predict``
on the same folder of images, for the MLP pair (MNIST's, 28x28 grey) and the paper's conv pair
(``configs/image_folder.yaml``, 32x32 RGB), in fp32, in one run on this machine.

    python benchmarks/image_folders.py write --data-dir ../shared/data/mnist --out /tmp/mnist_png
    python benchmarks/export_speed.py --folders /tmp/mnist_png --work /tmp/export_speed

Each pair is trained for one step on the folders (the speed of a network does not depend on its
weights), exported with ``lit-ssgan export``, then timed on ``--images`` (default the 1 000 PNGs
of ``new/``), best of ``--repeats``:

- ``predict``: ``lit-ssgan predict`` to a CSV, run in this process (``cli()``): building the model
  from the checkpoint, decoding the images a batch at a time, the forward passes, the CSV;
  Python's start and imports not included (about 5 s more as a command of its own);
- ``onnx, decode + run``: what the README's example does: OpenCV reads and resizes each image,
  then ``InferenceSession.run`` on batches of 500;
- ``onnx, run``: the session alone on the decoded batches.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from speed import cpu_model  # noqa: E402

from lit_ssgan.cli import cli  # noqa: E402
from lit_ssgan.export import export  # noqa: E402

CONFIG = ROOT / "configs" / "image_folder.yaml"
MLP = ["--model.discriminator", "lit_ssgan.models.MLPDiscriminator"]
MLP += ["--model.generator", "lit_ssgan.models.MLPGenerator"]
#: name: (its folder under --work, image size, channels, the networks' options)
PAIRS = {
    "MLP pair, 28x28 grey": ("mlp", 28, 1, MLP),
    "conv pair (the paper's), 32x32 RGB": ("conv", 32, 3, []),
}
BATCH = 500


def common(size: int, channels: int, run: Path) -> list[str]:
    return [
        "--config", str(CONFIG), "--data.image_size", str(size), "--data.channels", str(channels),
        "--trainer.precision", "32-true", "--trainer.default_root_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def decoded(files: list[Path], size: int, channels: int) -> np.ndarray:
    """The README's example's reading: OpenCV, grey or RGB, area to shrink and linear to enlarge, / 255."""
    images = []
    for path in files:
        read = cv2.imread(str(path))
        assert read is not None, path
        image = cv2.cvtColor(read, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)
        shrink = max(image.shape[:2]) > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        images.append(image.reshape(size, size, channels).transpose(2, 0, 1))
    return (np.stack(images) / np.float32(255)).astype(np.float32)


def decode_and_run(run: Callable[[np.ndarray], None], files: list[Path], size: int, channels: int) -> None:
    run(decoded(files, size, channels))


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folders", type=Path, default=Path("/tmp/mnist_png"), help="what image_folders.py wrote")
    parser.add_argument("--images", type=Path, default=None, help="the folder to predict (default: FOLDERS/new)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/export_speed"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime

    images = args.images or args.folders / "new"
    files = sorted(p for p in images.rglob("*.png"))
    print(f"CPU: {cpu_model()}; {len(files)} images of {images}; onnxruntime {onnxruntime.__version__}", flush=True)
    sys.argv = sys.argv[:1]  # the CLI runs below take their own arguments
    for name, (folder, size, channels, networks) in PAIRS.items():
        run = args.work / folder
        fit = ["fit", *common(size, channels, run), *networks, "--trainer.max_steps", "1", "--test_after_fit", "false"]
        fit += ["--data.labeled_dir", str(args.folders / "labeled"), "--data.unlabeled_dir", str(args.folders / "new")]
        fit += ["--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
        fit += ["--trainer.callbacks.init_args.dirpath", str(run / "checkpoints")]
        cli(fit)
        ckpt = run / "checkpoints" / "last.ckpt"
        model, _ = export(ckpt, "onnx", run / "classifier.onnx")
        csv_path = run / "predictions.csv"
        predict = ["predict", *common(size, channels, run), *networks, "--ckpt_path", str(ckpt)]
        predict += ["--data.predict_dir", str(images), "--predictions_csv", str(csv_path)]
        predict_s = best_of(args.repeats, partial(cli, predict))

        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])

        def run_session(x: np.ndarray, session: onnxruntime.InferenceSession = session) -> None:
            for start in range(0, len(x), BATCH):
                session.run(None, {"images": x[start : start + BATCH]})

        x = decoded(files, size, channels)
        run_session(x[:BATCH])  # warm-up
        end_to_end_s = best_of(args.repeats, partial(decode_and_run, run_session, files, size, channels))
        run_s = best_of(args.repeats, partial(run_session, x))
        n = len(files)
        print(f"\n{name}:")
        print(f"  lit-ssgan predict      {predict_s:7.2f} s  {n / predict_s:8.0f} images/s")
        print(f"  onnx, decode + run     {end_to_end_s:7.2f} s  {n / end_to_end_s:8.0f} images/s")
        print(f"  onnx, run              {run_s:7.2f} s  {n / run_s:8.0f} images/s")
        print(f"  predict / onnx (decode + run): {predict_s / end_to_end_s:.1f}x", flush=True)


if __name__ == "__main__":
    main()
