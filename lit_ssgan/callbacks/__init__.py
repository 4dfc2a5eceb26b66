"""Side concerns of training, each a Lightning callback: the moving average of the weights used
for evaluation, sample grids and summaries, the epoch line, the random state kept in checkpoints,
the GPU memory cap, the checkpoint a preempted run leaves, the time the run will take, and the
record of the labeled examples it used."""

from lit_ssgan.callbacks.ema import EMA, ema_with_warmup
from lit_ssgan.callbacks.epoch_line import EpochLine
from lit_ssgan.callbacks.gpu_memory import GPUMemoryFraction
from lit_ssgan.callbacks.labeled_examples import LabeledExamples
from lit_ssgan.callbacks.preemption import Preemption
from lit_ssgan.callbacks.run_folder import RunFolderCleanup
from lit_ssgan.callbacks.samples import SampleGrid
from lit_ssgan.callbacks.step_counts import StepCounts
from lit_ssgan.callbacks.summaries import Summaries
from lit_ssgan.callbacks.time_left import TimeLeft

__all__ = [
    "EMA",
    "EpochLine",
    "GPUMemoryFraction",
    "LabeledExamples",
    "Preemption",
    "RunFolderCleanup",
    "SampleGrid",
    "StepCounts",
    "Summaries",
    "TimeLeft",
    "ema_with_warmup",
]
