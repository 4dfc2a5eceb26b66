"""bf16 on a CPU: fast only where the CPU has the instructions for it.

The CPU configs train in ``bf16-mixed``: on a CPU with AVX-512 (``avx512_bf16``, AMX) that is 1.5–5×
faster than fp32. On an x86 CPU without AVX-512 (most laptops, older servers) oneDNN has no bf16
kernel and autocast runs a reference path instead: measured on a 2-core AVX2 AMD EPYC, a 3×3
convolution 9× and a matrix product 160× slower than in fp32, a ``configs/image_folder_cpu.yaml``
step 13× (11.7 against 0.91 s: its 35 minutes would be 20 hours) (pytorch/pytorch#118499, where
torch's maintainers agree it should warn; it does not). torch says which vector instructions it dispatches to
(``torch.backends.cpu.get_cpu_capability``); below AVX-512 on x86, bf16 is slow.
"""

from __future__ import annotations

import platform
import weakref
from typing import Any

import torch

#: ``trainer.precision`` values that run a CPU's matrix products in bf16
BF16 = frozenset({"bf16-mixed", "bf16", "bf16-true"})
#: what ``trainer.precision`` falls back to
FP32 = "32-true"
#: what ``get_cpu_capability`` says of an x86 CPU without AVX-512
SLOW_BF16_CAPABILITIES = frozenset({"DEFAULT", "NO AVX", "AVX2"})
_X86 = frozenset({"x86_64", "amd64", "x86", "i386", "i686"})


def cpu_bf16_is_slow() -> bool:
    """Whether bf16 on this CPU runs a reference path, many times slower than fp32: an x86 CPU
    below AVX-512. On other architectures no rule is known, and the answer is no."""
    if platform.machine().lower() not in _X86:
        return False
    return torch.backends.cpu.get_cpu_capability() in SLOW_BF16_CAPABILITIES


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether ``trainer.accelerator`` (as the config gives it) trains on the CPU."""
    if not isinstance(accelerator, str):
        return False  # an Accelerator object: the user's own choice
    if accelerator == "cpu":
        return True
    return accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()


def slow_bf16_message(precision: Any) -> str:
    return (
        f"trainer.precision {precision} on this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX-512): torch has "
        f"no bf16 kernels for it and runs a reference path, 10x or more slower than fp32"
    )


def fast_cpu_precision(precision: Any, accelerator: Any) -> tuple[Any, str | None]:
    """The precision a CPU run of a config should train in, and what to tell the user: a config's
    bf16 on a CPU where bf16 is slow becomes ``32-true`` (the same training, in more precise
    arithmetic), with a line saying so; any other precision is kept, and nothing is said."""
    if str(precision) not in BF16 or not runs_on_cpu(accelerator) or not cpu_bf16_is_slow():
        return precision, None
    return FP32, f"{slow_bf16_message(precision)}; training in {FP32} (set --trainer.precision to keep bf16)"


#: the Trainers already warned (fit's and test's setup share one)
_warned: weakref.WeakSet[Any] = weakref.WeakSet()


def warn_if_bf16_is_slow(trainer: Any) -> None:
    """One warning when ``trainer`` was built to run bf16 on a CPU where bf16 is slow: the user's
    own choice (the Python API, or ``--trainer.precision`` given on the command line), kept."""
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.utilities import rank_zero_warn

    if trainer in _warned:
        return
    _warned.add(trainer)
    if str(trainer.precision) in BF16 and isinstance(trainer.accelerator, CPUAccelerator) and cpu_bf16_is_slow():
        rank_zero_warn(f"{slow_bf16_message(trainer.precision)}; precision 32-true trains as fast as this CPU can")
