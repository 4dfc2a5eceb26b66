"""The consistency term's strategies (``model.d_loss.consistency``): where the target of the
unlabeled batch's second look comes from, and how far the discriminator is from it.

- :class:`PiModel` (Laine & Aila 2017): the unlabeled batch goes through the discriminator a second
  time, under other noise (and, with ``strong_cutout``, with a square of each image cut out: FixMatch's
  strong view); both passes get gradients.
- :class:`MeanTeacher` (Tarvainen & Valpola 2017): the second pass goes through an exponential
  moving average of the discriminator's weights (the teacher), which gets none.

Either measures the distance as the squared distance of the two class distributions
(:func:`~lit_ssgan.losses.consistency`) or, with ``pseudo_label_threshold``, as FixMatch's cross
entropy against the target's most probable class where it is that sure
(:func:`~lit_ssgan.losses.pseudo_label`, Sohn et al. 2020): the Π-model's second pass learns the
first's class, the Mean Teacher's student (the first pass) the teacher's.
"""

from __future__ import annotations

from jsonargparse.typing import ClosedUnitInterval, PositiveFloat
from torch import Tensor, nn

from lit_ssgan.averaging import ExponentialMovingAverage
from lit_ssgan.errors import ConfigError, check_probability
from lit_ssgan.models.layers import cutout
from lit_ssgan.parts import Part


class Consistency(Part):
    """The consistency term of the discriminator's loss on unlabeled data.

    Args:
        weight: the term's weight in the discriminator's loss (> 0).
        pseudo_label_threshold: the term as :func:`~lit_ssgan.losses.pseudo_label` with this
            threshold; None: the squared distance :func:`~lit_ssgan.losses.consistency`.
    """

    #: whether the target comes from a teacher network (else: from the discriminator's second pass,
    #: which for the pseudo-label learns the first pass's class: FixMatch's strong view)
    uses_teacher = False

    def __init__(self, weight: PositiveFloat = 1.0, pseudo_label_threshold: ClosedUnitInterval | None = None) -> None:
        super().__init__()
        if not isinstance(weight, (int, float)) or weight <= 0:
            raise ConfigError(f"consistency weight must be > 0 (leave consistency out to turn it off), got {weight!r}")
        if pseudo_label_threshold is not None:
            check_probability("pseudo_label_threshold", pseudo_label_threshold)
        self.weight = float(weight)
        self.pseudo_label_threshold = pseudo_label_threshold

    def make_teacher(self, discriminator: nn.Module) -> ExponentialMovingAverage | None:
        """The network that gives the target, if not the discriminator itself (None)."""
        return None

    def second_look(self, images: Tensor) -> Tensor:
        """The unlabeled images as the second pass sees them (here: as they are)."""
        return images


class PiModel(Consistency):
    """The Π-model: the target is the discriminator's own second pass, under other noise (it needs
    a discriminator with noise or dropout, or ``strong_cutout``; else both passes agree and the
    term is 0).

    Args:
        weight: the term's weight.
        pseudo_label_threshold: as for :class:`Consistency`; the second pass learns the most
            probable class of the first where the first is that sure (FixMatch: the weakly
            augmented view labels, the strongly augmented one learns).
        strong_cutout: the second pass sees each unlabeled image with a square of this fraction
            of its side zeroed at a random place (:func:`~lit_ssgan.models.layers.cutout`, the
            cutout of FixMatch's strong view); 0: the same images, under the network's noise alone.
    """

    def __init__(
        self,
        weight: PositiveFloat = 1.0,
        pseudo_label_threshold: ClosedUnitInterval | None = None,
        strong_cutout: ClosedUnitInterval = 0.0,
    ) -> None:
        super().__init__(weight, pseudo_label_threshold)
        self.strong_cutout = check_probability("consistency strong_cutout", strong_cutout)

    def second_look(self, images: Tensor) -> Tensor:
        return cutout(images, self.strong_cutout)


class MeanTeacher(Consistency):
    """Mean Teacher: the target is the class distribution of an exponential moving average of the
    discriminator's weights with ``decay`` (after the warm-up of
    :func:`~lit_ssgan.averaging.ema_with_warmup`). The module updates the average before each
    discriminator step and keeps it in its checkpoints (``teacher.*``).

    Args:
        weight: the term's weight.
        decay: the teacher's decay.
        pseudo_label_threshold: as for :class:`Consistency`.
    """

    uses_teacher = True

    def __init__(
        self,
        weight: PositiveFloat = 1.0,
        decay: ClosedUnitInterval = 0.99,
        pseudo_label_threshold: ClosedUnitInterval | None = None,
    ) -> None:
        super().__init__(weight, pseudo_label_threshold)
        self.decay = check_probability("mean_teacher decay", decay)

    def make_teacher(self, discriminator: nn.Module) -> ExponentialMovingAverage:
        return ExponentialMovingAverage(discriminator, self.decay).requires_grad_(False)
