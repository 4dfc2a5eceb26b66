"""The validation and test scores (tefla's ``validation_scores``), as torchmetrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCohenKappa,
    MulticlassF1Score,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from lit_ssgan.errors import ConfigError
from lit_ssgan.losses import Heads, LossParts


class RoundedKappa(MulticlassCohenKappa):
    """Quadratic-weighted Cohen's kappa of ``(N,)`` regression values rounded to the nearest of
    the ``num_classes`` grades 0 … K-1, against ``(N,)`` grades (tefla's kappa on ratings)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, weights="quadratic")

    def update(self, preds: Tensor, target: Tensor) -> None:
        grades = preds.round().clamp(0, self.num_classes - 1).long()
        super().update(grades, target.round().long())


# name -> metric of (N, K) logits and (N,) labels
CLASSIFICATION_SCORES: dict[str, Callable[[int], Metric]] = {
    "acc": lambda k: MulticlassAccuracy(k, average="micro"),
    "error": lambda k: 1 - MulticlassAccuracy(k, average="micro"),  # tefla's `v-loss`
    "kappa": lambda k: MulticlassCohenKappa(k, weights="quadratic"),
    "f1": lambda k: MulticlassF1Score(k, average="macro"),
    "auroc": lambda k: MulticlassAUROC(k),
}
# name -> metric of (N,) values and (N,) float targets
REGRESSION_SCORES: dict[str, Callable[[int], Metric]] = {
    "mae": lambda k: MeanAbsoluteError(),
    "rmse": lambda k: MeanSquaredError(squared=False),
    "kappa": RoundedKappa,
}
DEFAULT_SCORES = {True: ("acc", "error"), False: ("mae", "rmse", "kappa")}


def validation_scores(
    num_classes: int, names: Sequence[str] | None = None, classification: bool = True
) -> MetricCollection:
    """The scores named in ``names`` (default: ``acc`` and ``error`` for classification; ``mae``,
    ``rmse`` and ``kappa`` for regression); clone it with a ``val/`` or ``test/`` prefix.

    Classification: ``acc`` (top-1), ``error`` (1 - top-1, tefla's v-loss), ``kappa``
    (quadratic-weighted Cohen's kappa), ``f1`` (macro F1), ``auroc`` (one-vs-rest, macro).
    Regression: ``mae``, ``rmse``, ``kappa`` (quadratic-weighted, on values rounded to grades).

    Raises:
        ConfigError: naming ``model.validation_scores``, for a name unknown to the task.

    Example:
        >>> import torch
        >>> scores = validation_scores(3)
        >>> scores.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 2]))
        >>> {name: round(value.item(), 2) for name, value in scores.compute().items()}
        {'acc': 0.5, 'error': 0.5}
    """
    available = CLASSIFICATION_SCORES if classification else REGRESSION_SCORES
    names = DEFAULT_SCORES[classification] if names is None else names
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        task = "classification" if classification else "regression (the discriminator's regression: true)"
        raise ConfigError(
            f"model.validation_scores: {', '.join(map(repr, unknown)) or 'an empty list'} is not a score for "
            f"{task}; choose from {', '.join(available)}"
        )
    return MetricCollection({name: available[name](num_classes) for name in dict.fromkeys(names)})


def training_logs(
    d_loss: LossParts,
    g_loss: LossParts | None,
    heads: dict[str, Heads],
    labels: Tensor,
    classification: bool,
    rates: dict[str, float],
    skipped: int,
) -> dict[str, Tensor | float]:
    """What a training step logs: each loss term (``train/<term>``), the labeled batch's accuracy
    (regression: mean absolute error), D's mean P(real) on the unlabeled and generated images (where
    the step passed them through D), each network's learning rate (``rates``: ``d`` and ``g``, of the
    networks that train) and the batches skipped so far. ``g_loss``: None when the generator does not train."""
    predicted = heads["labeled"].predicted
    if classification:
        labeled = {"train/acc": (predicted.argmax(1) == labels).float().mean()}
    else:
        labeled = {"train/mae": (predicted - labels).abs().mean()}
    p_real = {
        f"train/d_{key}": torch.sigmoid(heads[name].gan).mean()
        for key, name in (("real", "unlabeled"), ("fake", "fake"))
        if name in heads
    }
    return {
        **{f"train/{name}": value for name, value in {**d_loss.terms, **(g_loss.terms if g_loss else {})}.items()},
        **labeled,
        **p_real,
        **{f"train/{net}_lr": rate for net, rate in rates.items()},
        "train/skipped_steps": float(skipped),
    }
