"""What the LightningModule expects of a discriminator and a generator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lit_ssgan.errors import ConfigError

#: layers that need more than one image a batch to train
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class DiscriminatorOutput(NamedTuple):
    """``logits``: ``(N, K)`` class logits, or ``(N, K + 1)`` with an explicit fake logit last;
    ``features``: ``(N, F)`` the layer used for feature matching."""

    logits: Tensor
    features: Tensor


class Discriminator(nn.Module):
    """Base of discriminators: images ``(N, C, H, W)`` in [0, 1] to a :class:`DiscriminatorOutput`.

    Args:
        num_classes: K, the number of real classes.
        image_shape: ``(C, H, W)`` of the images.
        explicit_fake: add a (K+1)-th output for the fake class (tefla) instead of the
            implicit fake logit 0 (OpenAI).
        regression: two outputs instead: a regression value and a real/fake logit (tefla's
            ``classification=False``); ``num_classes`` is then the number of grades.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int],
        explicit_fake: bool = False,
        regression: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        _check_image_shape(image_shape)
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.explicit_fake = explicit_fake
        self.regression = regression

    @property
    def num_outputs(self) -> int:
        return 2 if self.regression else self.num_classes + int(self.explicit_fake)


class Generator(nn.Module):
    """Base of generators: latent codes ``(N, latent_dim)`` to images ``(N, C, H, W)`` in [0, 1].

    Args:
        image_shape: ``(C, H, W)`` of the images to generate.
        latent_dim: size of the latent code z ~ U(0, 1)^latent_dim.
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 100) -> None:
        super().__init__()
        _check_image_shape(image_shape)
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be positive, got {latent_dim}")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``(n, latent_dim)`` codes, uniform on [0, 1) as in the paper's code."""
        device = next(self.parameters()).device
        return torch.rand(n, self.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def sample_images(self, n: int, seed: int = 0) -> Tensor:
        """``(n, C, H, W)`` images from fixed latent codes (drawn with ``seed``, whatever the global
        RNG), in eval mode (batch norm uses its running statistics)."""
        z = torch.rand(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        with evaluating(self):
            return self(z.to(next(self.parameters()).device))


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Puts ``modules`` in eval mode inside the block, and back in the mode each was in after it,
    also when the block raises.

    Example:
        >>> net = nn.Dropout()
        >>> with evaluating(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def check_pair(discriminator: Discriminator, generator: Generator) -> None:
    """Refuses a discriminator and a generator that cannot be trained together.

    Raises:
        ConfigError: if the generator makes images of another shape than the discriminator takes.
    """
    if discriminator.image_shape != generator.image_shape:
        raise ConfigError(
            f"image_shape differs: the discriminator takes {discriminator.image_shape} but the generator "
            f"makes {generator.image_shape}"
        )


def built_for(discriminator: Discriminator, datamodule: Any = None) -> dict[str, Any]:
    """What the networks were built for, and the data module feeding them (if any): a checkpoint's
    ``data`` record."""
    return {
        "datamodule": type(datamodule).__name__ if datamodule is not None else None,
        "image_shape": discriminator.image_shape,
        "num_classes": discriminator.num_classes,
        "class_names": getattr(datamodule, "class_names", None),
        "classification": not discriminator.regression,
    }


def check_data(discriminator: Discriminator, generator: Generator, datamodule: Any, stage: str) -> None:
    """Refuses, before any step, data the networks were not built for: another image shape or
    number of classes, or (to fit) batches of one image with batch norm.

    Raises:
        ConfigError: naming the data's value and the networks'.
    """
    ours_all = built_for(discriminator)
    for name in ("image_shape", "num_classes"):
        ours, theirs = ours_all[name], getattr(datamodule, name, None)
        if theirs is not None and (tuple(theirs) if name == "image_shape" else theirs) != ours:
            raise ConfigError(f"the data has {name} {theirs} but the discriminator was built for {ours}")
    if stage == "fit" and getattr(datamodule, "hparams", {}).get("batch_size") == 1:
        for net, network in (("discriminator", discriminator), ("generator", generator)):
            if any(isinstance(m, BATCH_NORMS) for m in network.modules()):
                raise ConfigError(f"data.batch_size 1: the {net}'s batch norm needs batches of 2 or more images")


def _check_image_shape(image_shape: tuple[int, int, int]) -> None:
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise ConfigError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
