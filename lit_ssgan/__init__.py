"""lit_ssgan: semi-supervised GAN training (Salimans et al. 2016) on PyTorch Lightning."""

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
