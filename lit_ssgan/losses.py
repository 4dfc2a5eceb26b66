"""Losses of the semi-supervised GAN (Salimans et al. 2016), as pure functions of tensors.

The discriminator's K class logits ``l(x)`` double as a real/fake classifier: the fake
class has an implicit logit of 0 (or an explicit (K+1)-th output), so
``P(real | x) = sigmoid(gan_logits(x))``.

Example:
    >>> import torch
    >>> logits = torch.zeros(4, 10)  # (N, K)
    >>> round(gan_logits(logits)[0].item(), 4)  # log(10): ten equally likely real classes
    2.3026
    >>> sigmoid_kl_with_logits(torch.tensor([0.0]), 0.5)  # already at the target: KL is 0
    tensor([0.])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ssgan.errors import ConfigError

FeatureDistance = Literal["absolute", "squared"]


def _check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a float in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a float in [0, 1], got {value!r}")
    return float(value)


def _entropy(p: float) -> float:
    """Binary entropy H(p) in nats, with H(0) = H(1) = 0."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


def sigmoid_kl_with_logits(logits: Tensor, targets: float) -> Tensor:
    """Elementwise KL divergence between a constant soft target and ``sigmoid(logits)``.

    Binary cross entropy of the logits against the target ``t`` minus the entropy of ``t``,
    so the minimum over the logits is exactly 0. Stable for logits of any magnitude.

    Args:
        logits: real/fake logits of any shape.
        targets: the soft target probability ``t``, a float in [0, 1].

    Returns:
        A tensor shaped like ``logits``.

    Raises:
        ConfigError: (a ``ValueError``) if ``targets`` is not a float in [0, 1].
    """
    t = _check_probability("targets", targets)
    bce = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, t), reduction="none")
    return bce - _entropy(t)


def gan_logits(logits: Tensor, explicit_fake: bool = False) -> Tensor:
    """The real-vs-fake logit from the discriminator's output.

    Args:
        logits: ``(N, K)`` class logits, or ``(N, K + 1)`` with the fake logit last when
            ``explicit_fake``.
        explicit_fake: whether the last column is an explicit fake-class logit (tefla's
            variant) rather than the implicit fake logit 0 (OpenAI's).

    Returns:
        ``(N,)`` logits of P(real | x).
    """
    if explicit_fake:
        return torch.logsumexp(logits[:, :-1], dim=1) - logits[:, -1]
    return torch.logsumexp(logits, dim=1)


def class_logits(logits: Tensor, explicit_fake: bool = False) -> Tensor:
    """The ``(N, K)`` class logits, dropping an explicit fake-class column if there is one."""
    return logits[:, :-1] if explicit_fake else logits


def feature_matching(real: Tensor, fake: Tensor, distance: FeatureDistance = "squared") -> Tensor:
    """Distance between the batch means of real and generated features.

    Args:
        real: ``(N, F)`` discriminator features of an unlabeled batch.
        fake: ``(M, F)`` discriminator features of generated images.
        distance: ``"absolute"`` (tefla) or ``"squared"`` (OpenAI's MNIST code) mean
            difference over the feature dimension.
    """
    diff = real.mean(dim=0) - fake.mean(dim=0)
    if distance == "absolute":
        return diff.abs().mean()
    if distance == "squared":
        return diff.square().mean()
    raise ConfigError(f"feature matching distance must be 'absolute' or 'squared', got {distance!r}")


def heads(logits: Tensor, classification: bool = True, explicit_fake: bool = False) -> tuple[Tensor, Tensor]:
    """The discriminator's two heads: what it predicts, and its real/fake logit.

    Args:
        logits: the discriminator's output: ``(N, K)`` or ``(N, K + 1)`` for classification;
            ``(N, 2)`` for regression (the value, then an explicit real/fake logit).
        classification: whether the task is classification.
        explicit_fake: for classification, whether the last column is a fake-class logit.

    Returns:
        ``(N, K)`` class logits or ``(N,)`` regression values, and ``(N,)`` logits of P(real).

    Example:
        >>> values, real = heads(torch.tensor([[2.5, -1.0]]), classification=False)
        >>> values.tolist(), real.tolist()
        ([2.5], [-1.0])
    """
    if not classification:
        return logits[:, 0], logits[:, 1]
    return class_logits(logits, explicit_fake), gan_logits(logits, explicit_fake)


def d_loss_labeled(predicted: Tensor, labels: Tensor, classification: bool = True) -> Tensor:
    """The supervised term: cross entropy of ``(N, K)`` class logits against ``(N,)`` labels, or
    for regression the mean squared error of ``(N,)`` values against the labels read as numbers."""
    if classification:
        return F.cross_entropy(predicted, labels)
    return F.mse_loss(predicted, labels.to(predicted.dtype))


def conditional_entropy(class_logits: Tensor) -> Tensor:
    """Mean entropy of the predicted class distribution, ``-Σ p log p``, over ``(N, K)`` logits: the
    term Dai et al. 2017 ("Good Semi-supervised Learning that Requires a Bad GAN") add on unlabeled
    data, so that the classifier commits to a class there.

    Example:
        >>> round(conditional_entropy(torch.zeros(1, 4)).item(), 4)  # uniform over 4: log 4
        1.3863
    """
    log_p = class_logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def consistency(class_logits_a: Tensor, class_logits_b: Tensor) -> Tensor:
    """Mean squared distance between the class distributions of two ``(N, K)`` logits of the same
    images seen under different noise (the Π-model's term, Laine & Aila 2017, "Temporal Ensembling
    for Semi-Supervised Learning"; Sajjadi et al. 2016): ``Σ_k (p_k - q_k)²``, averaged over images.

    Example:
        >>> consistency(torch.zeros(2, 3), torch.zeros(2, 3)).item()  # the same prediction: 0
        0.0
    """
    return (class_logits_a.softmax(dim=1) - class_logits_b.softmax(dim=1)).square().sum(dim=1).mean()


def d_loss_real(gan_logits_real: Tensor, d_label_smooth: float = 0.0) -> Tensor:
    """Unlabeled real data should look real, with one-sided label smoothing."""
    return sigmoid_kl_with_logits(gan_logits_real, 1.0 - d_label_smooth).mean()


def d_loss_fake(gan_logits_fake: Tensor) -> Tensor:
    """Generated data should look fake."""
    return F.binary_cross_entropy_with_logits(gan_logits_fake, torch.zeros_like(gan_logits_fake))


def g_loss_sigmoid_kl(gan_logits_fake: Tensor, generator_target_prob: float = 1.0) -> Tensor:
    """The generator pushes D's P(real) on its samples toward ``generator_target_prob``."""
    return sigmoid_kl_with_logits(gan_logits_fake, generator_target_prob).mean()
