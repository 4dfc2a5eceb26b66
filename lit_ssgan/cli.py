"""The ``lit-ssgan`` command: LightningCLI with the data's shape linked into the networks."""

from __future__ import annotations

import sys
import warnings
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from lit_ssgan.checkpoint import SafeCheckpointIO, find_last_checkpoint, load_checkpoint_file
from lit_ssgan.data import SemiSupervisedDataModule
from lit_ssgan.module import DivergenceError, SemiSupervisedGAN


class SemiSupervisedCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for :class:`SemiSupervisedGAN`.

    ``--test_after_fit true`` tests the trained model (best checkpoint if one monitors a
    metric, else the final weights) when ``fit`` ends. ``--ckpt_path last`` picks the most
    recent ``last.ckpt`` under ``trainer.default_root_dir``, whichever run version wrote it.
    Checkpoints are written atomically and loaded safely (:class:`SafeCheckpointIO`).
    """

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint here, before the Trainer does, for its hyperparameters:
        # check it first, so that a corrupt or unsafe file gets an error naming it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path != "last":
            load_checkpoint_file(ckpt_path)
        super()._parse_ckpt_path()

    def _resolve_last_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        root = self.trainer.default_root_dir
        config["ckpt_path"] = found = find_last_checkpoint(root)
        if found is None and self.subcommand != "fit":  # never evaluate untrained weights by mistake
            raise FileNotFoundError(f"--ckpt_path last: no last.ckpt under {root}")
        if found is None:
            rank_zero_warn(f"--ckpt_path last: no last.ckpt under {root} yet; starting from scratch")

    before_fit = before_validate = before_test = before_predict = _resolve_last_checkpoint

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
    try:
        cli()
    except DivergenceError as err:
        sys.exit(f"lit-ssgan: {err}")  # exit status 1, the message on stderr
