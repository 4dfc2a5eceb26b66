"""Runs exported classifiers as a user's own program would: without lit_ssgan, Lightning or the
training config, from the model file and the JSON beside it (``<model file>.json``). Reads a
folder of images (any depth, file names sorted) with OpenCV as in the README's example, or an
``.npy`` of float images; writes
``{"files": [...], "outputs": {model: [[...], ...]}}`` as JSON to stdout.

    python run_exported.py (FOLDER | IMAGES.npy) MODEL [MODEL ...]

Fails if anything imported lit_ssgan (the tests run it in a fresh process).
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    source, models = Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]]
    meta = json.loads(models[0].with_name(models[0].name + ".json").read_text())
    size, channels = meta["image_size"], meta["channels"]

    if source.suffix == ".npy":
        files, x = [], np.load(source).astype(np.float32)
    else:
        files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))
        images = []
        for name in files:
            image = cv2.imread(str(source / name), cv2.IMREAD_COLOR)
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)
            shrink = max(image.shape[:2]) > size  # as training read its images: area to shrink, linear to enlarge
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            images.append(image.reshape(size, size, channels).transpose(2, 0, 1))
        x = (np.stack(images) / np.float32(255)).astype(np.float32)

    outputs = {}
    for model_path in models:
        meta = json.loads(model_path.with_name(model_path.name + ".json").read_text())
        if meta["format"] == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
            outputs[model_path.name] = session.run(None, {meta["input"]["name"]: x})[0].tolist()
        else:
            import torch

            outputs[model_path.name] = torch.jit.load(str(model_path))(torch.from_numpy(x)).numpy().tolist()

    assert not any(name.split(".")[0] == "lit_ssgan" for name in sys.modules), "lit_ssgan was imported"
    json.dump({"files": files, "outputs": outputs}, sys.stdout)


if __name__ == "__main__":
    main()
