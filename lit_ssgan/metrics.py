"""The validation and test scores, as torchmetrics."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy


def validation_scores(num_classes: int) -> MetricCollection:
    """Top-1 accuracy (``acc``) and its complement (``error``, tefla's ``v-loss``) over
    ``(N, K)`` logits and ``(N,)`` labels; clone it with a ``val/`` or ``test/`` prefix.

    Example:
        >>> import torch
        >>> scores = validation_scores(3)
        >>> scores.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 2]))
        >>> {name: round(value.item(), 2) for name, value in scores.compute().items()}
        {'acc': 0.5, 'error': 0.5}
    """
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "error": 1 - MulticlassAccuracy(num_classes, average="micro"),
        }
    )
