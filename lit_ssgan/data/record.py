"""The record of a split: which examples a run trained with labels and which it validated on, as
a CSV of ``split,example,label`` rows (``labeled`` or ``val``; the example's name, see
:meth:`~lit_ssgan.data.SemiSupervisedDataModule.example_names`; its label as the run named it).

:class:`~lit_ssgan.callbacks.LabeledExamples` writes it as ``labeled_examples.csv`` in each run's
log directory; ``data.split_from`` reads it back, so that another run trains on the same draw.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_ssgan.errors import ConfigError, MissingFileError
from lit_ssgan.files import write_atomically

#: the file in the run's log directory
FILE_NAME = "labeled_examples.csv"
HEADER = ["split", "example", "label"]

#: ``{split: [(example, label), ...]}``
Record = dict[str, list[tuple[str, str]]]


def make_record(parts: Mapping[str, tuple[Sequence[str], np.ndarray]], label_name: Callable[[Any], str]) -> Record:
    """The record of the examples of each split in ``parts``, ``{split: (names, labels)}`` (``(n,)``
    labels for ``n`` names), each label as ``label_name`` writes it (the data module's
    :meth:`~lit_ssgan.data.SemiSupervisedDataModule.label_name`).

    Example:
        >>> make_record({"labeled": (["7", "2"], np.array([1, 0])), "val": ([], np.array([]))}, str)
        {'labeled': [('7', '1'), ('2', '0')], 'val': []}
    """
    return {
        split: [(name, label_name(label)) for name, label in zip(names, labels.tolist(), strict=True)]
        for split, (names, labels) in parts.items()
    }


def write_record(path: Path, examples: Record) -> None:
    """Writes ``examples`` to ``path`` (atomically)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(HEADER)
    for split, rows in examples.items():
        writer.writerows([split, name, label] for name, label in rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode("utf-8")))


def read_record(path: str | Path) -> Record:
    """The record in ``path``, as :func:`write_record` wrote it.

    Raises:
        MissingFileError: if there is no such file.
        ConfigError: naming the file, if it is not such a record.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"data.split_from: no file {path} (a run's {FILE_NAME})")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != HEADER or any(len(row) != 3 for row in rows[1:]):
        raise ConfigError(f"data.split_from: {path} is not a run's {FILE_NAME} (rows of {','.join(HEADER)})")
    record: Record = {"labeled": [], "val": []}
    for split, name, label in rows[1:]:
        if split not in record:
            raise ConfigError(f"data.split_from: {path} has a row of split {split!r}; expected 'labeled' or 'val'")
        record[split].append((name, label))
    if not record["labeled"]:
        raise ConfigError(f"data.split_from: {path} lists no labeled example")
    return record
