"""The run's plain options (``model.training``), and the mapping of the options of lit_ssgan
before 0.2.0, all flat in the module's constructor, to the parts."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from jsonargparse.typing import PositiveFloat

from lit_ssgan.checkpoint import load_checkpoint_file
from lit_ssgan.compiling import CompileOption, compile_options
from lit_ssgan.divergence import OnNonFinite
from lit_ssgan.errors import ConfigError, check_choice, check_positive

SchedulerInterval = Literal["epoch", "step"]


@dataclasses.dataclass
class Training:
    """The run's plain options (``model.training``), each checked here.

    Args:
        lr_scheduler_interval: step the schedulers every ``"epoch"`` or every ``"step"`` (batch).
        resume_lr: when resuming from a checkpoint, both networks continue at this rate (their
            schedulers rescaled to continue from it); None keeps the saved rates.
        data_dependent_init: before the first step, set the discriminator's weight-normalised layers
            from the first labeled and unlabeled batch so each unit starts at mean 0 and unit
            variance (Salimans & Kingma 2016; OpenAI's code does this).
        weights_from: warm start (tefla's ``weights_from``): when training starts from scratch (not
            when resuming), copy from this checkpoint or state-dict file the tensors whose names and
            shapes match (:func:`~lit_ssgan.checkpoint.load_matching_weights`). Replaces the
            data-dependent initialisation.
        on_nonfinite: when a loss or gradient is NaN or infinite: ``"stop"`` raises
            :class:`~lit_ssgan.errors.DivergenceError` naming the step and the loss term (no
            checkpoint is written after it, so the last good one stays); ``"skip"`` drops that
            batch's steps and counts it in ``train/skipped_steps``. Either way the batch's steps
            change nothing, decided on the device (:class:`~lit_ssgan.divergence.NonFiniteGuard`).
        compile: compile the training step's two loss computations with ``torch.compile``:
            ``true`` (its defaults), a mode (``"reduce-overhead"``: also CUDA graphs on a GPU), or
            its arguments (``{mode: ..., backend: ...}``); false or null: eager. The first batches
            take the compile time; the README says when it pays.
    """

    lr_scheduler_interval: SchedulerInterval = "epoch"
    resume_lr: PositiveFloat | None = None
    data_dependent_init: bool = False
    weights_from: str | None = None
    on_nonfinite: OnNonFinite = "stop"
    compile: CompileOption = None

    def __post_init__(self) -> None:
        check_choice("training.lr_scheduler_interval", self.lr_scheduler_interval, get_args(SchedulerInterval))
        check_positive("training.resume_lr", self.resume_lr, optional=True)
        check_choice("training.on_nonfinite", self.on_nonfinite, get_args(OnNonFinite))
        compile_options(self.compile)
        if not isinstance(self.data_dependent_init, bool):
            raise ConfigError(f"training.data_dependent_init must be true or false, got {self.data_dependent_init!r}")

    @property
    def compile_options(self) -> dict[str, Any] | None:
        """``torch.compile``'s keyword arguments, or None to run eagerly."""
        return compile_options(self.compile)

    def weights_file(self) -> Path | None:
        """The file of ``weights_from``, checked (:func:`check_weights_from`); None without one.
        Checked when a run from scratch reads it, not here at construction: a resume and
        ``load_from_checkpoint`` rebuild these options and never read the file, which may be gone."""
        return check_weights_from(self.weights_from)


def check_weights_from(path: str | None) -> Path | None:
    """``path`` (``model.training.weights_from``) if it is a file; None for None.

    Raises:
        ConfigError: naming ``model.training.weights_from`` and ``path``, if it is missing or a folder.

    Example:
        >>> check_weights_from("missing.ckpt")
        Traceback (most recent call last):
        ...
        lit_ssgan.errors.ConfigError: model.training.weights_from: missing.ckpt does not exist
    """
    if path is None:
        return None
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"model.training.weights_from: {path} is a folder; give the checkpoint or state-dict file")
    if not file.is_file():
        raise ConfigError(f"model.training.weights_from: {path} does not exist")
    return file


#: the constructor options of lit_ssgan before 0.2.0 that are now in parts
FLAT_OPTIONS = (
    "classification",
    "unlabeled_weight",
    "unlabeled_entropy_weight",
    "unlabeled_consistency_weight",
    "mean_teacher_decay",
    "pseudo_label_threshold",
    "d_label_smooth",
    "generator_target_prob",
    "generator_loss",
    "feature_distance",
    "d_clip_val",
    "g_clip_val",
    "clip_algorithm",
    "d_gradient_multipliers",
    "g_gradient_multipliers",
    *(field.name for field in dataclasses.fields(Training)),
)


def from_flat_options(hparams: dict[str, Any]) -> dict[str, Any] | None:
    """The hyperparameters of a checkpoint written before 0.2.0 (every option flat in the
    constructor) in the form of the parts; None for a checkpoint already in that form.

    Example:
        >>> new = from_flat_options({"unlabeled_weight": 0.5, "d_clip_val": 1.0, "data_dependent_init": True})
        >>> new["d_loss"]["init_args"]["unlabeled_weight"], new["d_gradients"]["init_args"]["clip_val"]
        (0.5, 1.0)
        >>> new["training"]["data_dependent_init"], from_flat_options(new)
        (True, None)
    """
    if not any(name in hparams for name in FLAT_OPTIONS):
        return None
    old = dict(hparams)
    get = old.pop
    weight, decay = get("unlabeled_consistency_weight", 0.0), get("mean_teacher_decay", None)
    threshold = get("pseudo_label_threshold", None)
    consistency = None
    if weight:
        strategy = "MeanTeacher" if decay is not None else "PiModel"
        consistency = {
            "class_path": f"lit_ssgan.consistency.{strategy}",
            "init_args": {"weight": weight, "pseudo_label_threshold": threshold, **({"decay": decay} if decay else {})},
        }
    new = {
        "d_loss": _part(
            "losses.DiscriminatorLoss",
            unlabeled_weight=get("unlabeled_weight", 1.0),
            unlabeled_entropy_weight=get("unlabeled_entropy_weight", 0.0),
            d_label_smooth=get("d_label_smooth", 0.0),
            consistency=consistency,
        ),
        "g_loss": (
            _part("losses.SigmoidKL", target_prob=get("generator_target_prob", 1.0))
            if get("generator_loss", "feature_matching") == "sigmoid_kl"
            else _part("losses.FeatureMatching", distance=get("feature_distance", "squared"))
        ),
        "training": {field.name: get(field.name) for field in dataclasses.fields(Training) if field.name in old},
    }
    algorithm = get("clip_algorithm", "norm")
    for net in "dg":
        clip_val, multipliers = get(f"{net}_clip_val", None), get(f"{net}_gradient_multipliers", None)
        new[f"{net}_gradients"] = _part(
            "gradients.GradientPolicy", clip_val=clip_val, clip_algorithm=algorithm, multipliers=multipliers
        )
    for name in ("classification", "generator_target_prob", "feature_distance"):  # the discriminator's, or unused
        old.pop(name, None)
    return {**old, **new}


def _part(class_path: str, **init_args: Any) -> dict[str, Any]:
    return {"class_path": f"lit_ssgan.{class_path}", "init_args": init_args}


def upgraded_checkpoint(path: Any) -> Any:
    """``path``, or for a checkpoint of lit_ssgan before 0.2.0 the same checkpoint in memory with
    its options mapped to the parts (:func:`from_flat_options`)."""
    checkpoint = load_checkpoint_file(path)
    upgraded = from_flat_options(checkpoint.get("hyper_parameters") or {})
    if upgraded is None:
        return path
    buffer = io.BytesIO()
    torch.save({**checkpoint, "hyper_parameters": upgraded}, buffer)
    buffer.seek(0)
    return buffer
