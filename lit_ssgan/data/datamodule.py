"""The base data module: a labeled pool and a test set in, labeled / unlabeled / validation
loaders out."""

from __future__ import annotations

from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_ssgan.data.datasets import ImageDataset, ImageRows, Images, as_rows
from lit_ssgan.data.loaders import TRAINING_STREAMS, check_num_workers, make_loader, training_loaders
from lit_ssgan.data.record import Record, make_record, read_record
from lit_ssgan.data.run_record import check_same_run, run_state
from lit_ssgan.data.split import (
    Split,
    check_balance_options,
    check_labeled_options,
    class_name,
    draw_split,
    labeled_weights,
    replay_split,
)
from lit_ssgan.errors import ConfigError, check_non_negative, check_positive

UNKNOWN_LABEL = -1


class SemiSupervisedDataModule(LightningDataModule):
    """Splits a labeled training pool into a few labeled examples, an unlabeled set and a
    validation set, and serves them for semi-supervised GAN training.

    From the pool, ``val_size`` examples (drawn with ``data_seed``) are kept for validation;
    from the rest, ``num_labeled`` examples balanced across classes (also drawn with
    ``data_seed``) keep their labels; the unlabeled set is the rest of the pool, with the
    labels hidden. ``train_dataloader`` gives a dict of three loaders of ``batch_size``:
    ``labeled`` (the labeled set cycled, each pass reshuffled; or, with ``balance_ratio``, drawn
    with replacement by annealed class weights), ``unlabeled`` (for the discriminator) and
    ``unlabeled_g`` (an independent order, for the generator's feature matching); of those the
    trainer's module reads, where it says (its ``training_streams``: the labels-only twin reads
    ``labeled`` alone), so that no batch is loaded for nothing. One epoch is
    one pass over the unlabeled set, unless ``batches_per_epoch``. Under DDP each process
    draws its own share of every epoch (together one pass) and its own labeled batches.

    Subclasses set ``num_classes`` and ``image_shape`` (before calling this ``__init__``, which
    checks the options against them) and implement :meth:`load_train_pool` and
    :meth:`load_test_set`; where their data comes in other parts, :meth:`load_val_set`,
    :meth:`load_unlabeled` and :meth:`predict_dataset`. The split itself is this class's alone
    (:mod:`lit_ssgan.data.split`), and it copies no image: its parts are rows of the images the
    subclass gave (:class:`ImageRows`), gathered a batch at a time.

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
        self.shuffle_seed: int | None = None  # drawn at setup from the global RNG (seed_everything fixes it)
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
        check_num_workers(hp["num_workers"])
        check_labeled_options(hp["num_labeled"], k)
        check_balance_options(hp["balance_ratio"], hp["balance_weights"], hp["final_balance_weights"], k)

    def label_name(self, label: float) -> str:
        """A label as a run's record of its examples writes it: the class name, or the number."""
        return f"{label:g}" if self.numeric_labels else class_name(self.class_names, int(label))

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

    def check_fit_set(self) -> None:
        """Refuses, cheaply (reading no image), options that ``fit`` would fail on at setup; called
        before a fit starts (and before a draws study's first draw). By default: nothing to check."""

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

    def _split(self) -> None:
        """The one split of every data module (:mod:`lit_ssgan.data.split`): validation examples
        (``val_size`` of the pool, drawn with ``data_seed``, unless :meth:`load_val_set` gives a set of
        its own), the labeled examples among the rest, or those of ``split_from``'s record; and the
        unlabeled set: :meth:`load_unlabeled`'s images, then the pool's other examples (with the
        labeled ones if ``unlabeled_includes_labeled``), then the validation images if
        ``unlabeled_includes_val``."""
        hp = self.hparams
        images, labels = self._checked(*self.load_train_pool(), "training pool")
        pool = as_rows(images)
        separate_val = self.load_val_set()
        own_val_names = None if separate_val is None else self.example_names("val", np.arange(len(separate_val[1])))
        split = self._pool_split(labels, own_val_names)
        if separate_val is not None and own_val_names is not None:
            val_images, val_labels = self._checked(*separate_val, "validation set")
            val, val_names = as_rows(val_images), own_val_names
        else:
            val, val_labels = pool.subset(split.val), labels[split.val]
            val_names = self.example_names("pool", split.val)
        labeled_names = self.example_names("pool", split.labeled)
        named = {"labeled": (labeled_names, labels[split.labeled]), "val": (val_names, val_labels)}
        self.labeled_examples = make_record(named, self.label_name)
        extra = self.load_unlabeled()
        parts = [] if extra is None else [as_rows(extra)]
        parts.append(pool.subset(split.unlabeled(hp["unlabeled_includes_labeled"])))
        if hp["unlabeled_includes_val"]:
            parts.append(val)
        unlabeled = ImageRows.concat(parts)
        if len(unlabeled) < hp["batch_size"]:
            raise ConfigError(
                f"the unlabeled set ({len(unlabeled)} images) is smaller than batch_size ({hp['batch_size']})"
            )
        hidden = np.full(len(unlabeled), UNKNOWN_LABEL)
        self.labeled = ImageDataset(pool.subset(split.labeled), labels[split.labeled], self.labeled_transform)
        self.unlabeled = ImageDataset(unlabeled, hidden, self.train_transform)
        self.val = ImageDataset(val, val_labels, self.eval_transform) if len(val_labels) else None

    def _pool_split(self, labels: np.ndarray, own_val: list[str] | None) -> Split:
        """``data_seed``'s split of the pool, or ``split_from``'s (``own_val``: :meth:`load_val_set`'s names)."""
        hp, record = self.hparams, self.split_record
        options = {"seed": hp["data_seed"], "val_size": hp["val_size"], "num_labeled": hp["num_labeled"]}
        options |= {"num_classes": self.num_classes, "class_names": self.class_names}
        if record is None:
            return draw_split(labels, has_own_val=own_val is not None, **options)
        names, source = self.example_names("pool", np.arange(len(labels))), hp["split_from"]
        return replay_split(
            record, labels, pool_names=names, label_name=self.label_name, own_val=own_val, source=source, **options
        )

    # -- loaders --------------------------------------------------------------------------
    def _loader_options(self) -> dict[str, Any]:
        """:func:`~lit_ssgan.data.loaders.make_loader`'s options in this run: the workers asked for,
        the trainer's device and its processes on this machine (no trainer: one, on the CPU)."""
        trainer = self.trainer
        device = trainer.strategy.root_device.type if trainer is not None else "cpu"
        processes = trainer.num_devices if trainer is not None else 1
        return {"num_workers": self.hparams["num_workers"], "device": device, "processes_per_node": processes}

    def train_dataloader(self) -> dict[str, DataLoader]:
        assert self.labeled is not None and self.unlabeled is not None and self.shuffle_seed is not None
        hp, trainer = self.hparams, self.trainer
        balance = (hp[name] for name in ("balance_ratio", "balance_weights", "final_balance_weights"))
        weights = labeled_weights(self.labeled.labels.numpy(), self.num_classes, *balance)
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        epoch = {"batches_per_epoch": hp["batches_per_epoch"], "rank": rank, "world_size": world_size}
        options = self._loader_options()
        module = getattr(trainer, "lightning_module", None)  # None: no trainer, or none attached yet
        streams = getattr(module, "training_streams", TRAINING_STREAMS)
        return training_loaders(
            self.labeled,
            self.unlabeled,
            weights,
            hp["batch_size"],
            self.shuffle_seed,
            **epoch,
            streams=streams,
            **options,
        )

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        options = self._loader_options()
        return make_loader(dataset, self.hparams["eval_batch_size"], seed=self.shuffle_seed or 0, **options)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.val) if self.val is not None else []

    def test_dataloader(self) -> DataLoader:
        assert self.test is not None
        return self._eval_loader(self.test)

    def predict_dataloader(self) -> DataLoader:
        assert self.predict is not None
        return self._eval_loader(self.predict)

    # -- checkpointed (the place within an epoch is the loaders' own: ResumableDataLoader) -------
    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.shuffle_seed, "run": run_state(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_same_run(self, state_dict.get("run"))  # fit: refuses data other than the run's, before any step
        self.shuffle_seed = state_dict["shuffle_seed"]
