"""Data: datasets gathered a batch at a time (from memory or a decode cache), a resumable sampler
and the semi-supervised data modules."""

from lit_ssgan.data.datamodule import SemiSupervisedDataModule
from lit_ssgan.data.datasets import ImageDataset, read_idx
from lit_ssgan.data.digits import DigitsDataModule
from lit_ssgan.data.image_folder import ImageFolderDataModule
from lit_ssgan.data.loaders import ResumableDataLoader
from lit_ssgan.data.mnist import FashionMNISTDataModule, MNISTDataModule
from lit_ssgan.data.samplers import EpochSampler

__all__ = [
    "DigitsDataModule",
    "EpochSampler",
    "FashionMNISTDataModule",
    "ImageDataset",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SemiSupervisedDataModule",
    "ResumableDataLoader",
    "read_idx",
]
