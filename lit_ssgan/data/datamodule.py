"""The base data module: a labeled pool and a test set in, labeled / unlabeled / validation
loaders out."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_ssgan.data.datasets import ImageDataset, ImageRows, Images, as_rows, collate_batch
from lit_ssgan.data.loaders import ResumableDataLoader
from lit_ssgan.data.record import Record, read_record
from lit_ssgan.data.samplers import EpochSampler, class_weights
from lit_ssgan.errors import ConfigError, check_non_negative, check_positive, check_probability

UNKNOWN_LABEL = -1

#: batches each loader worker keeps ready (the DataLoader's own default, set here so a reader sees
#: it): with workers sized to the machine the queue holds two batches a worker, enough to ride out
#: one slow batch; more would only hold more pinned memory
PREFETCH_FACTOR = 2


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


class SemiSupervisedDataModule(LightningDataModule):
    """Splits a labeled training pool into a few labeled examples, an unlabeled set and a
    validation set, and serves them for semi-supervised GAN training.

    From the pool, ``val_size`` examples (drawn with ``data_seed``) are kept for validation;
    from the rest, ``num_labeled`` examples balanced across classes (also drawn with
    ``data_seed``) keep their labels; the unlabeled set is the rest of the pool, with the
    labels hidden. ``train_dataloader`` gives a dict of three loaders of ``batch_size``:
    ``labeled`` (the labeled set cycled, each pass reshuffled; or, with ``balance_ratio``, drawn
    with replacement by annealed class weights), ``unlabeled`` (for the discriminator) and
    ``unlabeled_g`` (an independent order, for the generator's feature matching). One epoch is
    one pass over the unlabeled set, unless ``batches_per_epoch``. Under DDP each process
    draws its own share of every epoch (together one pass) and its own labeled batches.

    Subclasses set ``num_classes`` and ``image_shape`` (before calling this ``__init__``, which
    checks the options against them) and implement :meth:`load_train_pool` and
    :meth:`load_test_set`; where their data comes in other parts, :meth:`load_val_set`,
    :meth:`load_unlabeled` and :meth:`predict_dataset`. The split itself is this class's alone, and
    it copies no image: its parts are rows of the images the subclass gave (:class:`ImageRows`),
    gathered a batch at a time.

    Args:
        num_labeled: labeled training examples, split evenly across classes; or a list, the
            number for each class (e.g. ``[14, 4, 4, ...]`` for an imbalanced labeled set); None:
            every example of the pool not kept for validation.
        val_size: examples kept out of training for validation (0: no validation).
        batch_size: size of each of the labeled, unlabeled and generated batches.
        eval_batch_size: batch size for validation, test and prediction.
        unlabeled_includes_labeled: also serve the labeled examples, unlabeled.
        unlabeled_includes_val: also serve the validation images, unlabeled; their labels
            still serve validation only.
        batches_per_epoch: epoch length in batches, per process; default one pass over the
            unlabeled set (shared among the processes under DDP).
        data_seed: seed of the validation split and of the choice of labeled examples.
        split_from: a run's ``labeled_examples.csv`` (:mod:`lit_ssgan.data.record`): its labeled and
            validation examples, with their labels checked against the data's, instead of those
            ``data_seed`` draws (the order of the unlabeled set still follows ``data_seed``). The
            counts must fit ``num_labeled`` and ``val_size``; with a validation set of its own, the
            record's validation rows must name it.
        train_transforms: albumentations transforms for training images (uint8 HWC).
        labeled_transforms: more albumentations transforms for the labeled training images alone,
            after ``train_transforms`` (the few labeled images augmented more than the unlabeled).
        eval_transforms: albumentations transforms for validation, test and prediction images.
        num_workers: DataLoader workers; 0 is fastest on a few cores (a batch is gathered from memory
            or from the decode cache, not decoded).
        balance_ratio: class balancing of the labeled stream (tefla's): in epoch ``e`` (from 0),
            labeled examples are drawn with replacement with probability proportional to their
            class's weight ``α · balance_weights + (1 - α) · final_balance_weights``,
            ``α = balance_ratio ** e``. None: no balancing (each labeled example once a pass).
        balance_weights: the class weights at the start; default the inverse class frequency
            of the labeled set (balanced classes).
        final_balance_weights: the class weights balancing anneals to; default all 1 (each
            example equally likely: the labeled set's own class frequencies).
    """

    num_classes: int
    image_shape: tuple[int, int, int]
    #: names of the classes, in the order of the network's outputs (None: the class indices)
    class_names: list[str] | None = None
    #: whether the labels are numbers (regression) rather than class indices
    numeric_labels: bool = False

    def __init__(
        self,
        num_labeled: int | list[int] | None = 100,
        val_size: int = 0,
        batch_size: int = 100,
        eval_batch_size: int = 500,
        unlabeled_includes_labeled: bool = True,
        unlabeled_includes_val: bool = False,
        batches_per_epoch: int | None = None,
        data_seed: int = 0,
        split_from: str | None = None,
        train_transforms: list[A.BasicTransform] | None = None,
        labeled_transforms: list[A.BasicTransform] | None = None,
        eval_transforms: list[A.BasicTransform] | None = None,
        num_workers: int | Literal["auto"] = 0,
        balance_ratio: float | None = None,
        balance_weights: list[float] | None = None,
        final_balance_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_options()
        # read now, before any data is: a missing or foreign file is named when the module is built
        self.split_record: Record | None = read_record(split_from) if split_from is not None else None
        self.train_transform = A.Compose(train_transforms) if train_transforms else None
        self.labeled_transform = (
            A.Compose([*(train_transforms or []), *labeled_transforms]) if labeled_transforms else self.train_transform
        )
        self.eval_transform = A.Compose(eval_transforms) if eval_transforms else None
        self.labeled: ImageDataset | None = None
        self.unlabeled: ImageDataset | None = None
        self.val: ImageDataset | None = None
        self.test: ImageDataset | None = None
        self.predict: Dataset | None = None
        # Drawn from the global RNG at setup (so `seed_everything` fixes it) and checkpointed.
        self.shuffle_seed: int | None = None
        #: the examples the split gave labels to, set by it: ``{"labeled": [(name, label), ...],
        #: "val": [...]}``, names from :meth:`example_names`, labels as :meth:`label_name` writes them
        self.labeled_examples: dict[str, list[tuple[str, str]]] | None = None

    def _check_options(self) -> None:
        """Every option, before any data is read (a subclass sets ``num_classes`` before this runs;
        0 while a data module for test or predict waits for the classes a checkpoint records)."""
        hp, k = self.hparams, getattr(self, "num_classes", 0)
        for name in ("batch_size", "eval_batch_size", "batches_per_epoch"):
            check_positive(name, hp[name], optional=name == "batches_per_epoch")
        check_non_negative("val_size", hp["val_size"])
        workers = hp["num_workers"]
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ConfigError(f"data.num_workers must be 0 or more, or 'auto' (sized to the machine); got {workers!r}")
        num_labeled = hp["num_labeled"]
        if (
            isinstance(num_labeled, list)
            and k
            and (len(num_labeled) != k or min(num_labeled) < 0 or sum(num_labeled) < 1)
        ):
            raise ConfigError(
                f"num_labeled as a list needs one count (0 or more) for each of the {k} classes, got {num_labeled}"
            )
        if isinstance(num_labeled, int) and k and num_labeled < k:
            raise ConfigError(f"num_labeled must be at least the number of classes ({k}), got {num_labeled}")
        if hp["balance_ratio"] is None and (
            hp["balance_weights"] is not None or hp["final_balance_weights"] is not None
        ):
            raise ConfigError(
                "data.balance_weights and data.final_balance_weights need data.balance_ratio (1 keeps "
                "balance_weights; below 1 anneals them toward final_balance_weights)"
            )
        if hp["balance_ratio"] is not None:
            check_probability("balance_ratio", hp["balance_ratio"])
        for name in ("balance_weights", "final_balance_weights"):
            weights = hp[name]
            if weights is not None and (any(w < 0 for w in weights) or not any(w > 0 for w in weights)):
                raise ConfigError(f"{name} must be 0 or more, and not all 0, got {weights}")
            if weights is not None and k and len(weights) != k:
                raise ConfigError(f"{name} needs one weight for each of the {k} classes, got {len(weights)}")

    def class_name(self, c: int) -> str:
        """The name of class ``c``, for messages and reports."""
        return self.class_names[c] if self.class_names else str(c)

    def label_name(self, label: float) -> str:
        """A label as a run's record of its examples writes it: the class name, or the number."""
        return f"{label:g}" if self.numeric_labels else self.class_name(int(label))

    # -- what a subclass provides ---------------------------------------------------------
    def example_names(self, part: str, indices: np.ndarray) -> list[str]:
        """How a run's record names examples ``indices`` of ``part``: ``"pool"`` (the training pool,
        :meth:`load_train_pool`) or ``"val"`` (:meth:`load_val_set`'s own set). By default their
        indices there (the built-in datasets: indices into their training set)."""
        return [str(int(i)) for i in indices]

    def load_train_pool(self) -> tuple[Images, np.ndarray]:
        """The labeled training pool: ``(N, H, W, C)`` uint8 images and ``(N,)`` labels."""
        raise NotImplementedError

    def load_test_set(self) -> tuple[Images, np.ndarray]:
        """The test set: ``(N, H, W, C)`` uint8 images and ``(N,)`` labels."""
        raise NotImplementedError

    def load_val_set(self) -> tuple[Images, np.ndarray] | None:
        """A validation set of its own, or None (the default): ``val_size`` examples of the pool."""
        return None

    def load_unlabeled(self) -> Images | None:
        """Unlabeled images beyond the pool's, ``(M, H, W, C)`` uint8, or None (the default)."""
        return None

    def check_test_set(self, needed_by: str) -> None:
        """Refuses, cheaply (reading no image), a test set that ``test`` would fail on; called at
        the start of a ``fit`` that ends with a test. By default: nothing to check."""

    def predict_dataset(self) -> Dataset:
        """What ``predict`` predicts, in order, as batches of ``(images, labels)`` with the labels
        unknown (-1); by default the test set's images, under the eval transforms."""
        images = self.load_test_set()[0]
        hidden = np.full(len(images), UNKNOWN_LABEL)
        return ImageDataset(self._checked(images, hidden, "predict set", labeled=False)[0], hidden, self.eval_transform)

    # -- splitting ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.labeled is None:
            self._split()
        if stage == "test" and self.test is None:
            images, labels = self._checked(*self.load_test_set(), "test set")
            self.test = ImageDataset(images, labels, self.eval_transform)
        if stage == "predict" and self.predict is None:
            self.predict = self.predict_dataset()
        if self.shuffle_seed is None:
            self.shuffle_seed = int(torch.randint(0, 2**62, ()).item())

    def _checked(
        self, images: Images, labels: np.ndarray, what: str, labeled: bool = True
    ) -> tuple[Images, np.ndarray]:
        c, h, w = self.image_shape
        if images.shape[1:] != (h, w, c):
            raise ConfigError(f"{what}: expected images of shape (N, {h}, {w}, {c}), got {images.shape}")
        bad = labels[(labels < 0) | (labels >= self.num_classes)] if labeled else labels[:0]
        if bad.size:
            raise ConfigError(
                f"{what}: labels must lie in [0, {self.num_classes}), found {bad.size} outside, "
                f"e.g. {sorted(set(bad.tolist()))[:5]}"
            )
        return images, labels

    def _labeled_indices(self, labels: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The labeled examples among ``candidates`` (pool indices, in random order): the first of
        each class, as many as ``num_labeled`` asks (None: all of them), sorted.

        Raises:
            ConfigError: naming the class, if it has fewer examples than asked for.
        """
        num_labeled, k = self.hparams["num_labeled"], self.num_classes
        if num_labeled is None:
            emptied = [c for c in range(k) if (labels == c).any() and not (labels[candidates] == c).any()]
            if emptied:
                raise ConfigError(
                    f"class {self.class_name(emptied[0])!r} has no training images left: all "
                    f"{int((labels == emptied[0]).sum())} went to the validation split (data.val_size "
                    f"{self.hparams['val_size']}); lower data.val_size, add images of it, or give data.val_dir"
                )
            return np.sort(candidates)
        if isinstance(num_labeled, int) and num_labeled > len(candidates):
            raise ConfigError(
                f"num_labeled ({num_labeled}) is more than the training examples left after the validation "
                f"split ({len(candidates)})"
            )
        per_class = (
            num_labeled
            if isinstance(num_labeled, list)
            else [num_labeled // k + int(c < num_labeled % k) for c in range(k)]
        )
        chosen = []
        for c, wanted in enumerate(per_class):
            of_class = candidates[labels[candidates] == c]
            if len(of_class) < wanted:
                raise ConfigError(
                    f"num_labeled={num_labeled} needs {wanted} labeled examples of class {self.class_name(c)!r}; "
                    f"there are {len(of_class)} after the validation split"
                )
            chosen.append(of_class[:wanted])
        return np.sort(np.concatenate(chosen))

    def _labeled_weights(self) -> Callable[[int], np.ndarray] | None:
        """Per-epoch sampling weights of the labeled examples (class balancing), or None."""
        hp, k = self.hparams, self.num_classes
        if hp["balance_ratio"] is None:
            return None
        assert self.labeled is not None
        labels = self.labeled.labels.numpy()
        counts = np.bincount(labels, minlength=k)
        given = {name: hp[name] for name in ("balance_weights", "final_balance_weights")}
        # tefla's default: N / count, the inverse class frequency (0 for a class with no labels)
        inverse = np.divide(len(labels), counts, out=np.zeros(k), where=counts > 0)
        balance = np.asarray(given["balance_weights"], dtype=float) if given["balance_weights"] else inverse
        final = np.asarray(given["final_balance_weights"] or np.ones(k), dtype=float)
        if not (balance[counts > 0] > 0).any() or not (final[counts > 0] > 0).any():
            raise ConfigError("balance weights give no weight to any class that has labeled examples")
        return partial(class_weights, labels, hp["balance_ratio"], balance, final)

    def _split(self) -> None:
        """The one split of every data module: validation examples (``val_size`` of the pool, drawn
        with ``data_seed``, unless :meth:`load_val_set` gives a set of its own), the labeled examples
        among the rest (:meth:`_labeled_indices`), and the unlabeled set: :meth:`load_unlabeled`'s
        images, then the pool's other examples (with the labeled ones if
        ``unlabeled_includes_labeled``), then the validation images if ``unlabeled_includes_val``."""
        hp = self.hparams
        images, labels = self._checked(*self.load_train_pool(), "training pool")
        pool = as_rows(images)
        separate_val = self.load_val_set()
        if separate_val is not None and hp["val_size"]:
            raise ConfigError("give data.val_size or a validation set of its own, not both")
        if hp["val_size"] >= len(labels):
            raise ConfigError(f"val_size ({hp['val_size']}) must be smaller than the training pool ({len(labels)})")
        order = np.random.default_rng(hp["data_seed"]).permutation(len(labels))
        own_val_names = None if separate_val is None else self.example_names("val", np.arange(len(separate_val[1])))
        if self.split_record is None:
            val_idx, train_idx = order[: hp["val_size"]], order[hp["val_size"] :]
            labeled_idx = self._labeled_indices(labels, train_idx)
        else:
            val_idx, labeled_idx = self._recorded_indices(self.split_record, labels, own_val_names)
            train_idx = order[~np.isin(order, val_idx)]
        unlabeled_idx = train_idx if hp["unlabeled_includes_labeled"] else np.setdiff1d(train_idx, labeled_idx)
        if separate_val is not None and own_val_names is not None:
            val_images, val_labels = self._checked(*separate_val, "validation set")
            val, val_names = as_rows(val_images), own_val_names
        else:
            val, val_labels, val_names = pool.subset(val_idx), labels[val_idx], self.example_names("pool", val_idx)
        self.labeled_examples = {
            "labeled": self._named(self.example_names("pool", labeled_idx), labels[labeled_idx]),
            "val": self._named(val_names, val_labels),
        }
        extra = self.load_unlabeled()
        parts = [*([] if extra is None else [as_rows(extra)]), pool.subset(unlabeled_idx)]
        if hp["unlabeled_includes_val"]:
            parts.append(val)
        unlabeled = ImageRows.concat(parts)
        if len(unlabeled) < hp["batch_size"]:
            raise ConfigError(
                f"the unlabeled set ({len(unlabeled)} images) is smaller than batch_size ({hp['batch_size']})"
            )
        hidden = np.full(len(unlabeled), UNKNOWN_LABEL)
        self.labeled = ImageDataset(pool.subset(labeled_idx), labels[labeled_idx], self.labeled_transform)
        self.unlabeled = ImageDataset(unlabeled, hidden, self.train_transform)
        self.val = ImageDataset(val, val_labels, self.eval_transform) if len(val_labels) else None

    def _recorded_indices(
        self, record: Record, labels: np.ndarray, separate_val: list[str] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pool indices of the validation and the labeled examples in ``split_from``'s record
        (no validation indices where the data has a validation set of its own, ``separate_val``:
        its names, which the record must list).

        Raises:
            ConfigError: naming the file and the example, for an example the data lacks or labels
                otherwise; for counts that do not fit ``num_labeled`` or ``val_size``, or a labeled
                example that is also a validation one.
        """
        hp, k = self.hparams, self.num_classes
        path = hp["split_from"]
        index = {name: i for i, name in enumerate(self.example_names("pool", np.arange(len(labels))))}

        def pool_indices(split: str) -> np.ndarray:
            found = []
            for name, label in record[split]:
                i = index.get(name)
                if i is None:
                    raise ConfigError(f"data.split_from: {path} lists {split} example {name!r}, which the data lacks")
                if label != self.label_name(labels[i]):
                    raise ConfigError(
                        f"data.split_from: {path} labels {split} example {name!r} {label!r}; "
                        f"the data labels it {self.label_name(labels[i])!r}"
                    )
                found.append(i)
            return np.asarray(found, dtype=np.int64)

        if separate_val is not None:
            if [name for name, _ in record["val"]] != separate_val:
                raise ConfigError(f"data.split_from: {path} lists other validation examples than the data's own")
            val_idx = np.zeros(0, dtype=np.int64)
        else:
            val_idx = pool_indices("val")
            if len(val_idx) != hp["val_size"]:
                raise ConfigError(
                    f"data.split_from: {path} lists {len(val_idx)} validation examples; data.val_size is "
                    f"{hp['val_size']}"
                )
        labeled_idx = np.sort(pool_indices("labeled"))
        if np.isin(labeled_idx, val_idx).any():
            raise ConfigError(f"data.split_from: {path} lists examples both as labeled and as validation")
        asked = self._labeled_indices(labels, np.setdiff1d(np.arange(len(labels)), val_idx))

        def per_class(idx: np.ndarray) -> list[int]:
            return [len(idx), *(int((labels[idx] == c).sum()) for c in range(k))]

        if per_class(labeled_idx) != per_class(asked):
            raise ConfigError(
                f"data.split_from: {path} lists {len(labeled_idx)} labeled examples, not the numbers per class "
                f"that data.num_labeled ({hp['num_labeled']}) asks for"
            )
        return val_idx, labeled_idx

    def _named(self, names: list[str], labels: np.ndarray) -> list[tuple[str, str]]:
        return [(name, self.label_name(label)) for name, label in zip(names, labels.tolist(), strict=True)]

    # -- loaders --------------------------------------------------------------------------
    def _loader(
        self, dataset: Dataset, batch_size: int, sampler: EpochSampler | None = None, streams: int = 1
    ) -> DataLoader:
        """A loader of ``dataset``, one of ``streams`` read at once (the three training streams share
        the workers ``num_workers: auto`` gives)."""
        trainer = self.trainer
        device = trainer.strategy.root_device.type if trainer is not None else "cpu"
        workers = self.hparams["num_workers"]
        if workers == "auto":
            workers = auto_workers(device, trainer.num_devices if trainer is not None else 1, streams)
        return (ResumableDataLoader if sampler is not None else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            collate_fn=collate_batch,
            num_workers=workers,
            # workers are started once, not every epoch; and they fill the queue ahead of the step
            persistent_workers=workers > 0,
            prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
            # batches in page-locked memory on a GPU run, so that Lightning's copy to the device
            # (non_blocking there) overlaps the step instead of waiting for it
            pin_memory=device == "cuda",
            # a loader's own generator keeps iterator creation off the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.shuffle_seed or 0),
        )

    def train_dataloader(self) -> dict[str, DataLoader]:
        assert self.labeled is not None and self.unlabeled is not None and self.shuffle_seed is not None
        bs = self.hparams["batch_size"]
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        num_batches = self.hparams["batches_per_epoch"] or len(self.unlabeled) // (bs * world_size)
        if num_batches < 1:
            raise ConfigError(
                f"the unlabeled set ({len(self.unlabeled)} images) is too small for {world_size} processes"
            )
        streams = {
            "labeled": (self.labeled, self._labeled_weights()),
            "unlabeled": (self.unlabeled, None),
            "unlabeled_g": (self.unlabeled, None),
        }
        return {
            name: self._loader(
                dataset,
                bs,
                EpochSampler(len(dataset), num_batches * bs, self.shuffle_seed + i, 0, rank, world_size, weights),
                streams=len(streams),
            )
            for i, (name, (dataset, weights)) in enumerate(streams.items())
        }

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val, self.hparams["eval_batch_size"]) if self.val is not None else []

    def test_dataloader(self) -> DataLoader:
        assert self.test is not None
        return self._loader(self.test, self.hparams["eval_batch_size"])

    def predict_dataloader(self) -> DataLoader:
        assert self.predict is not None
        return self._loader(self.predict, self.hparams["eval_batch_size"])

    # -- checkpointed state ---------------------------------------------------------------
    # (the position within an epoch is the training loaders' own state: ResumableDataLoader)
    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shuffle_seed = state_dict["shuffle_seed"]
