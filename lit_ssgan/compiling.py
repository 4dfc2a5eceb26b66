"""The compiled training step: what ``model.training.compile`` means, checked where the model is built."""

from __future__ import annotations

from typing import Any

from lit_ssgan.errors import ConfigError, check_choice

#: ``torch.compile``'s modes; ``reduce-overhead`` also captures each compiled part in a CUDA graph on a GPU
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the ``torch.compile`` arguments ``model.training.compile`` may set
ARGUMENTS = ("mode", "backend", "fullgraph", "dynamic", "options")

#: what ``model.training.compile`` takes: false or null (eager), true (torch.compile's defaults), a mode, or arguments
CompileOption = bool | str | dict[str, Any] | None


def compile_options(value: CompileOption) -> dict[str, Any] | None:
    """``torch.compile``'s keyword arguments for ``model.training.compile``, or None to run eagerly.

    Example:
        >>> compile_options("reduce-overhead"), compile_options(True), compile_options(None)
        ({'mode': 'reduce-overhead'}, {}, None)
    """
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str):
        return {"mode": check_choice("compile", value, MODES)}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(ARGUMENTS))
        if unknown:
            raise ConfigError(f"compile: {', '.join(unknown)} is not a torch.compile argument ({', '.join(ARGUMENTS)})")
        if "mode" in value:
            check_choice("compile: mode", value["mode"], MODES)
        return dict(value)
    raise ConfigError(f"compile must be true, false, a mode ({', '.join(MODES)}) or torch.compile's arguments")


def uses_cuda_graphs(options: dict[str, Any] | None) -> bool:
    """Whether the compiled parts run as CUDA graphs (whose outputs the next run overwrites)."""
    return options is not None and options.get("mode") in ("reduce-overhead", "max-autotune")
