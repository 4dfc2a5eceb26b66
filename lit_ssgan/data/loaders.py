"""A DataLoader that resumes mid-epoch through Lightning's stateful-loader protocol."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from lit_ssgan.data.samplers import EpochSampler


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose ``state_dict`` is the number of batches
    of the current epoch it has yielded. Lightning saves it in every checkpoint (its
    ``fit_loop`` calls ``state_dict`` on each training loader that has one) and hands it back
    on resume; the next iteration then skips those batches, so the epoch continues with the
    batches not yet seen, in the same order.

    The count is exact because Lightning fetches no batch ahead from a loader whose length is
    known (``_PrefetchDataFetcher`` prefetches only to learn where an unsized loader ends) and
    the DataLoader yields batches in sampler order whatever its workers prefetch. Persistent
    workers change nothing: each iteration asks the sampler for its indices anew, its ``start``
    included, and what the workers had fetched ahead of a checkpoint was never yielded, so it is
    not counted.
    """

    sampler: EpochSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler) or self.batch_size is None:
            raise TypeError("ResumableDataLoader needs an EpochSampler and a batch_size")
        self._yielded = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        skip, self._resume_at = self._resume_at, 0
        assert self.batch_size is not None
        self.sampler.start = skip * self.batch_size
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches_yielded": self._yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        done = state_dict["batches_yielded"]
        self._resume_at = done if done < len(self) else 0  # a finished epoch: the next starts afresh
