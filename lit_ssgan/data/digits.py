"""scikit-learn's bundled 8×8 handwritten digits: 1 797 images, no download — the demo."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from lit_ssgan.data.datamodule import SemiSupervisedDataModule
from lit_ssgan.errors import ConfigError


class DigitsDataModule(SemiSupervisedDataModule):
    """The UCI optical digits as shipped with scikit-learn, 8×8 grey, 10 classes.

    There is no official test split: ``test_size`` images are held out with a fixed seed,
    the same whatever ``data_seed`` is, and the rest is the training pool.

    Args:
        test_size: images held out as the test set.
        num_labeled: labeled training examples (5 per class), or a count for each class.
        val_size: images kept out of training for validation.
        batch_size: size of each labeled, unlabeled and generated batch.
        **kwargs: see :class:`SemiSupervisedDataModule`.
    """

    num_classes = 10
    image_shape = (1, 8, 8)

    def __init__(
        self,
        test_size: int = 500,
        num_labeled: int | list[int] = 50,
        val_size: int = 200,
        batch_size: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_labeled=num_labeled, val_size=val_size, batch_size=batch_size, **kwargs)
        self.test_size = test_size

    @cached_property
    def _split_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0–16 ink counts to 0–255 bytes, the range the other datasets use
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
        if not 0 < self.test_size < len(images):
            raise ConfigError(f"test_size must be between 1 and {len(images) - 1}, got {self.test_size}")
        order = np.random.default_rng(12345).permutation(len(images))
        return images, digits.target.astype(np.int64), order

    def load_train_pool(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels, order = self._split_indices
        keep = order[self.test_size :]
        return images[keep], labels[keep]

    def example_names(self, part: str, indices: np.ndarray) -> list[str]:
        """Indices into scikit-learn's ``load_digits()``."""
        return [str(int(i)) for i in self._split_indices[2][self.test_size :][indices]]

    def load_test_set(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels, order = self._split_indices
        keep = order[: self.test_size]
        return images[keep], labels[keep]
