"""The data module's loaders: one factory (:func:`make_loader`), its workers sized to the machine
(:func:`auto_workers`); the training streams (:func:`training_loaders`), each a DataLoader
that resumes mid-epoch through Lightning's stateful-loader protocol (:class:`ResumableDataLoader`)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from lightning.fabric.utilities.data import suggested_max_num_workers
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_ssgan.data.datasets import Batch, ImageDataset, collate_batch
from lit_ssgan.data.samplers import EpochSampler
from lit_ssgan.errors import ConfigError

#: batches each loader worker keeps ready (the DataLoader's own default, set here so a reader sees
#: it): with workers sized to the machine the queue holds two batches a worker, enough to ride out
#: one slow batch; more would only hold more pinned memory
PREFETCH_FACTOR = 2


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


def auto_workers(device: str, processes_per_node: int, streams: int) -> int:
    """What ``num_workers: auto`` gives each of ``streams`` loaders that are read at once, in a run on
    ``device`` (``"cpu"``, ``"cuda"``, ...) with ``processes_per_node`` processes on this machine.

    On a CPU, 0: the training step's threads take every core, and a worker would compete with them.
    Elsewhere the cores this process may run on (``os.sched_getaffinity``), shared among the
    machine's processes less one for each (Lightning's ``suggested_max_num_workers``), then shared
    among the streams, at least one each.

    Example:
        >>> auto_workers("cpu", processes_per_node=1, streams=3)
        0
    """
    if device == "cpu":
        return 0
    return max(1, suggested_max_num_workers(processes_per_node) // streams)


def leave_stops_to_the_main_process(worker_id: int) -> None:
    """A loader worker's start (``worker_init_fn``): it ignores Ctrl-C and SIGTERM. A terminal's
    Ctrl-C, and many schedulers' SIGTERM, reach every process of the group; the main process stops
    with a checkpoint and then shuts its workers down (or they exit when it is gone), while a worker
    killed by the signal ended the run in "DataLoader worker ... is killed" before its checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def check_num_workers(num_workers: Any) -> None:
    """Refuses a ``num_workers`` that is neither an int 0 or more nor ``"auto"``.

    Raises:
        ConfigError: naming ``data.num_workers``.
    """
    if num_workers != "auto" and (isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0):
        raise ConfigError(f"data.num_workers must be 0 or more, or 'auto' (sized to the machine); got {num_workers!r}")


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    num_workers: int | Literal["auto"],
    device: str = "cpu",
    processes_per_node: int = 1,
    seed: int = 0,
    sampler: EpochSampler | None = None,
    streams: int = 1,
) -> DataLoader:
    """A loader of ``dataset`` in batches of ``batch_size`` (:func:`~lit_ssgan.data.datasets.collate_batch`).

    Args:
        dataset: what it loads.
        batch_size: examples a batch.
        num_workers: worker processes, or ``"auto"`` (:func:`auto_workers`).
        device: the type of device the step runs on (``"cpu"``, ``"cuda"``, ...): on ``"cuda"`` the
            batches come in page-locked memory.
        processes_per_node: the run's processes on this machine (for ``"auto"``).
        seed: seeds the loader's own generator, which keeps iterator creation off the global RNG.
        sampler: with one, a :class:`ResumableDataLoader` that drops a last partial batch; without,
            a DataLoader of the dataset in order, every example once.
        streams: the loaders read at once that share the workers ``"auto"`` gives (the three
            training streams).
    """
    workers = auto_workers(device, processes_per_node, streams) if num_workers == "auto" else num_workers
    return (ResumableDataLoader if sampler is not None else DataLoader)(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=sampler is not None,
        collate_fn=collate_batch,
        num_workers=workers,
        # workers are started once, not every epoch; and they fill the queue ahead of the step
        persistent_workers=workers > 0,
        worker_init_fn=leave_stops_to_the_main_process if workers > 0 else None,
        prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
        # batches in page-locked memory on a GPU run, so that Lightning's copy to the device
        # (non_blocking there) overlaps the step instead of waiting for it
        pin_memory=device == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


#: the training batch's streams, in the order that seeds them (stream ``i`` from ``seed + i``)
TRAINING_STREAMS = ("labeled", "unlabeled", "unlabeled_g")


def real_images(batch: dict[str, Batch]) -> Tensor:
    """The real images of a training batch: its unlabeled stream's, or its labeled stream's where the
    step reads no unlabeled images (the labels-only twin)."""
    return (batch["unlabeled"] if "unlabeled" in batch else batch["labeled"])[0]


def training_loaders(
    labeled: ImageDataset,
    unlabeled: ImageDataset,
    labeled_weights: Callable[[int], np.ndarray] | None,
    batch_size: int,
    seed: int,
    batches_per_epoch: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    streams: Sequence[str] = TRAINING_STREAMS,
    **options: Any,
) -> dict[str, DataLoader]:
    """The training streams, each a :class:`ResumableDataLoader` of ``batch_size`` batches over
    an :class:`EpochSampler` of its own: ``labeled`` (``labeled`` cycled, each pass reshuffled; or
    drawn by ``labeled_weights``), ``unlabeled`` and ``unlabeled_g`` (``unlabeled``, each in an order
    of its own). Each epoch gives each of the ``world_size`` processes its share.

    Args:
        labeled: the labeled set.
        unlabeled: the unlabeled set.
        labeled_weights: the labeled examples' sampling weights, a function of the epoch
            (:func:`~lit_ssgan.data.split.labeled_weights`), or None.
        batch_size: examples a batch.
        seed: the ``i``-th stream's order is a function of ``(seed + i, epoch)``; it also seeds the
            loaders' generator.
        batches_per_epoch: batches an epoch in each process; default one pass over ``unlabeled``,
            shared among the processes.
        rank: this process's index among ``world_size``.
        world_size: the processes that share each epoch.
        streams: which of :data:`TRAINING_STREAMS` to load (each in the order it has among all three:
            the labeled order is the same without the others).
        **options: :func:`make_loader`'s ``num_workers``, ``device`` and ``processes_per_node``; the
            streams share the workers.

    Returns:
        ``{"labeled": loader, "unlabeled": loader, "unlabeled_g": loader}``, of ``streams`` only.

    Raises:
        ConfigError: if ``unlabeled`` is too small for one batch in each process.
    """
    num_batches = batches_per_epoch or len(unlabeled) // (batch_size * world_size)
    if num_batches < 1:
        raise ConfigError(f"the unlabeled set ({len(unlabeled)} images) is too small for {world_size} processes")
    unknown = sorted(set(streams) - set(TRAINING_STREAMS))
    if unknown:
        raise ValueError(f"no training stream {', '.join(unknown)} (the streams: {', '.join(TRAINING_STREAMS)})")
    sources = zip(TRAINING_STREAMS, ((labeled, labeled_weights), (unlabeled, None), (unlabeled, None)), strict=True)
    return {
        name: make_loader(
            dataset,
            batch_size,
            seed=seed,
            sampler=EpochSampler(len(dataset), num_batches * batch_size, seed + i, 0, rank, world_size, weights),
            streams=len(streams),
            **options,
        )
        for i, (name, (dataset, weights)) in enumerate(sources)
        if name in streams
    }
