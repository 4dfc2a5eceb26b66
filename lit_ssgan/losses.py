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
from collections.abc import Mapping
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat
from torch import Tensor, nn

from lit_ssgan.consistency import Consistency
from lit_ssgan.errors import ConfigError, check_choice, check_non_negative, check_probability
from lit_ssgan.parts import Part, built

FeatureDistance = Literal["absolute", "squared"]


class Heads(NamedTuple):
    """The discriminator's two heads on a batch of images."""

    predicted: Tensor
    """``(N, K)`` class logits, or ``(N,)`` values for regression."""
    gan: Tensor
    """``(N,)`` logits of P(real)."""


class LossParts(NamedTuple):
    """A loss to minimise and its named terms, each before its weight (logged as ``train/<name>``)."""

    total: Tensor
    terms: dict[str, Tensor]


def weighted(terms: dict[str, Tensor], weights: Mapping[str, float]) -> LossParts:
    """``Σ weights[name] · terms[name]``, with the terms kept for the logs.

    Example:
        >>> weighted({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, {"a": 1.0, "b": 0.5}).total
        tensor(3.5000)
    """
    weighted_terms = [value if weights[name] == 1.0 else weights[name] * value for name, value in terms.items()]
    total = weighted_terms[0]
    for value in weighted_terms[1:]:
        total = total + value
    return LossParts(total, terms)


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
    t = check_probability("targets", targets)
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


def pull_away(features: Tensor) -> Tensor:
    """The pull-away term of ``(N, F)`` features of generated images (Zhao et al. 2017, EBGAN; the
    generator's term in Dai et al. 2017, "Good Semi-supervised Learning That Requires a Bad GAN"):
    the mean squared cosine similarity of each pair of distinct images, 1 when all are one image,
    near 0 when their features point in unrelated directions.

    Example:
        >>> round(pull_away(torch.ones(3, 2)).item(), 4)  # one image three times
        1.0
        >>> pull_away(torch.eye(2)).item()  # orthogonal features
        0.0
    """
    n = features.shape[0]
    if n < 2:
        raise ValueError("the pull-away term needs at least two generated images")
    unit = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=1)  # bf16: in fp32
    similarity = (unit @ unit.T).square()
    return (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))


def heads(logits: Tensor, classification: bool = True, explicit_fake: bool = False) -> Heads:
    """The discriminator's two heads: what it predicts, and its real/fake logit.

    Args:
        logits: the discriminator's output: ``(N, K)`` or ``(N, K + 1)`` for classification;
            ``(N, 2)`` for regression (the value, then an explicit real/fake logit).
        classification: whether the task is classification.
        explicit_fake: for classification, whether the last column is a fake-class logit.

    Returns:
        ``(N, K)`` class logits or ``(N,)`` regression values, and ``(N,)`` logits of P(real).

    Example:
        >>> out = heads(torch.tensor([[2.5, -1.0]]), classification=False)
        >>> out.predicted.tolist(), out.gan.tolist()
        ([2.5], [-1.0])
    """
    if not classification:
        return Heads(logits[:, 0], logits[:, 1])
    return Heads(class_logits(logits, explicit_fake), gan_logits(logits, explicit_fake))


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


def pseudo_label(class_logits: Tensor, target_logits: Tensor, threshold: float) -> Tensor:
    """FixMatch's consistency (Sohn et al. 2020): cross entropy of ``(N, K)`` logits against the
    most probable class of ``target_logits`` (the same images seen another way),
    counted where that class's probability reaches ``threshold`` and as 0 elsewhere; averaged
    over all N images.

    Example:
        >>> target = torch.tensor([[4.0, 0.0], [0.0, 0.0]])  # sure of class 0; undecided
        >>> round(pseudo_label(torch.zeros(2, 2), target, 0.9).item(), 4)  # log 2, counted once of 2
        0.3466
    """
    confidence, label = target_logits.softmax(dim=1).max(dim=1)  # no gradient reaches the target
    counted = (confidence >= threshold).to(class_logits.dtype)
    return (F.cross_entropy(class_logits, label, reduction="none") * counted).mean()


def d_loss_real(gan_logits_real: Tensor, d_label_smooth: float = 0.0) -> Tensor:
    """Unlabeled real data should look real, with one-sided label smoothing."""
    return sigmoid_kl_with_logits(gan_logits_real, 1.0 - d_label_smooth).mean()


def d_loss_fake(gan_logits_fake: Tensor) -> Tensor:
    """Generated data should look fake."""
    return F.binary_cross_entropy_with_logits(gan_logits_fake, torch.zeros_like(gan_logits_fake))


def g_loss_sigmoid_kl(gan_logits_fake: Tensor, generator_target_prob: float = 1.0) -> Tensor:
    """The generator pushes D's P(real) on its samples toward ``generator_target_prob``."""
    return sigmoid_kl_with_logits(gan_logits_fake, generator_target_prob).mean()


class DiscriminatorLoss(Part, nn.Module):
    """The discriminator's loss (``model.d_loss``): the supervised term, plus ``unlabeled_weight``
    times the GAN terms, plus the optional terms on unlabeled data, each with its weight::

        d_loss = d_loss_class + unlabeled_weight · (d_loss_real + d_loss_fake)
                 + unlabeled_entropy_weight · d_entropy + consistency.weight · d_consistency

    (regression: ``d_loss_mse`` in place of ``d_loss_class``; ``d_consistency`` is :func:`consistency`,
    or :func:`pseudo_label` with the strategy's ``pseudo_label_threshold``). A new term is one weight
    and one line here. A term of weight 0 is not computed, and the images only it needs do not pass
    through D: with ``unlabeled_weight`` 0 there is no generated batch (:attr:`uses_generated`), so the
    generator does not train; with no unlabeled term at all D sees the labeled batch alone.

    Args:
        unlabeled_weight: weight of ``d_loss_real + d_loss_fake`` (0 trains the classifier on the
            labeled data alone).
        unlabeled_entropy_weight: weight of :func:`conditional_entropy` on unlabeled data (Dai et
            al. 2017); 0: off. Classification only.
        d_label_smooth: one-sided label smoothing: the unlabeled data's target P(real) is
            ``1 - d_label_smooth``.
        consistency: the consistency term on unlabeled data and where its target comes from
            (:class:`~lit_ssgan.consistency.PiModel` or :class:`~lit_ssgan.consistency.MeanTeacher`);
            None: off. Classification only.

    The task (classification or regression) is the discriminator's; the module sets it with
    :meth:`for_task`.

    Example:
        >>> loss = DiscriminatorLoss(unlabeled_weight=0.5)
        >>> h = Heads(torch.zeros(2, 10), torch.zeros(2))  # undecided: P(real) 1/2, classes uniform
        >>> parts = loss(h, torch.tensor([3, 7]), h, h)
        >>> sorted(parts.terms), round(parts.total.item(), 4)  # log 10 + (log 2 + log 2) / 2
        (['d_loss_class', 'd_loss_fake', 'd_loss_real'], 2.9957)
        >>> labels_only = DiscriminatorLoss(unlabeled_weight=0)
        >>> labels_only.uses_unlabeled, labels_only.uses_generated, labels_only(h, torch.tensor([3, 7])).terms.keys()
        (False, False, dict_keys(['d_loss_class']))
    """

    def __init__(
        self,
        unlabeled_weight: NonNegativeFloat = 1.0,
        unlabeled_entropy_weight: NonNegativeFloat = 0.0,
        d_label_smooth: ClosedUnitInterval = 0.0,
        consistency: Consistency | None = None,
    ) -> None:
        super().__init__()
        check_non_negative("d_loss.unlabeled_weight", unlabeled_weight)
        check_non_negative("d_loss.unlabeled_entropy_weight", unlabeled_entropy_weight)
        self.d_label_smooth = check_probability("d_loss.d_label_smooth", d_label_smooth)
        self.consistency = built(consistency, Consistency, "d_loss.consistency")
        unlabeled_terms = {
            "d_loss_real": unlabeled_weight,
            "d_loss_fake": unlabeled_weight,
            "d_entropy": unlabeled_entropy_weight,
            "d_consistency": self.consistency.weight if self.consistency is not None else 0.0,
        }
        self.weights = {name: weight for name, weight in unlabeled_terms.items() if weight}
        self.for_task(classification=True)

    def for_task(self, classification: bool) -> DiscriminatorLoss:
        """Sets the supervised term for the discriminator's task (cross entropy, or for regression
        the mean squared error); returns the loss.

        Raises:
            ConfigError: for regression with a term that needs classes.
        """
        for name, option in (("d_entropy", "unlabeled_entropy_weight"), ("d_consistency", "consistency")):
            if not classification and name in self.weights:
                raise ConfigError(f"d_loss.{option} needs classification: a regression discriminator has no classes")
        self.classification = classification
        labeled_term = "d_loss_class" if classification else "d_loss_mse"
        others = {name: w for name, w in self.weights.items() if name not in ("d_loss_class", "d_loss_mse")}
        self.weights = {labeled_term: 1.0, **others}
        return self

    @property
    def labeled_term(self) -> str:
        """The supervised term's name: ``d_loss_class`` or, for regression, ``d_loss_mse``."""
        return "d_loss_class" if self.classification else "d_loss_mse"

    @property
    def uses_unlabeled(self) -> bool:
        """Whether a term of the loss looks at the unlabeled batch (else D learns from the labels alone)."""
        return any(name in self.weights for name in ("d_loss_real", "d_entropy", "d_consistency"))

    @property
    def uses_generated(self) -> bool:
        """Whether the loss looks at generated images (``d_loss_fake``): without it, nothing the
        generator does reaches D's loss, and the module does not train the generator."""
        return "d_loss_fake" in self.weights

    @property
    def needs_second_pass(self) -> bool:
        """Whether the unlabeled batch must pass through the discriminator twice (the Π-model)."""
        return self.consistency is not None and not self.consistency.uses_teacher

    def forward(
        self,
        labeled: Heads,
        labels: Tensor,
        unlabeled: Heads | None = None,
        fake: Heads | None = None,
        unlabeled_again: Heads | None = None,
    ) -> LossParts:
        """The loss of one discriminator step, from its heads on the labeled images and, where a term
        of non-zero weight needs them, on the unlabeled and generated images (and the unlabeled images'
        second look, for the consistency term)."""
        terms = {self.labeled_term: d_loss_labeled(labeled.predicted, labels, self.classification)}
        if "d_loss_real" in self.weights:
            terms["d_loss_real"] = d_loss_real(_given(unlabeled, "d_loss_real").gan, self.d_label_smooth)
        if "d_loss_fake" in self.weights:
            terms["d_loss_fake"] = d_loss_fake(_given(fake, "d_loss_fake").gan)
        if "d_entropy" in self.weights:
            terms["d_entropy"] = conditional_entropy(_given(unlabeled, "d_entropy").predicted)
        if self.consistency is not None and "d_consistency" in self.weights:
            first = _given(unlabeled, "d_consistency").predicted
            second = _given(unlabeled_again, "d_consistency (the unlabeled batch's second look)").predicted
            threshold = self.consistency.pseudo_label_threshold
            if threshold is None:
                terms["d_consistency"] = consistency(first, second)
            else:
                student, target = (first, second) if self.consistency.uses_teacher else (second, first)
                terms["d_consistency"] = pseudo_label(student, target, threshold)
        return weighted(terms, self.weights)


def _given(heads: Heads | None, term: str) -> Heads:
    """``heads``, which the loss term ``term`` needs."""
    if heads is None:
        raise ValueError(f"{term} needs heads the discriminator step did not compute")
    return heads


class GeneratorLoss(Part, nn.Module):
    """The generator's loss (``model.g_loss``): :class:`FeatureMatching` or :class:`SigmoidKL`."""

    #: whether the loss compares features of real and generated images (else: D's P(real))
    matches_features = False

    def forward(self, real_features: Tensor | None, fake_features: Tensor | None, fake_gan: Tensor | None) -> LossParts:
        """The loss of one generator step: from ``(N, F)`` features of an unlabeled batch and
        ``(M, F)`` of generated images, or from the ``(M,)`` real/fake logits of generated images."""
        raise NotImplementedError


class FeatureMatching(GeneratorLoss):
    """The paper's generator loss: the distance between the mean features of an unlabeled batch
    and of generated images (:func:`feature_matching`), and optionally Bad GAN's pull-away term
    (:func:`pull_away`), which a generator that makes one image for every ``z`` pays in full: a
    batch of one image matches the mean features as well as a varied one does.

    Args:
        distance: ``"squared"`` (OpenAI) or ``"absolute"`` (tefla).
        pull_away_weight: the pull-away term's weight (0: off, as in the paper).

    Example:
        >>> FeatureMatching()(torch.ones(4, 3), torch.zeros(4, 3), fake_gan=None)
        LossParts(total=tensor(1.), terms={'g_loss': tensor(1.)})
    """

    matches_features = True

    def __init__(self, distance: FeatureDistance = "squared", pull_away_weight: NonNegativeFloat = 0.0) -> None:
        super().__init__()
        self.distance = check_choice("g_loss.distance", distance, get_args(FeatureDistance))
        self.pull_away_weight = float(check_non_negative("g_loss.pull_away_weight", pull_away_weight))

    def forward(self, real_features: Tensor | None, fake_features: Tensor | None, fake_gan: Tensor | None) -> LossParts:
        if real_features is None or fake_features is None:
            raise ValueError("feature matching needs the features of real and of generated images")
        g_loss = feature_matching(real_features, fake_features, self.distance)
        if not self.pull_away_weight:
            return LossParts(g_loss, {"g_loss": g_loss})
        g_pull_away = pull_away(fake_features)
        return LossParts(g_loss + self.pull_away_weight * g_pull_away, {"g_loss": g_loss, "g_pull_away": g_pull_away})


class SigmoidKL(GeneratorLoss):
    """The generator pushes D's P(real) on its samples toward ``target_prob`` (:func:`g_loss_sigmoid_kl`).

    Args:
        target_prob: the P(real) the generator aims for.
    """

    def __init__(self, target_prob: ClosedUnitInterval = 1.0) -> None:
        super().__init__()
        self.target_prob = check_probability("g_loss.target_prob", target_prob)

    def forward(self, real_features: Tensor | None, fake_features: Tensor | None, fake_gan: Tensor | None) -> LossParts:
        if fake_gan is None:
            raise ValueError("the sigmoid KL loss needs the real/fake logits of generated images")
        g_loss = g_loss_sigmoid_kl(fake_gan, self.target_prob)
        return LossParts(g_loss, {"g_loss": g_loss})
