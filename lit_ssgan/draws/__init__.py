"""``lit-ssgan draws``: one ``fit`` config over several draws of its labeled examples, each draw
a ``lit-ssgan fit`` of its own (a subprocess, in a folder of its own), and one table of their
scores with mean ± std, beside each draw's ``labeled_examples.csv`` and a plot of the validation
curves.

A draw ``S`` is the config run with ``--seed_everything S --data.init_args.data_seed S``: the
labeled examples, the initial weights and the batches all follow from ``S``. Its labels-only twin
is the same draw with every term on unlabeled data off (:data:`LABELS_ONLY`).

The study is resumable: a draw whose folder holds its ``test.json`` is read, not rerun; one that
stopped (a ``last.ckpt`` but no ``test.json``) goes on from its checkpoint with ``--ckpt_path last``.
``OUT/study.json`` records the config's digest and the fit options, so that draws of another
config or other options are never read into the same table.

The package, by role: :mod:`~lit_ssgan.draws.study` (the ``draws`` function and its checks),
:mod:`~lit_ssgan.draws.runner` (the draws as subprocesses, GPU sizing, signals),
:mod:`~lit_ssgan.draws.runs` (one draw and its folder), :mod:`~lit_ssgan.draws.table` (the table of
the results) and :mod:`~lit_ssgan.draws.curves` (the validation curves and their picture).
"""

from lit_ssgan.draws.curves import COLOURS, curves_picture, validation_curve
from lit_ssgan.draws.runner import core_sets, gpu_slots
from lit_ssgan.draws.runs import LABELS_ONLY, Draw, DrawResult
from lit_ssgan.draws.study import DrawsFailedError, draws

__all__ = [
    "COLOURS",
    "LABELS_ONLY",
    "Draw",
    "DrawResult",
    "DrawsFailedError",
    "core_sets",
    "curves_picture",
    "draws",
    "gpu_slots",
    "validation_curve",
]
