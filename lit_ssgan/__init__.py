"""lit_ssgan: semi-supervised GAN training (Salimans et al. 2016) on PyTorch Lightning.

Importing the package imports none of its parts: each name below is loaded from its module when
first used (``lit_ssgan.SemiSupervisedGAN`` imports :mod:`lit_ssgan.module`), so that the
``lit-ssgan`` command starts in a moment and a Ctrl-C during its seconds of importing torch and
Lightning ends it in one line (:mod:`lit_ssgan.__main__`).

Importing the package connects to nothing: albumentations, which ``lit_ssgan.data`` imports, asks
PyPI for a newer version of itself when first imported unless ``NO_ALBUMENTATIONS_UPDATE`` is set,
so the package sets it to ``1`` first, where the user has not set it. It changes no warning filter
(the ``lit-ssgan`` command sets its own: :mod:`lit_ssgan.warning_filters`)."""

import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lit_ssgan._version import __version__

if TYPE_CHECKING:
    from lit_ssgan.data import (
        DigitsDataModule,
        FashionMNISTDataModule,
        ImageFolderDataModule,
        MNISTDataModule,
        SemiSupervisedDataModule,
    )
    from lit_ssgan.losses import sigmoid_kl_with_logits
    from lit_ssgan.module import SemiSupervisedGAN

#: each public name and the module it is loaded from
_HOMES = {
    "DigitsDataModule": "lit_ssgan.data",
    "FashionMNISTDataModule": "lit_ssgan.data",
    "ImageFolderDataModule": "lit_ssgan.data",
    "MNISTDataModule": "lit_ssgan.data",
    "SemiSupervisedDataModule": "lit_ssgan.data",
    "SemiSupervisedGAN": "lit_ssgan.module",
    "sigmoid_kl_with_logits": "lit_ssgan.losses",
}

# written out, not derived from _HOMES: linters and type checkers read __all__ statically
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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'lit_ssgan' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
