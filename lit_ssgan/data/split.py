"""The split of a labeled training pool, as pure functions of its labels, the seed and the counts
asked for: which examples validate, which keep their labels, which are served unlabeled; drawn
from ``data_seed`` (:func:`draw_split`) or replayed from a run's record (:func:`replay_split`). And
the labeled set's class balancing (:func:`labeled_weights`).

Indices here are pool indices: positions in the labels of
:meth:`~lit_ssgan.data.SemiSupervisedDataModule.load_train_pool`, which gathers the images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from lit_ssgan.data.record import Record
from lit_ssgan.errors import ConfigError, check_probability

#: ``num_labeled``: a total split evenly across the classes, a count for each class, or None (all)
NumLabeled = int | Sequence[int] | None


class Split(NamedTuple):
    """The pool indices (int64) of each part of a split of a pool of ``N`` examples.

    Attributes:
        val: ``(V,)`` the validation examples, in the seed's order (a record's: in its order); empty
            where the data has a validation set of its own.
        train: ``(N - V,)`` the rest of the pool, in the seed's order.
        labeled: ``(L,)`` the labeled examples, among ``train``, sorted.
    """

    val: np.ndarray
    train: np.ndarray
    labeled: np.ndarray

    def unlabeled(self, includes_labeled: bool) -> np.ndarray:
        """The pool indices served unlabeled: ``train`` in its order, or without the labeled examples,
        sorted."""
        return self.train if includes_labeled else np.setdiff1d(self.train, self.labeled)


def class_name(class_names: Sequence[str] | None, c: int) -> str:
    """The name of class ``c`` in messages: ``class_names[c]``, or the index where there are none."""
    return class_names[c] if class_names else str(c)


def labeled_per_class(num_labeled: int | Sequence[int], num_classes: int) -> list[int]:
    """The labeled examples ``num_labeled`` asks for in each class: a list as given; a total shared
    evenly, the first ``num_labeled % num_classes`` classes one more.

    Example:
        >>> labeled_per_class(7, 3), labeled_per_class([5, 1, 2], 3)
        ([3, 2, 2], [5, 1, 2])
    """
    if isinstance(num_labeled, int):
        return [num_labeled // num_classes + int(c < num_labeled % num_classes) for c in range(num_classes)]
    return list(num_labeled)


def check_labeled_options(num_labeled: NumLabeled, num_classes: int) -> None:
    """Refuses a ``num_labeled`` that does not fit ``num_classes`` classes (0: not known yet, and
    nothing checked): a total smaller than the number of classes, or a list that is not one count
    (0 or more) for each class, 1 or more in all.

    Raises:
        ConfigError: naming ``num_labeled``.
    """
    k = num_classes
    if isinstance(num_labeled, list) and k and (len(num_labeled) != k or min(num_labeled) < 0 or sum(num_labeled) < 1):
        raise ConfigError(
            f"num_labeled as a list needs one count (0 or more) for each of the {k} classes, got {num_labeled}"
        )
    if isinstance(num_labeled, int) and k and num_labeled < k:
        raise ConfigError(f"num_labeled must be at least the number of classes ({k}), got {num_labeled}")


def check_balance_options(
    ratio: float | None,
    balance_weights: Sequence[float] | None,
    final_balance_weights: Sequence[float] | None,
    num_classes: int,
) -> None:
    """Refuses class balancing options (:func:`labeled_weights`' arguments) that do not fit each other
    or ``num_classes`` classes (0: not known yet, and the lengths not checked): weights without a
    ratio, a ratio outside [0, 1], weights below 0 or all 0, or not one a class.

    Raises:
        ConfigError: naming the option.
    """
    if ratio is None and (balance_weights is not None or final_balance_weights is not None):
        raise ConfigError(
            "data.balance_weights and data.final_balance_weights need data.balance_ratio (1 keeps "
            "balance_weights; below 1 anneals them toward final_balance_weights)"
        )
    if ratio is not None:
        check_probability("balance_ratio", ratio)
    for name, weights in (("balance_weights", balance_weights), ("final_balance_weights", final_balance_weights)):
        if weights is not None and (any(w < 0 for w in weights) or not any(w > 0 for w in weights)):
            raise ConfigError(f"{name} must be 0 or more, and not all 0, got {weights}")
        if weights is not None and num_classes and len(weights) != num_classes:
            raise ConfigError(f"{name} needs one weight for each of the {num_classes} classes, got {len(weights)}")


def draw_labeled(
    labels: np.ndarray,
    candidates: np.ndarray,
    num_labeled: NumLabeled,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The labeled examples among ``candidates``: the first of each class in their order, as many
    as :func:`labeled_per_class` gives (None: every candidate).

    Args:
        labels: ``(N,)`` the pool's class indices.
        candidates: pool indices, the pool less its validation examples, in random order.
        num_labeled: a total, a count for each class, or None.
        num_classes: the number of classes.
        class_names: the classes' names, for messages (None: their indices).

    Returns:
        ``(L,)`` pool indices, sorted.

    Raises:
        ConfigError: naming the class, if it has fewer candidates than asked for (or, with None,
            none left though the pool has some); if a total is more than the candidates.
    """
    if num_labeled is None:
        emptied = [c for c in range(num_classes) if (labels == c).any() and not (labels[candidates] == c).any()]
        if emptied:
            raise ConfigError(
                f"class {class_name(class_names, emptied[0])!r} has no training images left: all "
                f"{int((labels == emptied[0]).sum())} went to the validation split (data.val_size "
                f"{len(labels) - len(candidates)}); lower data.val_size, add images of it, or give data.val_dir"
            )
        return np.sort(candidates)
    if isinstance(num_labeled, int) and num_labeled > len(candidates):
        raise ConfigError(
            f"num_labeled ({num_labeled}) is more than the training examples left after the validation "
            f"split ({len(candidates)})"
        )
    chosen = []
    for c, wanted in enumerate(labeled_per_class(num_labeled, num_classes)):
        of_class = candidates[labels[candidates] == c]
        if len(of_class) < wanted:
            raise ConfigError(
                f"num_labeled={num_labeled} needs {wanted} labeled examples of class {class_name(class_names, c)!r}; "
                f"there are {len(of_class)} after the validation split"
            )
        chosen.append(of_class[:wanted])
    return np.sort(np.concatenate(chosen))


def _seed_order(num_examples: int, seed: int, val_size: int, has_own_val: bool) -> np.ndarray:
    """``(N,)`` the pool in ``seed``'s order, after checking ``val_size`` against the pool."""
    if has_own_val and val_size:
        raise ConfigError("give data.val_size or a validation set of its own, not both")
    if val_size >= num_examples:
        raise ConfigError(f"val_size ({val_size}) must be smaller than the training pool ({num_examples})")
    return np.random.default_rng(seed).permutation(num_examples)


def draw_split(
    labels: np.ndarray,
    *,
    seed: int,
    val_size: int,
    num_labeled: NumLabeled,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    has_own_val: bool = False,
) -> Split:
    """The split ``seed`` draws: the pool in a random order, its first ``val_size`` examples kept for
    validation, and the labeled examples the first of each class among the rest
    (:func:`draw_labeled`). A function of its arguments alone.

    Args:
        labels: ``(N,)`` the pool's class indices.
        seed: ``data_seed``.
        val_size: validation examples drawn from the pool (0 where ``has_own_val``).
        num_labeled: a total, a count for each class, or None (every example left).
        num_classes: the number of classes.
        class_names: the classes' names, for messages (None: their indices).
        has_own_val: the data has a validation set of its own.

    Raises:
        ConfigError: for a ``val_size`` with a validation set of its own, or not smaller than the
            pool; see :func:`draw_labeled`.
    """
    order = _seed_order(len(labels), seed, val_size, has_own_val)
    train = order[val_size:]
    return Split(order[:val_size], train, draw_labeled(labels, train, num_labeled, num_classes, class_names))


def replay_split(
    record: Record,
    labels: np.ndarray,
    *,
    seed: int,
    val_size: int,
    num_labeled: NumLabeled,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    pool_names: Sequence[str],
    label_name: Callable[[Any], str],
    own_val: Sequence[str] | None = None,
    source: str = "the record",
) -> Split:
    """The split a run's record gives: its validation and labeled examples, found by name in the pool
    and with their labels checked; the rest of the pool in ``seed``'s order.

    Args:
        record: the record (:func:`~lit_ssgan.data.record.read_record`).
        labels: ``(N,)`` the pool's class indices.
        seed: ``data_seed``: the order of ``train``.
        val_size: the validation examples the record must list (0 where ``own_val``).
        num_labeled: what the record's labeled examples must count, in each class.
        num_classes: the number of classes.
        class_names: the classes' names, for messages (None: their indices).
        pool_names: ``(N,)`` the record's name of each pool example.
        label_name: a label as the record writes it.
        own_val: the names of the data's own validation set, which the record's validation rows must
            list, in order; None: the record's are pool examples.
        source: where the record came from, for messages (``data.split_from``'s path).

    Raises:
        ConfigError: naming ``source`` and the example, for an example the pool lacks or labels
            otherwise; for counts that do not fit ``num_labeled`` or ``val_size``, or a labeled example
            that is also a validation one; as :func:`draw_split` does for ``val_size``.
    """
    order = _seed_order(len(labels), seed, val_size, own_val is not None)
    index = {name: i for i, name in enumerate(pool_names)}

    def pool_indices(split: str) -> np.ndarray:
        found = []
        for name, label in record[split]:
            i = index.get(name)
            if i is None:
                raise ConfigError(f"data.split_from: {source} lists {split} example {name!r}, which the data lacks")
            if label != label_name(labels[i]):
                raise ConfigError(
                    f"data.split_from: {source} labels {split} example {name!r} {label!r}; "
                    f"the data labels it {label_name(labels[i])!r}"
                )
            found.append(i)
        return np.asarray(found, dtype=np.int64)

    if own_val is not None:
        if [name for name, _ in record["val"]] != list(own_val):
            raise ConfigError(f"data.split_from: {source} lists other validation examples than the data's own")
        val = np.zeros(0, dtype=np.int64)
    else:
        val = pool_indices("val")
        if len(val) != val_size:
            raise ConfigError(
                f"data.split_from: {source} lists {len(val)} validation examples; data.val_size is {val_size}"
            )
    labeled = np.sort(pool_indices("labeled"))
    if np.isin(labeled, val).any():
        raise ConfigError(f"data.split_from: {source} lists examples both as labeled and as validation")
    asked = draw_labeled(labels, np.setdiff1d(np.arange(len(labels)), val), num_labeled, num_classes, class_names)

    def per_class(idx: np.ndarray) -> list[int]:
        return [len(idx), *(int((labels[idx] == c).sum()) for c in range(num_classes))]

    if per_class(labeled) != per_class(asked):
        raise ConfigError(
            f"data.split_from: {source} lists {len(labeled)} labeled examples, not the numbers per class "
            f"that data.num_labeled ({num_labeled}) asks for"
        )
    return Split(val, order[~np.isin(order, val)], labeled)


def class_weights(labels: np.ndarray, ratio: float, balance: np.ndarray, final: np.ndarray, epoch: int) -> np.ndarray:
    """tefla's annealed class balancing: per-example sampling weights for ``epoch`` (from 0),
    ``α · balance[y] + (1 - α) · final[y]`` with ``α = ratio ** epoch``.

    Args:
        labels: ``(L,)`` the labeled examples' class indices.
        ratio: ``balance_ratio``, in [0, 1].
        balance: ``(K,)`` the class weights at epoch 0.
        final: ``(K,)`` the class weights the balancing anneals to.
        epoch: the epoch, from 0.

    Returns:
        ``(L,)`` float64 weights, not normalised.

    Example:
        >>> labels = np.array([0, 0, 0, 1])
        >>> balance, final = np.array([4 / 3, 4.0]), np.ones(2)  # inverse frequency, then natural
        >>> class_weights(labels, 0.5, balance, final, epoch=0).round(3).tolist()
        [1.333, 1.333, 1.333, 4.0]
        >>> class_weights(labels, 0.5, balance, final, epoch=1).round(3).tolist()
        [1.167, 1.167, 1.167, 2.5]
    """
    alpha = ratio**epoch
    per_class = alpha * balance + (1.0 - alpha) * final
    return per_class[labels].astype(np.float64)


def labeled_weights(
    labels: np.ndarray,
    num_classes: int,
    ratio: float | None,
    balance_weights: Sequence[float] | None = None,
    final_balance_weights: Sequence[float] | None = None,
) -> Callable[[int], np.ndarray] | None:
    """The labeled examples' sampling weights as a function of the epoch (:func:`class_weights`), or
    None without ``ratio`` (no balancing).

    Args:
        labels: ``(L,)`` the labeled examples' class indices; or their numbers (regression), each
            counted in its nearest grade of ``0 … K-1``, as tefla balanced graded labels.
        num_classes: the number of classes, ``K``.
        ratio: ``balance_ratio``: the weights anneal from ``balance_weights`` to
            ``final_balance_weights`` by ``ratio ** epoch``.
        balance_weights: ``(K,)`` class weights at the start; default the inverse class frequency
            ``L / count`` (0 for a class with no labeled example): the classes drawn equally often.
        final_balance_weights: ``(K,)`` class weights at the end; default all 1 (the labeled set's
            own class frequencies).

    Returns:
        A function of the epoch (from 0) giving ``(L,)`` weights, or None.

    Raises:
        ConfigError: if the start or the final weights give no class with labeled examples any
            weight.

    Example:
        >>> weights = labeled_weights(np.array([0, 0, 0, 1]), 2, ratio=0.5)
        >>> weights(0).round(3).tolist()
        [1.333, 1.333, 1.333, 4.0]
    """
    if ratio is None:
        return None
    if not np.issubdtype(labels.dtype, np.integer):
        labels = np.clip(np.rint(labels), 0, num_classes - 1).astype(np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    inverse = np.divide(len(labels), counts, out=np.zeros(num_classes), where=counts > 0)
    balance = np.asarray(balance_weights, dtype=float) if balance_weights else inverse
    final = np.asarray(final_balance_weights or np.ones(num_classes), dtype=float)
    if not (balance[counts > 0] > 0).any() or not (final[counts > 0] > 0).any():
        raise ConfigError("balance weights give no weight to any class that has labeled examples")
    return partial(class_weights, labels, ratio, balance, final)
