"""The ``lit-ssgan`` command: Lightning's ``fit``, ``validate``, ``test`` and ``predict``
(LightningCLI, with the data's shape linked into the networks) and the subcommands of
:data:`SUBCOMMANDS` (``export``), each a function whose parameters are its options."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from lit_ssgan import warning_filters
from lit_ssgan.callbacks import EpochLine, LabeledExamples, Preemption, TimeLeft
from lit_ssgan.callbacks.reports import PredictionsCSV, TestReport
from lit_ssgan.callbacks.run_folder import RunFolderCleanup, claim_run_folder
from lit_ssgan.checkpoint import SafeCheckpointIO, find_last_checkpoint, load_checkpoint_file
from lit_ssgan.data import SemiSupervisedDataModule
from lit_ssgan.draws import draws
from lit_ssgan.errors import (
    INTERRUPTED_EXIT_STATUS,
    TRACEBACK_VARIABLE,
    BadFileError,
    ConfigError,
    MissingFileError,
    exit_on_user_error,
    user_error,
)
from lit_ssgan.export import export
from lit_ssgan.files import writing
from lit_ssgan.module import SemiSupervisedGAN
from lit_ssgan.outputs import check_output_file, check_output_folder
from lit_ssgan.precision import fast_cpu_precision
from lit_ssgan.training import check_weights_from, from_flat_options


class SemiSupervisedCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for :class:`SemiSupervisedGAN`.

    ``--test_after_fit true`` tests the trained model (best checkpoint if one monitors a
    metric, else the final weights) when ``fit`` ends. ``--ckpt_path last`` picks the most
    recent ``last.ckpt`` under ``trainer.default_root_dir``, whichever run version wrote it.
    Checkpoints are written atomically and loaded safely (:class:`SafeCheckpointIO`). Every
    Trainer it builds has the run-level callbacks of :data:`RUN_CALLBACKS`, once each. Each run
    takes a run folder of its own (:func:`~lit_ssgan.callbacks.run_folder.claim_run_folder`), after
    the checks that can refuse it; one that fails before it has done anything leaves none
    (:class:`~lit_ssgan.callbacks.run_folder.RunFolderCleanup`).
    """

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config_init[self.subcommand] if self.subcommand else {}
        callbacks: list = trainer.callbacks  # type: ignore[attr-defined]
        missing = [kind() for kind in RUN_CALLBACKS if not any(isinstance(c, kind) for c in callbacks)]
        # before the checkpoint callbacks, which Lightning keeps last (they see what the others did)
        first_checkpoint = next((i for i, c in enumerate(callbacks) if isinstance(c, Checkpoint)), len(callbacks))
        callbacks[first_checkpoint:first_checkpoint] = missing
        if self.subcommand == "fit" and config.get("epoch_line", True):  # before the checkpoints: they save its counts
            callbacks.insert(first_checkpoint + len(missing), EpochLine())
        if self.subcommand == "fit" and config.get("time_left", True):
            callbacks.append(TimeLeft())
        if self.subcommand == "test" or (self.subcommand == "fit" and config.get("test_after_fit")):
            callbacks.append(TestReport())
        if self.subcommand == "predict":
            callbacks.append(PredictionsCSV(config.get("predictions_csv")))
        if self.subcommand:  # after the callbacks that remove their partial files when a run fails
            root = trainer.default_root_dir
            callbacks.append(RunFolderCleanup(root_existed=Path(root).exists(), root=root))
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        given = sys.argv[1:] if args is None else [str(a) for a in args] if isinstance(args, list) else []
        _check_config_files(given)
        # the user's own --trainer.precision is kept whatever the CPU (see before_instantiate_classes)
        self._precision_given = any(a == "--trainer.precision" or a.startswith("--trainer.precision=") for a in given)
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint next, before the Trainer does, for its hyperparameters:
        # check it first, so that a missing, corrupt or unsafe file gets an error naming it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        # what the checkpoint records of its data (class names, for test and predict); read once
        self._ckpt_data = None
        if ckpt_path == "last":  # test and predict need the class names it records; fit reads the folders
            root = self.config[subcommand]["trainer"].get("default_root_dir") or "."
            ckpt_path = find_last_checkpoint(root) if subcommand != "fit" else None
        if ckpt_path:
            loaded = load_checkpoint_file(ckpt_path)
            self._ckpt_data = loaded.get("data") if isinstance(loaded, dict) else None
            if isinstance(loaded, dict) and from_flat_options(loaded.get("hyper_parameters") or {}) is not None:
                raise ConfigError(
                    f"--ckpt_path {ckpt_path}: written by lit_ssgan 0.1, whose model options were flat (0.2 builds the "
                    "model from parts: README, Upgrading from 0.1). Resume its run with --ckpt_path last and a config "
                    "in the new form, start from its weights with --model.training.weights_from, or load it in "
                    "Python with SemiSupervisedGAN.load_from_checkpoint, which maps the options"
                )
        # LightningCLI then lays the checkpoint's model hyperparameters over the command line's;
        # model.training.resume_lr is a choice for this resume, not part of the model: keep the user's.
        self._resume_lr = self.config.get(f"{subcommand}.model.training.resume_lr") if subcommand else None

    def before_instantiate_classes(self) -> None:
        if not self._precision_given:  # a config's bf16 was chosen for CPUs that have it (lit_ssgan.precision)
            trainer = (self.config[self.subcommand] if self.subcommand else self.config)["trainer"]
            trainer["precision"], message = fast_cpu_precision(trainer.get("precision"), trainer.get("accelerator"))
            if message:
                rank_zero_warn(message)
        if not self.subcommand:
            return
        config = self.config[self.subcommand]
        self._check_before_the_work(config)
        if self._resume_lr is not None:
            config["model.training.resume_lr"] = self._resume_lr
        # test and predict from a checkpoint need no labeled folder to name the classes
        data_args = config.get("data", {}).get("init_args", {})
        recorded = self._ckpt_data if isinstance(self._ckpt_data, dict) else {}
        needs_names = "class_names" in data_args and not data_args["class_names"] and not data_args.get("labeled_dir")
        if needs_names and recorded.get("class_names"):
            data_args["class_names"] = list(recorded["class_names"])
        elif needs_names and self._ckpt_data is not None:
            raise ConfigError(
                f"--ckpt_path {config['ckpt_path']}: the checkpoint records no class names (it was trained on "
                f"{recorded.get('datamodule') or 'data that records none'}, not on image folders); use the config "
                "it was trained with, or give data.class_names"
            )

    def _check_before_the_work(self, config: Any) -> None:
        """What can be refused before anything is built or read: evaluating untrained weights by
        mistake, outputs that cannot be written, and a ``fit`` from scratch whose
        ``model.training.weights_from`` names no file."""
        evaluates = self.subcommand in ("validate", "test", "predict")
        if evaluates and not config.get("ckpt_path") and not config.get("untrained"):
            raise ConfigError(
                f"{self.subcommand} needs --ckpt_path (a checkpoint, or last): without one it would evaluate "
                "untrained weights. If that is what you mean, add --untrained true"
            )
        root = config["trainer"].get("default_root_dir") or "."
        check_output_folder(root, "--trainer.default_root_dir")
        if self.subcommand == "predict" and config.get("predictions_csv"):
            check_output_file(config["predictions_csv"], "--predictions_csv")
        # only a run from scratch reads weights_from (a resume goes on from its checkpoint's weights)
        weights_from = config.get("model.training.weights_from") if self.subcommand == "fit" else None
        ckpt_path = config.get("ckpt_path")
        if weights_from and (not ckpt_path or (ckpt_path == "last" and find_last_checkpoint(root) is None)):
            check_weights_from(weights_from)

    def _resolve_last_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        root = self.trainer.default_root_dir
        config["ckpt_path"] = found = find_last_checkpoint(root)
        if found is None and self.subcommand != "fit":  # never evaluate untrained weights by mistake
            raise MissingFileError(f"--ckpt_path last: no last.ckpt under {root}")
        if found is None:
            rank_zero_warn(f"--ckpt_path last: no last.ckpt under {root} yet; starting from scratch")

    def _claim_run_folder(self) -> None:
        # the last step of each before_*: a run refused by their checks makes no folder
        claim_run_folder(self.trainer)

    def before_validate(self) -> None:
        self._resolve_last_checkpoint()
        self._claim_run_folder()

    before_test = before_validate

    def before_predict(self) -> None:
        PredictionsCSV.check_processes(self.trainer)  # here, before DDP starts the other processes: said once
        self._resolve_last_checkpoint()
        config = self.config_init[self.subcommand]
        if config.get("return_predictions") is None:  # the CSV has them: memory stays flat however many
            config["return_predictions"] = False
        self._claim_run_folder()

    def before_fit(self) -> None:
        self._resolve_last_checkpoint()
        self.datamodule.check_fit_set()
        if self.config_init[self.subcommand].get("test_after_fit"):  # not after the whole run
            self.datamodule.check_test_set("--test_after_fit")
        self._claim_run_folder()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for target in ("discriminator", "generator"):
            parser.link_arguments("data.image_shape", f"model.{target}.init_args.image_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.discriminator.init_args.num_classes", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False, help="Run the test set when fit ends.")
        parser.add_argument("--epoch_line", type=bool, default=True, help="fit: print tefla's line after each epoch.")
        parser.add_argument(
            "--time_left",
            type=bool,
            default=True,
            help="fit: print how long the run will take, after a few batches.",
        )
        parser.add_argument(
            "--untrained",
            type=bool,
            default=False,
            help="validate, test, predict: evaluate the model's initial weights, without --ckpt_path, on purpose.",
        )
        parser.add_argument(
            "--predictions_csv",
            type=str | None,
            default=None,
            help="predict: the CSV to write (default: in the run's log directory).",
        )

    def after_fit(self) -> None:
        if not self.config_init[self.subcommand].get("test_after_fit"):
            return
        callback = self.trainer.checkpoint_callback
        best = callback.best_model_path if isinstance(callback, ModelCheckpoint) and callback.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


class _SaveConfig(SaveConfigCallback):
    """Lightning's ``config.yaml``; an OSError writing it ends the command in one line naming it."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        with writing(Path(trainer.log_dir or trainer.default_root_dir) / self.config_filename):
            super().setup(trainer, pl_module, stage)


#: the callbacks every run has, whatever its config: a preempted run's last checkpoint and exit
#: status, and the record of the labeled examples (added where the config lists none of the kind)
RUN_CALLBACKS = (Preemption, LabeledExamples)


def cli(args: list[str] | None = None, run: bool = True, **kwargs: Any) -> SemiSupervisedCLI:
    """Runs the command with ``args`` (default: the command line) and returns the finished CLI.

    With ``run=False``, ``args`` name no subcommand and the CLI only builds ``model``,
    ``datamodule`` and ``trainer`` from them (the benchmarks drive the Trainer themselves).
    ``kwargs`` go to :class:`SemiSupervisedCLI` (LightningCLI's arguments). An option is spelt in
    full: argparse's abbreviations would take ``--trainer.max_epoch`` for ``--trainer.max_epochs``.
    """
    kwargs["parser_kwargs"] = {"allow_abbrev": False, **kwargs.get("parser_kwargs", {})}
    return SemiSupervisedCLI(
        SemiSupervisedGAN,
        SemiSupervisedDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=_SaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        **kwargs,
    )


@dataclass(frozen=True)
class Subcommand:
    """A subcommand of ``lit-ssgan`` that is not a Trainer's method.

    Its options are ``function``'s parameters, as jsonargparse reads a signature (names, types,
    defaults, and their help from the ``Args:`` of its docstring), given on the command line or
    in a YAML file (``--config``); running it calls ``function`` with them and prints ``done`` of
    what it returned. A :class:`~lit_ssgan.errors.UserError` it raises is printed as one line,
    ``lit-ssgan NAME: error: ...``, with exit status 1.

    Args:
        function: what the subcommand does.
        help: one line: its entry in ``lit-ssgan --help`` and the head of ``lit-ssgan NAME --help``.
        done: the line to print from ``function``'s result (None: print nothing).
    """

    function: Callable[..., Any]
    help: str
    done: Callable[[Any], str] | None = None


#: the subcommands beside the Trainer's, by name. One more is one entry here: a function whose
#: signature and docstring say its options, the line for --help, and what to print when it is done.
SUBCOMMANDS: dict[str, Subcommand] = {
    "export": Subcommand(
        export,
        "a trained classifier as one ONNX or TorchScript file",
        lambda written: f"classifier written to {written[0]}; how to feed it: {written[1]}",
    ),
    "draws": Subcommand(
        draws,
        "a fit config over label draws: its scores, mean ± std",
        lambda table: f"table written to {table}",
    ),
}

#: the Trainer's subcommands (SemiSupervisedCLI's), with their line in ``lit-ssgan --help``
TRAINER_SUBCOMMANDS: dict[str, str] = {
    "fit": "train the GAN (--ckpt_path last resumes a run)",
    "validate": "the validation scores of a checkpoint",
    "test": "the test scores and confusion matrix of a checkpoint",
    "predict": "a checkpoint's predictions for images, as a CSV",
}


class _LightningCLIOptions(ArgumentParser):
    """A Trainer's subcommand as the command's own parser sees it: only its name. Its options are
    LightningCLI's to parse (``lit-ssgan fit --help`` lists them), so here they are taken as they are."""

    def parse_args(self, args: Any = None, namespace: Any = None, **kwargs: Any) -> Namespace:  # type: ignore[override]
        return Namespace()


def command_parser() -> ArgumentParser:
    """``lit-ssgan``'s parser: it picks the subcommand (``lit-ssgan --help`` lists them all, a line
    each), and parses the options of one of :data:`SUBCOMMANDS`; a Trainer's subcommand is left
    to :class:`SemiSupervisedCLI`. A bad command line raises ``argparse.ArgumentError``."""
    parser = ArgumentParser(prog="lit-ssgan", description=DESCRIPTION, exit_on_error=False, allow_abbrev=False)
    subcommands = parser.add_subcommands(dest="subcommand")
    for name in SemiSupervisedCLI.subcommands():
        subcommands.add_subcommand(name, _LightningCLIOptions(add_help=False), help=TRAINER_SUBCOMMANDS[name])
    for name, command in SUBCOMMANDS.items():
        options = ArgumentParser(description=command.help, allow_abbrev=False)  # an option spelt in full
        options.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these options")
        options.add_function_arguments(command.function)
        subcommands.add_subcommand(name, options, help=command.help)
    return parser


def main(args: list[str] | None = None) -> None:
    """The ``lit-ssgan`` console command, on ``args`` (default: the command line).

    An error the user caused (a :class:`~lit_ssgan.errors.UserError`: a bad option value, a
    missing or damaged file, a checkpoint that does not fit, a diverged run) is printed as one
    short message and the command exits with status 1; a command line that does not parse, with
    status 2; options before the subcommand, with where they go. A Ctrl-C during ``fit``'s training
    ends it with status 130 after a checkpoint (:class:`~lit_ssgan.callbacks.Preemption`); anywhere
    else it is raised, and the console command (:mod:`lit_ssgan.__main__`) says so in a line. Set
    ``LIT_SSGAN_TRACEBACK=1`` to see the traceback as well. Anything else is a bug, and shows its
    traceback.
    """
    misplaced = misplaced_options(sys.argv[1:] if args is None else args)
    if misplaced is not None:
        print(f"lit-ssgan: error: {misplaced}", file=sys.stderr)
        sys.exit(2)
    try:
        parser = command_parser()
        parsed = parser.parse_args(args)
        name = parsed.subcommand
        warning_filters.install(name)
        command = SUBCOMMANDS.get(name)
        if command is None:
            # the same command line, parsed again by LightningCLI's parser of that subcommand
            _run_trainer_subcommand(args)
            return
        with exit_on_user_error(f"lit-ssgan {name}"):  # exit status 1
            options = parser.instantiate_classes(parsed)[name]
            result = command.function(**{key: value for key, value in vars(options).items() if key != "config"})
        if command.done is not None:
            print(command.done(result))
    except ArgumentError as err:
        if user_error(err) is not None or os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"lit-ssgan: error: {condensed(str(err))}\ntip: --help lists the options", file=sys.stderr)
        sys.exit(2)  # argparse's status for a bad command line


def misplaced_options(args: list[str]) -> str | None:
    """The error for a command line whose options come before the subcommand (``lit-ssgan
    --config x.yaml fit``), saying where they go; None for one that does not start with an option,
    or asks for ``--help``."""
    if not args or not args[0].startswith("-") or args[0] in ("-h", "--help"):
        return None
    option = args[0].split("=", 1)[0]
    names = [*SemiSupervisedCLI.subcommands(), *SUBCOMMANDS]
    at = next((i for i, arg in enumerate(args) if arg in names), None)
    if at is None:
        return f"{option} goes after a subcommand ({', '.join(names)}), as in: lit-ssgan fit {shlex.join(args)}"
    if any(arg in ("-h", "--help") for arg in args[:at]):
        return None
    return f"{option} goes after the subcommand: lit-ssgan {shlex.join([args[at], *args[:at], *args[at + 1 :]])}"


#: the options that take a YAML file of options (a group's as well as the whole command's)
CONFIG_FILE_OPTIONS = ("--config", "-c", "--trainer", "--model", "--data")


def _check_config_files(args: list[str]) -> None:
    """Each file of options in ``args`` (``--config FILE`` or ``--config=FILE``), before jsonargparse
    reads it: one that is not UTF-8 text ended in a ``UnicodeDecodeError`` traceback there, and an
    empty one in "Unexpected config: "."""
    pairs = [a.partition("=")[::2] for a in args if "=" in a] + list(zip(args, args[1:], strict=False))
    for option, value in pairs:
        if option not in CONFIG_FILE_OPTIONS or not Path(value).is_file():
            continue
        try:
            text = Path(value).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadFileError(f"{option} {value}: not a YAML text file (UTF-8)") from None
        if not text.strip():
            raise ConfigError(f"{option} {value}: the file is empty")


def _run_trainer_subcommand(args: list[str] | None) -> None:
    # a preempted run says so in one line of its own (the Preemption callback); Lightning's notice
    # of the signal, an INFO record of this one logger, would be a second
    logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
    # Lightning's advertisement for its cloud logger, printed with every run, and its notice of a
    # Ctrl-C, which the Preemption callback's line says better: not the user's to act on
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NOT_THE_USERS)  # once: same object
    with warnings.catch_warnings():
        # torch's deprecation of an API that Lightning itself calls: nothing a user can act on
        warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\).*", FutureWarning)
        # Lightning warns at every save with every_n_train_steps under manual optimization that the
        # weights are those *after* the step; here that is what an exact resume needs.
        warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization and every_n_train_steps")
        try:
            with exit_on_user_error("lit-ssgan"):  # exit status 1
                cli(args, parser_kwargs={"exit_on_error": False, "prog": "lit-ssgan"})
        except SystemExit as stop:
            # Lightning's way out after a Ctrl-C it caught (outside fit's training), status 1
            if stop.code == 1 and isinstance(stop.__context__, KeyboardInterrupt):
                sys.exit(INTERRUPTED_EXIT_STATUS)
            raise


#: the command's --help, above its subcommands
DESCRIPTION = (
    "Semi-supervised GAN training (lit_ssgan). fit, validate, test and predict are Lightning's. "
    "lit-ssgan SUBCOMMAND --help lists a subcommand's options."
)


class _NotTheUsers(logging.Filter):
    #: what the records to drop say
    SAY = ("litlogger", "Detected KeyboardInterrupt, attempting graceful shutdown")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(words in str(record.msg) for words in self.SAY)


_NOT_THE_USERS = _NotTheUsers()


# jsonargparse's lines that explain its type machinery rather than the user's mistake
_NOISE = re.compile(
    r"^\s*(Does not validate against any of the Union subtypes|Subtypes: |Errors:|- Expected a <class 'NoneType'>"
    r"|Given value type: |Given value: )"
)


# jsonargparse's path down to the option at fault: a key, and a part's class between two keys
_KEY = re.compile(r'^\s*(?:- )?Parser key "([^"]+)":\s*(.*)$')
_CLASS = re.compile(r"^\s*- Problem with given class_path '([^']*)':\s*$")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted$")


#: jsonargparse's names of the types it expected, as Python writes them
_TYPE_NAMES = re.compile(r"Expected a (?:typing\.Literal\[(?P<choices>.*)\]|<class '(?P<type>\w+)'>)")


def _type_name(expected: re.Match[str]) -> str:
    if expected["choices"] is not None:
        return f"expected one of {expected['choices']}"
    return f"expected {'an' if expected['type'][0] in 'aeiou' else 'a'} {expected['type']}"


def condensed(message: str) -> str:
    """A jsonargparse error without the lines about its own type machinery; where it is one
    mistake down a path of keys and parts, one line naming the option as the user types it:
    ``--model.g_loss.init_args.pull_away_weight: Not of type NonNegativeFloat: -1 does not ...``."""
    lines = [line for line in message.splitlines() if not _NOISE.match(line)]
    path: list[str] = []
    said: list[str] = []
    part = ""
    for line in lines:
        if key := _KEY.match(line):
            path.append(key.group(1))
            said += [key.group(2)] if key.group(2) else []
        elif (given := _CLASS.match(line)) and path:
            path.append("init_args")
            part = given.group(1)
        elif line.strip():
            said.append(line.strip().removeprefix("- "))
    if not path or len(said) != 1:
        return "\n".join(lines)
    if path[-1] != "init_args":
        return f"--{'.'.join(path)}: {_TYPE_NAMES.sub(_type_name, said[0])}"
    if unknown := _NOT_ACCEPTED.match(said[0]):
        return f"--{'.'.join(path)}.{unknown.group(1)}: {part} takes no option {unknown.group(1)!r}"
    return "\n".join(lines)
