"""The base data module: a labeled pool and a test set in, labeled / unlabeled / validation
loaders out."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_ssgan.data.datasets import ImageDataset, collate_batch
from lit_ssgan.data.loaders import ResumableDataLoader
from lit_ssgan.data.samplers import EpochSampler
from lit_ssgan.errors import ConfigError

UNKNOWN_LABEL = -1


class SemiSupervisedDataModule(LightningDataModule):
    """Splits a labeled training pool into a few labeled examples, an unlabeled set and a
    validation set, and serves them for semi-supervised GAN training.

    From the pool, ``val_size`` examples (drawn with ``data_seed``) are kept for validation;
    from the rest, ``num_labeled`` examples balanced across classes (also drawn with
    ``data_seed``) keep their labels; the unlabeled set is the rest of the pool, with the
    labels hidden. ``train_dataloader`` gives a dict of three loaders of ``batch_size``:
    ``labeled`` (the labeled set cycled, each pass reshuffled), ``unlabeled`` (for the
    discriminator) and ``unlabeled_g`` (an independent order, for the generator's feature
    matching). One epoch is one pass over the unlabeled set, unless ``batches_per_epoch``.

    Subclasses set ``num_classes`` and ``image_shape`` and implement :meth:`load_train_pool`
    and :meth:`load_test_set`.

    Args:
        num_labeled: labeled training examples, split evenly across classes.
        val_size: examples kept out of training for validation (0: no validation).
        batch_size: size of each of the labeled, unlabeled and generated batches.
        eval_batch_size: batch size for validation, test and prediction.
        unlabeled_includes_labeled: also serve the labeled examples, unlabeled.
        unlabeled_includes_val: also serve the validation images, unlabeled; their labels
            still serve validation only.
        batches_per_epoch: epoch length; default one pass over the unlabeled set.
        data_seed: seed of the validation split and of the choice of labeled examples.
        train_transforms: albumentations transforms for training images (uint8 HWC).
        eval_transforms: albumentations transforms for validation, test and prediction images.
        num_workers: DataLoader workers; 0 is fastest for in-memory data on a few cores.
    """

    num_classes: int
    image_shape: tuple[int, int, int]

    def __init__(
        self,
        num_labeled: int = 100,
        val_size: int = 0,
        batch_size: int = 100,
        eval_batch_size: int = 500,
        unlabeled_includes_labeled: bool = True,
        unlabeled_includes_val: bool = False,
        batches_per_epoch: int | None = None,
        data_seed: int = 0,
        train_transforms: list[A.BasicTransform] | None = None,
        eval_transforms: list[A.BasicTransform] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name in ("batch_size", "eval_batch_size"):
            if self.hparams[name] < 1:
                raise ConfigError(f"{name} must be positive, got {self.hparams[name]}")
        if val_size < 0:
            raise ConfigError(f"val_size must be 0 or more, got {val_size}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ConfigError(f"batches_per_epoch must be positive, got {batches_per_epoch}")
        self.train_transform = A.Compose(train_transforms) if train_transforms else None
        self.eval_transform = A.Compose(eval_transforms) if eval_transforms else None
        self.labeled: ImageDataset | None = None
        self.unlabeled: ImageDataset | None = None
        self.val: ImageDataset | None = None
        self.test: ImageDataset | None = None
        # Drawn from the global RNG at setup (so `seed_everything` fixes it) and checkpointed.
        self.shuffle_seed: int | None = None

    # -- what a subclass provides ---------------------------------------------------------
    def load_train_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """The labeled training pool: ``(N, H, W, C)`` uint8 images and ``(N,)`` labels."""
        raise NotImplementedError

    def load_test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The test set: ``(N, H, W, C)`` uint8 images and ``(N,)`` labels."""
        raise NotImplementedError

    # -- splitting ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.labeled is None:
            self._split(*self._checked(*self.load_train_pool(), "training pool"))
        if stage in ("test", "predict") and self.test is None:
            images, labels = self._checked(*self.load_test_set(), "test set")
            self.test = ImageDataset(images, labels, self.eval_transform)
        if self.shuffle_seed is None:
            self.shuffle_seed = int(torch.randint(0, 2**62, ()).item())

    def _checked(self, images: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        c, h, w = self.image_shape
        if images.shape[1:] != (h, w, c):
            raise ConfigError(f"{what}: expected images of shape (N, {h}, {w}, {c}), got {images.shape}")
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise ConfigError(
                f"{what}: labels must lie in [0, {self.num_classes}), found {bad.size} outside, "
                f"e.g. {sorted(set(bad.tolist()))[:5]}"
            )
        return images, labels

    def _split(self, images: np.ndarray, labels: np.ndarray) -> None:
        hp, k = self.hparams, self.num_classes
        if hp["val_size"] >= len(labels):
            raise ConfigError(f"val_size ({hp['val_size']}) must be smaller than the training pool ({len(labels)})")
        order = np.random.default_rng(hp["data_seed"]).permutation(len(labels))
        val_idx, train_idx = order[: hp["val_size"]], order[hp["val_size"] :]
        if not k <= hp["num_labeled"] <= len(train_idx):
            raise ConfigError(
                f"num_labeled must be between the number of classes ({k}) and the training examples "
                f"left after the validation split ({len(train_idx)}), got {hp['num_labeled']}"
            )
        per_class = []
        for c in range(k):
            wanted = hp["num_labeled"] // k + int(c < hp["num_labeled"] % k)
            of_class = train_idx[labels[train_idx] == c]
            if len(of_class) < wanted:
                raise ConfigError(
                    f"num_labeled={hp['num_labeled']} needs {wanted} examples of class {c}; there are {len(of_class)}"
                )
            per_class.append(of_class[:wanted])
        labeled_idx = np.sort(np.concatenate(per_class))
        unlabeled_idx = train_idx if hp["unlabeled_includes_labeled"] else np.setdiff1d(train_idx, labeled_idx)
        if hp["unlabeled_includes_val"]:
            unlabeled_idx = np.concatenate([unlabeled_idx, val_idx])
        if len(unlabeled_idx) < hp["batch_size"]:
            raise ConfigError(
                f"the unlabeled set ({len(unlabeled_idx)} images) is smaller than batch_size ({hp['batch_size']})"
            )
        hidden = np.full(len(unlabeled_idx), UNKNOWN_LABEL)
        self.labeled = ImageDataset(images[labeled_idx], labels[labeled_idx], self.train_transform)
        self.unlabeled = ImageDataset(images[unlabeled_idx], hidden, self.train_transform)
        self.val = ImageDataset(images[val_idx], labels[val_idx], self.eval_transform) if len(val_idx) else None

    # -- loaders --------------------------------------------------------------------------
    def _loader(self, dataset: ImageDataset, batch_size: int, sampler: EpochSampler | None = None) -> DataLoader:
        workers = self.hparams["num_workers"]
        return (ResumableDataLoader if sampler is not None else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            collate_fn=collate_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            # a loader's own generator keeps iterator creation off the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.shuffle_seed or 0),
        )

    def train_dataloader(self) -> dict[str, DataLoader]:
        assert self.labeled is not None and self.unlabeled is not None and self.shuffle_seed is not None
        bs = self.hparams["batch_size"]
        num_batches = self.hparams["batches_per_epoch"] or len(self.unlabeled) // bs
        datasets = {"labeled": self.labeled, "unlabeled": self.unlabeled, "unlabeled_g": self.unlabeled}
        return {
            name: self._loader(ds, bs, EpochSampler(len(ds), num_batches * bs, self.shuffle_seed + i))
            for i, (name, ds) in enumerate(datasets.items())
        }

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val, self.hparams["eval_batch_size"]) if self.val is not None else []

    def test_dataloader(self) -> DataLoader:
        assert self.test is not None
        return self._loader(self.test, self.hparams["eval_batch_size"])

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # -- checkpointed state ---------------------------------------------------------------
    # (the position within an epoch is the training loaders' own state: ResumableDataLoader)
    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shuffle_seed = state_dict["shuffle_seed"]
