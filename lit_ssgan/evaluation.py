"""What a trained discriminator is used for: its prediction, the validation and test scores, and
predictions for new images. :class:`~lit_ssgan.SemiSupervisedGAN` adds the training."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from torch import Tensor

from lit_ssgan import losses
from lit_ssgan.losses import Heads
from lit_ssgan.metrics import validation_scores
from lit_ssgan.models import Discriminator


class DiscriminatorEvaluation(LightningModule):
    """A LightningModule whose ``discriminator`` is the classifier (or, with ``regression``, the
    regressor) it evaluates; ``val/<score>`` and ``test/<score>`` are logged per
    :func:`~lit_ssgan.metrics.validation_scores`."""

    discriminator: Discriminator

    @property
    def classification(self) -> bool:
        """The task: classification into K classes, or (false) regression of the label as a number."""
        return not self.discriminator.regression

    def configure_metrics(self, names: list[str] | None) -> None:
        """The validation and test scores ``names`` (None: the task's defaults)."""
        scores = validation_scores(self.discriminator.num_classes, names, self.classification)
        self.val_metrics, self.test_metrics = scores.clone(prefix="val/"), scores.clone(prefix="test/")

    def forward(self, x: Tensor) -> Tensor:
        """``(N, K)`` class logits (regression: ``(N,)`` values) of images ``(N, C, H, W)``."""
        return self.heads(self.discriminator(x).logits).predicted

    def heads(self, logits: Tensor) -> Heads:
        """The discriminator output's prediction head and real/fake logit (:func:`losses.heads`)."""
        return losses.heads(logits, self.classification, self.discriminator.explicit_fake)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.val_metrics.update(*self._evaluated(batch))
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Returns the predictions (for reports such as the confusion matrix)."""
        predicted, target = self._evaluated(batch)
        self.test_metrics.update(predicted, target)
        self.log_dict(self.test_metrics)
        return predicted

    def _evaluated(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        return self(x), y if self.classification else y.float()

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``(N, K)`` class probabilities (regression: ``(N,)`` values)."""
        return self(batch[0]).softmax(dim=1) if self.classification else self(batch[0])
