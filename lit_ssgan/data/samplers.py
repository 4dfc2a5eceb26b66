"""Shuffling samplers whose order depends only on (seed, epoch), so a resumed run sees the same
batches as an uninterrupted one, and which share each epoch out among DDP processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DistributedSampler


class EpochSampler(DistributedSampler[int]):
    """Yields ``num_samples`` indices per epoch and process, from consecutive random permutations
    of ``range(num_items)``: a small labeled set is cycled, each pass in a new order, until it
    has filled the epoch. With ``weights``, the epoch's indices are drawn with replacement instead,
    index ``i`` with probability proportional to ``weights[i]``.

    Under DDP the epoch's order is the same in every process and process ``rank`` takes every
    ``world_size``-th index of it, so together they make one epoch. (It subclasses
    ``DistributedSampler`` so that Lightning keeps it rather than wrapping it in its own.)
    Lightning calls :meth:`set_epoch` at the start of every training epoch.

    Args:
        num_items: size of the dataset.
        num_samples: indices per epoch in each process; defaults to ``num_items // world_size``.
        seed: the order is a function of ``(seed, epoch)`` only.
        start: the next iteration skips this many of its indices (a resumed epoch); later
            iterations start at 0.
        rank: this process's index among ``world_size``.
        world_size: the number of processes sharing each epoch.
        weights: a function of the epoch giving ``(num_items,)`` sampling weights (the labeled
            set's: :func:`~lit_ssgan.data.split.labeled_weights`), or None for permutations.
    """

    def __init__(
        self,
        num_items: int,
        num_samples: int | None = None,
        seed: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        # DistributedSampler.__init__ wants a dataset and an initialised process group: not needed
        if num_items < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        self.num_items = num_items
        self.num_samples = num_items // world_size if num_samples is None else num_samples
        self.seed = seed
        self.epoch = 0
        self.start = start
        self.rank, self.world_size = rank, world_size
        self.weights = weights

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def epoch_order(self) -> np.ndarray:
        """The indices of the whole epoch, over all processes."""
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_samples * self.world_size
        if self.weights is not None:
            weights = self.weights(self.epoch)
            return rng.choice(self.num_items, size=total, replace=True, p=weights / weights.sum())
        passes = -(-total // self.num_items)
        return np.concatenate([rng.permutation(self.num_items) for _ in range(passes)])[:total]

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_order()[self.rank :: self.world_size]
        start, self.start = self.start, 0
        return iter(mine[start:].tolist())
