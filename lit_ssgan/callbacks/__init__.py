"""Side concerns of training, each a Lightning callback: the moving average of the weights used
for evaluation, the sample grids, and the random state kept in checkpoints."""

from lit_ssgan.callbacks.ema import EMA, ema_with_warmup
from lit_ssgan.callbacks.random_state import RandomState
from lit_ssgan.callbacks.samples import SampleGrid

__all__ = ["EMA", "RandomState", "SampleGrid", "ema_with_warmup"]
