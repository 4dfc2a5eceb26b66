"""Networks for tests, importable by ``class_path`` (``tests.helpers.X``) from a CLI subprocess."""

from torch import Tensor

from lit_ssgan.models import DiscriminatorOutput, MLPDiscriminator


class DivergingDiscriminator(MLPDiscriminator):
    """An MLP discriminator whose logits turn NaN from its ``nan_after``-th training forward on
    (three forwards a batch: the D step, then the G step's real and generated features)."""

    def __init__(self, nan_after: int = 15, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        out = super().forward(x)
        if not self.training:
            return out
        self.calls += 1
        return out._replace(logits=out.logits * float("nan")) if self.calls > self.nan_after else out
