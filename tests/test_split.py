"""The split as pure functions of labels, seed and counts (lit_ssgan.data.split): no Trainer, no data module."""

import hashlib

import numpy as np
import pytest

from lit_ssgan.data.record import make_record
from lit_ssgan.data.split import (
    Split,
    class_weights,
    draw_labeled,
    draw_split,
    labeled_per_class,
    labeled_weights,
    replay_split,
)
from lit_ssgan.errors import ConfigError

THREE = np.arange(60) % 3  # 60 examples of 3 classes: 0, 1, 2, 0, 1, 2, ...


def digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


# The splits the data module drew before the split moved into lit_ssgan.data.split (recorded from its
# SemiSupervisedDataModule._split at commit d4b8dac): pool indices, val and train in the seed's order.
RECORDED = {
    "balanced total": (
        THREE,
        {"seed": 3, "val_size": 12, "num_labeled": 7, "num_classes": 3},
        [22, 0, 3, 38, 37, 2, 17, 39, 43, 49, 25, 48],
        [4, 11, 18, 23, 30, 46, 57],
        [30, 23, 46, 4, 11, 57, 31, 35, 50, 18, 59, 28, 12, 58, 1, 42, 13, 44, 21, 20, 24, 15, 32, 45, 52, 10, 47, 41]
        + [51, 40, 27, 29, 8, 9, 6, 33, 26, 34, 55, 16, 14, 36, 7, 54, 5, 53, 19, 56],
    ),
    "a count for each class": (
        np.random.default_rng(1).integers(0, 4, 80),
        {"seed": 11, "val_size": 9, "num_labeled": [5, 1, 2, 3], "num_classes": 4},
        [18, 47, 6, 72, 61, 9, 62, 75, 35],
        [4, 21, 24, 28, 33, 37, 38, 41, 44, 50, 74],
        [33, 74, 44, 11, 21, 15, 26, 41, 29, 24, 32, 4, 52, 37, 7, 38, 71, 60, 50, 36, 28, 5, 51, 58, 1, 76, 46, 43]
        + [57, 14, 65, 56, 3, 68, 45, 70, 17, 23, 8, 22, 77, 64, 12, 54, 69, 27, 39, 42, 67, 31, 0, 73, 34, 30, 25]
        + [2, 63, 66, 40, 19, 59, 79, 49, 20, 55, 53, 13, 48, 10, 16, 78],
    ),
    "every example": (
        np.arange(30) % 3,
        {"seed": 5, "val_size": 10, "num_labeled": None, "num_classes": 3},
        [19, 9, 2, 7, 23, 24, 11, 6, 12, 17],
        [0, 1, 3, 4, 5, 8, 10, 13, 14, 15, 16, 18, 20, 21, 22, 25, 26, 27, 28, 29],
        [3, 27, 29, 16, 1, 25, 20, 28, 18, 4, 26, 15, 10, 13, 22, 0, 5, 21, 14, 8],
    ),
    "no validation": (
        np.arange(50) % 5,
        {"seed": 0, "val_size": 0, "num_labeled": 10, "num_classes": 5},
        [],
        [2, 4, 10, 18, 20, 23, 26, 34, 36, 47],
        [18, 23, 36, 4, 2, 3, 34, 24, 20, 26, 1, 11, 47, 22, 10, 45, 30, 27, 6, 21, 38, 19, 43, 16, 37, 35, 28, 0, 8]
        + [46, 48, 17, 32, 25, 44, 9, 40, 42, 13, 12, 7, 39, 49, 5, 14, 29, 41, 33, 15, 31],
    ),
}


@pytest.mark.parametrize("case", RECORDED)
def test_the_draw_is_the_one_recorded_for_the_same_labels_seed_and_counts(case):
    labels, options, val, labeled, train = RECORDED[case]
    split = draw_split(labels, **options)
    assert split.val.tolist() == val and split.labeled.tolist() == labeled and split.train.tolist() == train


def digits_pool_labels() -> np.ndarray:
    """The labels of DigitsDataModule's training pool (test_size 500)."""
    from sklearn.datasets import load_digits

    return load_digits().target[np.random.default_rng(12345).permutation(1797)[500:]]


@pytest.mark.parametrize(
    "options, val, labeled, train",
    [
        ({"seed": 0, "val_size": 200, "num_labeled": 50}, "d8faded7dbc95269", "e4885ac7aff23a8c", "d12e60769f117172"),
        (
            {"seed": 7, "val_size": 100, "num_labeled": [2, 8, 5, 5, 5, 5, 5, 5, 5, 5]},
            "1517ad709161a8ce",
            "e0a8be7ce8c62e34",
            None,  # recorded without the labeled examples (unlabeled_includes_labeled false), below
        ),
    ],
)
def test_the_digits_draw_is_the_one_recorded(options, val, labeled, train):
    split = draw_split(digits_pool_labels(), num_classes=10, **options)
    assert digest(split.val) == val and digest(split.labeled) == labeled
    if train is not None:
        assert digest(split.train) == train
    else:
        assert digest(split.unlabeled(includes_labeled=False)) == "0d67012820f39d06"


def test_the_labeled_draw_takes_the_first_candidates_of_each_class_balanced_across_classes():
    candidates = np.random.default_rng(0).permutation(60)
    chosen = draw_labeled(THREE, candidates, 7, num_classes=3)
    assert np.bincount(THREE[chosen], minlength=3).tolist() == [3, 2, 2]  # the remainder to the first classes
    assert chosen.tolist() == sorted(chosen.tolist())
    for c, wanted in enumerate([3, 2, 2]):  # the first of each class in the candidates' order
        assert set(chosen[THREE[chosen] == c].tolist()) == set(candidates[THREE[candidates] == c][:wanted].tolist())
    by_class = draw_labeled(THREE, candidates, [5, 0, 2], num_classes=3)
    assert np.bincount(THREE[by_class], minlength=3).tolist() == [5, 0, 2]
    assert draw_labeled(THREE, candidates[:20], None, num_classes=3).tolist() == sorted(candidates[:20].tolist())
    assert labeled_per_class(10, 4) == [3, 3, 2, 2]


def test_a_class_with_too_few_candidates_is_named():
    with pytest.raises(ConfigError, match="needs 11 labeled examples of class 'cat'; there are 10 after"):
        draw_labeled(THREE, np.arange(30), [11, 1, 1], num_classes=3, class_names=["cat", "dog", "eel"])
    with pytest.raises(ConfigError, match=r"num_labeled \(12\) is more than the training examples left .* \(9\)"):
        draw_labeled(THREE, np.arange(9), 12, num_classes=3)
    kept = np.flatnonzero(THREE != 2)  # every example of class 2 in validation
    with pytest.raises(ConfigError, match=r"class '2' has no training images left: all 20 .* \(data.val_size 20\)"):
        draw_labeled(THREE, kept, None, num_classes=3)


def test_the_validation_split_is_the_seed_s_first_examples_and_the_rest_is_trained_on():
    split = draw_split(THREE, seed=3, val_size=12, num_labeled=7, num_classes=3)
    order = np.random.default_rng(3).permutation(60)
    assert split.val.tolist() == order[:12].tolist() and split.train.tolist() == order[12:].tolist()
    assert set(split.labeled.tolist()) <= set(split.train.tolist())
    assert split.unlabeled(includes_labeled=True).tolist() == split.train.tolist()
    without = split.unlabeled(includes_labeled=False)
    assert sorted(without.tolist() + split.labeled.tolist()) == sorted(split.train.tolist())
    with pytest.raises(ConfigError, match=r"val_size \(60\) must be smaller than the training pool \(60\)"):
        draw_split(THREE, seed=3, val_size=60, num_labeled=7, num_classes=3)
    with pytest.raises(ConfigError, match="give data.val_size or a validation set of its own, not both"):
        draw_split(THREE, seed=3, val_size=12, num_labeled=7, num_classes=3, has_own_val=True)
    own = draw_split(THREE, seed=3, val_size=0, num_labeled=7, num_classes=3, has_own_val=True)
    assert own.val.size == 0 and own.train.tolist() == order.tolist()


def test_the_seed_alone_decides_the_draw():
    def draw(seed: int) -> Split:
        return draw_split(THREE, seed=seed, val_size=12, num_labeled=7, num_classes=3)

    first, again, other = draw(1), draw(1), draw(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first.val, other.val) and not np.array_equal(first.labeled, other.labeled)


def record_of(split: Split, labels: np.ndarray) -> dict:
    names = [f"img{i}" for i in range(len(labels))]
    parts = {
        part: ([names[i] for i in getattr(split, part)], labels[getattr(split, part)]) for part in ("labeled", "val")
    }
    return make_record(parts, lambda label: str(int(label)))


def replay(record, seed: int = 4, **options):
    options = {"val_size": 12, "num_labeled": 7, "num_classes": 3, "source": "run/labeled_examples.csv", **options}
    names = [f"img{i}" for i in range(60)]
    return replay_split(record, THREE, seed=seed, pool_names=names, label_name=lambda label: str(int(label)), **options)


def test_a_record_is_replayed_exactly_whatever_the_seed():
    drawn = draw_split(THREE, seed=3, val_size=12, num_labeled=7, num_classes=3)
    again = replay(record_of(drawn, THREE), seed=4)
    assert again.val.tolist() == drawn.val.tolist() and again.labeled.tolist() == drawn.labeled.tolist()
    # the rest of the pool in the seed's own order, as a draw with that seed would serve it
    order = np.random.default_rng(4).permutation(60)
    assert again.train.tolist() == [i for i in order.tolist() if i not in set(drawn.val.tolist())]
    # with a validation set of its own the record's validation rows name it, and no pool example validates
    own_val = [name for name, _ in record_of(drawn, THREE)["val"]]
    record = record_of(draw_split(THREE, seed=3, val_size=0, num_labeled=7, num_classes=3), THREE)
    record["val"] = [(name, "0") for name in own_val]
    own = replay(record, own_val=own_val, val_size=0)
    assert own.val.size == 0 and own.train.tolist() == order.tolist()


def test_a_record_naming_an_example_the_data_lacks_is_refused_in_one_line():
    record = record_of(draw_split(THREE, seed=3, val_size=12, num_labeled=7, num_classes=3), THREE)
    record["labeled"][0] = ("img99", "0")
    with pytest.raises(ConfigError) as raised:
        replay(record)
    assert str(raised.value) == (
        "data.split_from: run/labeled_examples.csv lists labeled example 'img99', which the data lacks"
    )


@pytest.mark.parametrize(
    "edit, options, match",
    [
        (lambda r: r["labeled"].__setitem__(0, (r["labeled"][0][0], "2")), {}, "labels labeled example .* the data"),
        (lambda r: None, {"val_size": 10}, "lists 12 validation examples; data.val_size is 10"),
        (lambda r: None, {"num_labeled": 6}, r"not the numbers per class that data.num_labeled \(6\) asks for"),
        (lambda r: r["labeled"].append(r["val"][0]), {"num_labeled": 8}, "both as labeled and as validation"),
        (lambda r: None, {"own_val": ["a"], "val_size": 0}, "other validation examples than the data's own"),
    ],
)
def test_a_record_that_does_not_fit_the_data_is_refused(edit, options, match):
    record = record_of(draw_split(THREE, seed=3, val_size=12, num_labeled=7, num_classes=3), THREE)
    edit(record)
    with pytest.raises(ConfigError, match="^data.split_from: run/labeled_examples.csv .*" + match):
        replay(record, **options)


def test_labeled_weights_start_balanced_and_anneal_to_the_final_weights():
    labels = np.array([0] * 8 + [1] * 2 + [2] * 2)
    assert labeled_weights(labels, 3, None) is None  # no ratio: no balancing
    weights = labeled_weights(labels, 3, 0.5)
    assert weights is not None
    start = weights(0)
    assert start.tolist() == [12 / 8] * 8 + [12 / 2] * 4  # inverse class frequency
    assert [start[labels == c].sum() for c in range(3)] == [12.0, 12.0, 12.0]  # each class as likely
    assert weights(1).tolist() == [(1.5 + 1) / 2] * 8 + [(6 + 1) / 2] * 4  # halfway to all 1
    assert np.allclose(weights(60), 1.0)
    given = labeled_weights(labels, 3, 0.9, balance_weights=[2, 1, 0], final_balance_weights=[1, 3, 1])
    assert given is not None and given(0).tolist() == [2.0] * 8 + [1.0] * 2 + [0.0] * 2
    assert np.allclose(given(1), class_weights(labels, 0.9, np.array([2.0, 1, 0]), np.array([1.0, 3, 1]), 1))
    assert np.allclose(given(1), [0.9 * 2 + 0.1] * 8 + [0.9 + 0.3] * 2 + [0.1] * 2)
    # a class without labeled examples gets no weight: 0 by default, any given weight is never drawn
    gap = labeled_weights(np.array([0, 0, 2]), 3, 1.0)
    assert gap is not None and gap(0).tolist() == [1.5, 1.5, 3.0]
    with pytest.raises(ConfigError, match="balance weights give no weight to any class that has labeled examples"):
        labeled_weights(labels, 3, 0.5, balance_weights=[0, 0, 0])


def test_labeled_weights_of_numeric_labels_balance_their_nearest_grades():
    """Regression: a label counts in its nearest grade 0 … K-1 (once a crash in np.bincount)."""
    numbers = np.array([0.0] * 8 + [1.2, 0.9] + [2.0, 3.7], dtype=np.float32)  # 3.7: past the top grade
    weights = labeled_weights(numbers, 3, 0.5)
    assert weights is not None
    assert weights(0).tolist() == [12 / 8] * 8 + [12 / 2] * 4  # as the class indices 0 x8, 1 x2, 2 x2
