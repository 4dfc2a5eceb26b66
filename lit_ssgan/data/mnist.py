"""MNIST and Fashion-MNIST from a directory of the standard gzipped IDX files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lit_ssgan.data.datamodule import SemiSupervisedDataModule
from lit_ssgan.data.datasets import download_files, read_idx
from lit_ssgan.errors import MissingFileError

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


class MNISTDataModule(SemiSupervisedDataModule):
    """MNIST: 60 000 training and 10 000 test digits, 28×28 grey.

    Args:
        data_dir: directory holding the four IDX files, gzipped (as distributed) or not.
        download: download missing files from the official mirrors (md5-checked) first.
        **kwargs: see :class:`SemiSupervisedDataModule`.
    """

    num_classes = 10
    image_shape = (1, 28, 28)
    #: file name → md5 of the files as distributed
    files = {
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    }
    mirrors: tuple[str, ...] = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")

    def __init__(self, data_dir: str = "data/mnist", download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir)
        self.download = download

    def prepare_data(self) -> None:
        if self.download:
            download_files(self.data_dir, self.files, self.mirrors)

    def _path(self, name: str) -> Path:
        for candidate in (self.data_dir / name, self.data_dir / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
        raise MissingFileError(
            f"{self.data_dir} has no {name} (nor its gunzipped form); it needs {', '.join(self.files)}"
            + ("" if self.download else " — or pass --data.download true")
        )

    def _load(self, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self._path(images), self._path(labels)  # name a missing file first
        return read_idx(image_path)[..., None], read_idx(label_path).astype(np.int64)

    def load_train_pool(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load(TRAIN_IMAGES, TRAIN_LABELS)

    def load_test_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load(TEST_IMAGES, TEST_LABELS)

    def check_test_set(self, needed_by: str) -> None:
        if not self.download:  # downloaded in prepare_data, before the test set is read
            for name in (TEST_IMAGES, TEST_LABELS):
                self._path(name)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: Zalando's 28×28 grey article images, 10 classes, MNIST's file layout."""

    files = {
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    }
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

    def __init__(self, data_dir: str = "data/fashion_mnist", download: bool = False, **kwargs: Any) -> None:
        super().__init__(data_dir, download, **kwargs)
