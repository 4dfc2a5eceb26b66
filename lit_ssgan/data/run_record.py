"""What a resume must keep of the data of the run it resumes, and its refusal of anything else.

A data module's checkpointed state records the options that make its run (which examples are
labeled and validated, the batches of an epoch) and the number of its training images; a resume
(``fit`` from the checkpoint) with any of them changed would train another run on the first one's
weights, its validation possibly holding images trained on with their labels, its epochs and
schedules of another length. Each such resume is refused before its first step, in one line naming
what changed, the checkpoint's value and this run's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lit_ssgan.errors import ConfigError

#: the data options a resume keeps (:class:`~lit_ssgan.data.SemiSupervisedDataModule`'s): the draw
#: of the labeled and validation examples, what the unlabeled set holds, and the batches of an epoch
RUN_OPTIONS = (
    "data_seed",
    "num_labeled",
    "val_size",
    "unlabeled_includes_labeled",
    "unlabeled_includes_val",
    "batch_size",
    "batches_per_epoch",
)

#: what to do instead, the end of every refusal
REMEDY = "a resume keeps the run it resumes"


def run_state(datamodule: Any) -> dict[str, Any]:
    """The record of a run's data in its checkpoints: the data module's :data:`RUN_OPTIONS` and its
    number of training images (the unlabeled set; None before the split)."""
    options, unlabeled = datamodule.hparams, datamodule.unlabeled
    recorded = {name: options[name] for name in RUN_OPTIONS if name in options}
    return {**recorded, "training_images": None if unlabeled is None else len(unlabeled)}


def check_same_run(datamodule: Any, recorded: Mapping[str, Any] | None) -> None:
    """On ``fit`` from a checkpoint (nothing otherwise), refuses data that differs from the run the
    checkpoint ``recorded`` (its :func:`run_state`; None, or a key it lacks, from a checkpoint older
    than this record: not checked): first an option, then the number of training images.

    Raises:
        ConfigError: naming the first difference, the checkpoint's value, this run's and what to do.
    """
    trainer = datamodule.trainer
    if not recorded or trainer is None or trainer.state.fn != "fit":
        return
    now, ckpt_path = run_state(datamodule), trainer.ckpt_path
    for name in RUN_OPTIONS:
        if name in recorded and name in now and recorded[name] != now[name]:
            was, option = _plain(recorded[name]), f"data.{name}"
            raise ConfigError(
                refusal(
                    ckpt_path,
                    f"{option} is {was} in the checkpoint's run but {_plain(now[name])} in this one",
                    f"resume with {option} {was} (drop the option that changed it)",
                )
            )
    had, images = recorded.get("training_images"), now["training_images"]
    if had is not None and images is not None and had != images:
        raise ConfigError(
            refusal(
                ckpt_path,
                f"the data gives {images} training images (its unlabeled set) where the checkpoint's run had {had}",
                "resume on the run's own data",
            )
        )


def refusal(ckpt_path: Any, difference: str, keep: str) -> str:
    """The one line refusing a resume from ``ckpt_path``: the ``difference``, and how to ``keep``
    the run or start another."""
    return f"--ckpt_path {ckpt_path}: {difference}; {REMEDY}: {keep}, or start a new run without --ckpt_path"


def _plain(value: Any) -> str:
    """``value`` as a config or command line gives it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
