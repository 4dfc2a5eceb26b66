"""The module a lit_ssgan callback serves, typed, so that the type checker sees what each callback
reads of it (a renamed attribute fails ``mypy``, not a run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch import LightningModule

if TYPE_CHECKING:
    from lit_ssgan.module import SemiSupervisedGAN


def served_gan(pl_module: LightningModule, callback: object) -> SemiSupervisedGAN:
    """``pl_module`` as the :class:`~lit_ssgan.SemiSupervisedGAN` it must be.

    Raises:
        TypeError: naming the callback, for any other module.
    """
    from lit_ssgan.module import SemiSupervisedGAN  # here, not above: the module imports the callbacks

    if not isinstance(pl_module, SemiSupervisedGAN):
        raise TypeError(f"{type(callback).__name__} serves a SemiSupervisedGAN, not a {type(pl_module).__name__}")
    return pl_module
