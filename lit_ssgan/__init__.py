"""lit_ssgan: semi-supervised GAN training (Salimans et al. 2016) on PyTorch Lightning."""

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
    "sigmoid_kl_with_logits",
]
__version__ = "0.1.0"
