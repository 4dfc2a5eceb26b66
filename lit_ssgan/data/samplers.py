"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Yields ``num_samples`` indices per epoch from consecutive random permutations of
    ``range(num_items)``: a small labeled set is cycled, each pass in a new order, until
    it has filled the epoch.

    Lightning calls :meth:`set_epoch` at the start of every training epoch.

    Args:
        num_items: size of the dataset.
        num_samples: indices per epoch; defaults to ``num_items`` (one pass).
        seed: the order is a function of ``(seed, epoch)`` only.
        start: the first iteration skips this many indices of its epoch's order: a run resumed
            from a mid-epoch checkpoint continues with the batches it had not seen. Later
            iterations start at 0.
    """

    def __init__(self, num_items: int, num_samples: int | None = None, seed: int = 0, start: int = 0) -> None:
        if num_items < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items = num_items
        self.num_samples = num_items if num_samples is None else num_samples
        self.seed = seed
        self.epoch = 0
        self.start = start

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        passes = -(-self.num_samples // self.num_items)
        order = np.concatenate([rng.permutation(self.num_items) for _ in range(passes)])
        start, self.start = self.start, 0
        return iter(order[start : self.num_samples].tolist())
