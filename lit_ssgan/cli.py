"""The ``lit-ssgan`` command: LightningCLI with the data's shape linked into the networks."""

from __future__ import annotations

import warnings

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_ssgan.data import SemiSupervisedDataModule
from lit_ssgan.module import SemiSupervisedGAN


class SemiSupervisedCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for :class:`SemiSupervisedGAN`.

    ``--test_after_fit true`` tests the trained model (best checkpoint if one monitors a
    metric, else the final weights) when ``fit`` ends.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for target in ("discriminator", "generator"):
            parser.link_arguments("data.image_shape", f"model.{target}.init_args.image_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.discriminator.init_args.num_classes", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False, help="Run the test set when fit ends.")

    def after_fit(self) -> None:
        if not self.config_init[self.subcommand].get("test_after_fit"):
            return
        callback = self.trainer.checkpoint_callback
        best = callback.best_model_path if isinstance(callback, ModelCheckpoint) and callback.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def cli(args: list[str] | None = None, run: bool = True) -> SemiSupervisedCLI:
    """Runs the command with ``args`` (default: the command line) and returns the finished CLI.

    With ``run=False``, ``args`` name no subcommand and the CLI only builds ``model``,
    ``datamodule`` and ``trainer`` from them (the benchmarks drive the Trainer themselves).
    """
    return SemiSupervisedCLI(
        SemiSupervisedGAN,
        SemiSupervisedDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main() -> None:
    """The ``lit-ssgan`` console command (returns nothing: a console script prints what it returns)."""
    # torch's deprecation of an API that Lightning itself calls: nothing a user can act on
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\).*", DeprecationWarning)
    cli()
