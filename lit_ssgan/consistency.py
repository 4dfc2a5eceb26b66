"""The consistency term's strategies (``model.d_loss.consistency``): where the target of the
unlabeled batch's second look comes from, and how far the discriminator is from it.

- :class:`PiModel` (Laine & Aila 2017): the unlabeled batch goes through the discriminator a second
  time, under other noise; both passes get gradients.
- :class:`MeanTeacher` (Tarvainen & Valpola 2017): the second pass goes through an exponential
  moving average of the discriminator's weights (the teacher), which gets none.

Either measures the distance as the squared distance of the two class distributions
(:func:`~lit_ssgan.losses.consistency`) or, with ``pseudo_label_threshold``, as FixMatch's cross
entropy against the target's most probable class where it is that sure
(:func:`~lit_ssgan.losses.pseudo_label`, Sohn et al. 2020).
"""

from __future__ import annotations

from jsonargparse.typing import ClosedUnitInterval, PositiveFloat
from torch import nn

from lit_ssgan.averaging import ExponentialMovingAverage
from lit_ssgan.errors import ConfigError, check_probability
from lit_ssgan.parts import Part


class Consistency(Part):
    """The consistency term of the discriminator's loss on unlabeled data.

    Args:
        weight: the term's weight in the discriminator's loss (> 0).
        pseudo_label_threshold: the term as :func:`~lit_ssgan.losses.pseudo_label` with this
            threshold; None: the squared distance :func:`~lit_ssgan.losses.consistency`.
    """

    #: whether the target comes from a teacher network (else: from the discriminator's second pass)
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


class PiModel(Consistency):
    """The Π-model: the target is the discriminator's own second pass, under other noise (it needs
    a discriminator with noise or dropout; else both passes agree and the term is 0)."""


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
