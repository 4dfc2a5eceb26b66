"""``lit-ssgan export``: the trained classifier as one ONNX or TorchScript file that runs without
lit_ssgan, Lightning or the training config, and a JSON beside it that says how to feed it.

The exported network is what ``validate``, ``test`` and ``predict`` evaluate: the checkpoint's
``state_dict`` (the EMA average, where the run kept one), in eval mode (no noise, no dropout, no
shift), each weight-normalised layer folded into a plain ``Linear`` or ``Conv2d``
(:func:`~lit_ssgan.models.layers.fold_weight_norm`), in fp32. Its input is ``images``: float32
``(N, C, H, W)`` in [0, 1] at the training size, any N; its output ``probabilities`` ``(N, K)``
(the softmax of the class logits, in the order of ``class_names``), or ``values`` ``(N,)`` for
regression.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from lit_ssgan import losses
from lit_ssgan._version import __version__
from lit_ssgan.checkpoint import load_checkpoint_file
from lit_ssgan.data.datasets import file_digest
from lit_ssgan.data.decoding import DECODER
from lit_ssgan.errors import CheckpointError, ConfigError, check_choice
from lit_ssgan.files import write_atomically, write_json
from lit_ssgan.models import Discriminator
from lit_ssgan.models.layers import fold_weight_norm
from lit_ssgan.outputs import check_output_file

Format = Literal["onnx", "torchscript"]
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
#: what ``pip install "lit_ssgan[export]"`` brings, for ONNX
ONNX_PACKAGES = ("onnx", "onnxscript")


class Classifier(nn.Module):
    """The discriminator as a classifier: images in [0, 1] to class probabilities (softmax of its
    class logits, without an explicit fake logit) or, for regression, to values.

    Args:
        discriminator: the (folded, eval-mode) discriminator.
        classification: whether its task is classification.
    """

    def __init__(self, discriminator: Discriminator, classification: bool) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.classification = classification
        self.explicit_fake = discriminator.explicit_fake

    def forward(self, images: Tensor) -> Tensor:
        logits = self.discriminator(images).logits
        predicted = losses.heads(logits, self.classification, self.explicit_fake).predicted
        return predicted.softmax(dim=1) if self.classification else predicted


def classifier_of(ckpt_path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """The exported network of a checkpoint that ``lit-ssgan fit`` wrote (it holds the networks'
    config), in eval mode on the CPU in fp32, and the checkpoint itself (loaded safely).

    Raises:
        MissingFileError, CorruptCheckpointError, UnsafeCheckpointError: naming the file.
        CheckpointError: naming the file, if it is not a lit_ssgan checkpoint with the networks' config.
    """
    from lit_ssgan.module import SemiSupervisedGAN  # Lightning and the module: only when exporting

    checkpoint = load_checkpoint_file(ckpt_path)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "discriminator" not in hparams:
        raise CheckpointError(
            f"{ckpt_path} is not a checkpoint of lit-ssgan fit (it holds no networks' config): export needs one "
            "that the lit-ssgan command wrote"
        )
    model = SemiSupervisedGAN.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True)
    discriminator = cast(Discriminator, fold_weight_norm(model.discriminator)).float()
    exported = Classifier(discriminator, model.classification).eval()
    for parameter in exported.parameters():
        parameter.requires_grad_(False)
    return exported, checkpoint


def description(
    exported: Classifier, checkpoint: dict[str, Any], ckpt_path: str | Path, model_file: Path, fmt: Format
) -> dict[str, Any]:
    """What a caller of the exported file needs, as the JSON written beside it: the input's shape
    and the classes from the network, their names and the data from what the checkpoint records."""
    data = checkpoint.get("data") or {}
    data_hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    channels, height, width = exported.discriminator.image_shape
    classification, num_classes = exported.classification, exported.discriminator.num_classes
    names = data.get("class_names") or [str(k) for k in range(num_classes)]
    datamodule = data.get("datamodule") or data_hparams.get("_class_path", "data from Python")
    folders = "ImageFolder" in str(datamodule)
    return {
        "model": model_file.name,
        "format": fmt,
        "input": {
            "name": "images",
            "shape": ["N", channels, height, width],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW" + (", RGB" if channels == 3 else ", grey"),
        },
        "output": (
            {
                "name": "probabilities",
                "shape": ["N", num_classes],
                "meaning": "class probabilities, in class_names order",
            }
            if classification
            else {"name": "values", "shape": ["N"], "meaning": "the predicted value"}
        ),
        "class_names": names if classification else None,
        "image_size": height,
        "channels": channels,
        "preprocessing": (
            f"as training read its images: {DECODER}; to {height}x{width}, {'RGB' if channels == 3 else 'grey'}, "
            "uint8 / 255"
            if folders
            else f"the {datamodule} images as the data module gives them: {height}x{width}, uint8 / 255"
        ),
        "eval_transforms": data_hparams.get("eval_transforms"),
        "weights": "EMA average" if "current_model_state" in checkpoint else "the trained weights",
        "checkpoint": str(Path(ckpt_path).resolve()),
        "checkpoint_sha256": file_digest(Path(ckpt_path), "sha256"),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "datamodule": datamodule,
        "lit_ssgan_version": __version__,
        "torch_version": torch.__version__,
    }


def description_path(model_file: Path) -> Path:
    """Where the JSON of an exported file goes: beside it, its whole name and ``.json``
    (``classifier.onnx.json``), so that the ONNX and TorchScript files of one name keep their own."""
    return model_file.with_name(model_file.name + ".json")


def export(ckpt_path: str | Path, format: Format = "onnx", out: str | Path | None = None) -> tuple[Path, Path]:
    """Writes a checkpoint's classifier as one ONNX or TorchScript file, and a JSON beside it.

    The JSON (:func:`description_path`) says how to feed the file and where it came from
    (:func:`description`). ``lit-ssgan export`` takes its options from these arguments.

    Args:
        ckpt_path: a checkpoint written by lit-ssgan fit
        format: onnx (the file to ship; needs pip install "lit_ssgan[export]") or torchscript
        out: the file to write, ending in .onnx or .pt (default: beside the checkpoint, named after it)

    Returns:
        The model file and the JSON.

    Raises:
        ConfigError: an unknown format, an ``out`` that cannot be written or ends otherwise, or ONNX
            without its packages (naming what to install).
        CheckpointError: naming the file, for a missing, damaged or foreign checkpoint.
        WriteError: naming the file and the cause, for an ``OSError`` while writing it (a full
            disk); ``out`` is then left as it was, and nothing beside it.
    """
    check_choice("--format", format, tuple(SUFFIXES))
    target = Path(out) if out is not None else Path(ckpt_path).with_suffix(SUFFIXES[format])
    check_output_file(target, "--out", [SUFFIXES[format]])
    if format == "onnx":
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(
                f'--format onnx needs {" and ".join(missing)}: pip install "lit_ssgan[export]" '
                "(or --format torchscript, which needs nothing more)"
            )
    exported, checkpoint = classifier_of(ckpt_path)
    example = torch.rand(2, *exported.discriminator.image_shape)
    if format == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            # torch deprecates TorchScript for torch.export; the format is asked for by name (README)
            warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", DeprecationWarning)
            scripted = torch.jit.trace(exported, example)
            write_atomically(target, lambda f: torch.jit.save(scripted, f))
    else:
        _export_onnx(exported, example, target)
    meta = description_path(target)
    write_json(meta, description(exported, checkpoint, ckpt_path, target, format))
    return target, meta


def _export_onnx(exported: Classifier, example: Tensor, target: Path) -> None:
    """torch's ONNX exporter (torch.export), with the batch size left free; the model is written
    as one file (its weights inside), atomically."""
    output = "probabilities" if exported.classification else "values"
    batch = torch.export.Dim("N")
    # its notes on torchvision's operators (not installed, not used) and a deprecation in torch
    # itself: nothing the user can act on
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            program = torch.onnx.export(
                exported,
                (example,),
                input_names=["images"],
                output_names=[output],
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
                verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto.SerializeToString()  # what ONNXProgram.save writes, as one file
    write_atomically(target, lambda f: f.write(model))
