"""lit_ssgan: semi-supervised GAN training (Salimans et al. 2016) on PyTorch Lightning.

Importing the package connects to nothing: albumentations, which ``lit_ssgan.data`` imports, asks
PyPI for a newer version of itself when first imported unless ``NO_ALBUMENTATIONS_UPDATE`` is set,
so the package sets it to ``1`` first, where the user has not set it. It changes no warning filter
(the ``lit-ssgan`` command sets its own: :mod:`lit_ssgan.warning_filters`)."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lit_ssgan._version import __version__
from lit_ssgan.data import (
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SemiSupervisedDataModule,
)
from lit_ssgan.losses import sigmoid_kl_with_logits
from lit_ssgan.module import SemiSupervisedGAN

__all__ = [
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SemiSupervisedDataModule",
    "SemiSupervisedGAN",
    "__version__",
    "sigmoid_kl_with_logits",
]
