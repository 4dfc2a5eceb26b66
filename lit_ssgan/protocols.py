"""What lit_ssgan's callbacks read of the LightningModule they serve, as a typed protocol: the
callbacks depend on it, not on :class:`~lit_ssgan.SemiSupervisedGAN`, and the type checker sees
each read (a renamed attribute fails ``mypy``, not a run)."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from lit_ssgan.losses import Heads
from lit_ssgan.models.base import Discriminator, Generator

#: the two networks a GAN trains, each with its optimizer
Network = Literal["discriminator", "generator"]


@runtime_checkable
class GANModule(Protocol):
    """A LightningModule training a semi-supervised GAN, as the callbacks see it;
    :class:`~lit_ssgan.SemiSupervisedGAN` is one. The callbacks read these members and no others
    (the LightningModule's own, such as ``device``, aside)."""

    discriminator: Discriminator
    """Images to ``(logits, features)``; its ``regression`` says the task."""
    generator: Generator
    """Latent codes to images (``sample_images`` draws the grids)."""
    val_metrics: MetricCollection
    """The validation scores, named ``val/<name>``, updated by each validation step."""

    def network_of(self, optimizer: torch.optim.Optimizer) -> Network:
        """Which network ``optimizer`` (one of ``trainer.optimizers``, as hooks receive it) steps."""
        ...

    def heads(self, logits: Tensor) -> Heads:
        """The prediction head and the real/fake logit of the discriminator's ``logits``."""
        ...


def served_gan(pl_module: object, callback: object) -> GANModule:
    """``pl_module`` as the :class:`GANModule` ``callback`` serves.

    Raises:
        TypeError: naming the callback and the members the module lacks, for any other module.

    Example:
        >>> try:
        ...     served_gan(object(), "a callback")
        ... except TypeError as err:
        ...     print(str(err).split(": ")[-1])
        it has no discriminator, generator, heads, network_of, val_metrics
    """
    if not isinstance(pl_module, GANModule):
        missing = ", ".join(name for name in _members(GANModule) if not hasattr(pl_module, name))
        raise TypeError(
            f"{type(callback).__name__} serves a GAN module (lit_ssgan.protocols.GANModule, such as "
            f"SemiSupervisedGAN), not a {type(pl_module).__name__}: it has no {missing}"
        )
    return pl_module


def _members(protocol: type) -> list[str]:
    """The attributes and methods ``protocol`` declares (not those of ``Protocol`` itself)."""
    methods = (name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_"))
    return sorted({*getattr(protocol, "__annotations__", {}), *methods})
