"""The module's parts: how a part configured by ``class_path`` is kept in a checkpoint's plain
hyperparameters and rebuilt from them."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import MutableMapping
from typing import Any, TypeVar

from lit_ssgan.errors import ConfigError

T = TypeVar("T")


class Part:
    """A part of the module chosen by ``class_path`` (a loss, a gradient policy, a consistency
    strategy). It keeps the arguments it was built with (:attr:`init_args`), so that a model built
    from Python is saved with each part's class and arguments, as one built by the command is."""

    init_args: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
            if "init_args" not in self.__dict__:  # the most derived class's constructor records
                bound = inspect.signature(init).bind(self, *args, **kwargs)
                bound.apply_defaults()
                object.__setattr__(self, "init_args", dict(list(bound.arguments.items())[1:]))
            init(self, *args, **kwargs)

        cls.__init__ = recording_init  # type: ignore[method-assign]


def config_of(value: Any) -> Any:
    """``value`` as plain data: a :class:`Part` as ``{"class_path", "init_args"}`` (its own parts
    too), a dataclass as a dict; anything else as it is.

    Example:
        >>> @dataclasses.dataclass
        ... class Options:
        ...     seed: int = 0
        >>> config_of(Options(seed=3))
        {'seed': 3}
    """
    if isinstance(value, Part):
        kind = type(value)
        return {
            "class_path": f"{kind.__module__}.{kind.__qualname__}",
            "init_args": {name: config_of(arg) for name, arg in value.init_args.items()},
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def built(value: T | dict[str, Any] | None, kind: type[T], option: str) -> T | None:
    """``value``, or the ``kind`` its config (from :func:`config_of`, or the command's
    ``class_path``/``init_args``) describes. Only a class already imported that is ``kind`` or one
    of its subclasses is built, so that a checkpoint's hyperparameters cannot run other code.

    Raises:
        ConfigError: naming ``option``, for a class that is not a ``kind``.
    """
    if value is None or isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a {kind.__name__}, got {type(value).__name__}")
    if "class_path" not in value:  # a dataclass's fields
        return kind(**value)
    class_path = value["class_path"]
    for candidate in (kind, *_subclasses(kind)):
        if f"{candidate.__module__}.{candidate.__qualname__}" == class_path or candidate.__name__ == class_path:
            return candidate(**value.get("init_args", {}))
    raise ConfigError(f"{option}: {class_path} is not a {kind.__name__} (or not imported)")


def _subclasses(kind: type) -> list[type]:
    found: list[type] = []
    direct: list[type] = kind.__subclasses__()
    for subclass in direct:
        found += [subclass, *_subclasses(subclass)]
    return found


def non_plain_hparams(hparams: dict[str, Any]) -> list[str]:
    """The names of the hyperparameters a ``weights_only`` checkpoint cannot hold (objects rather
    than plain values, e.g. networks passed from Python rather than configured by the CLI)."""
    return [name for name, value in hparams.items() if not _is_plain(value)]


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def keep_plain(hparams: MutableMapping[str, Any]) -> None:
    """Leaves in ``hparams`` what a ``weights_only`` checkpoint can hold: each part as its config
    (:func:`config_of`), the rest if plain (networks and optimizers passed from Python are left out;
    from the command, the hyperparameters already hold their config)."""
    saved = {name: config_of(value) for name, value in hparams.items()}
    hparams.clear()
    hparams.update({name: saved[name] for name in saved if name not in non_plain_hparams(saved)})
