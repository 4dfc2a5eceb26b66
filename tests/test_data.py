import csv
import gzip
import hashlib
import json
import os
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch

from lit_ssgan.data import (
    DigitsDataModule,
    EpochSampler,
    FashionMNISTDataModule,
    MNISTDataModule,
    ResumableDataLoader,
    SemiSupervisedDataModule,
    read_idx,
)
from lit_ssgan.data.datamodule import UNKNOWN_LABEL
from lit_ssgan.data.loaders import PREFETCH_FACTOR, auto_workers
from lit_ssgan.data.record import write_record
from lit_ssgan.errors import ConfigError, MissingFileError


class ToyDataModule(SemiSupervisedDataModule):
    """60 random 4×4 images of 3 classes; each image's first pixel is its index in the pool."""

    num_classes = 3
    image_shape = (1, 4, 4)

    def __init__(self, labels=None, **kwargs):
        kwargs.setdefault("batch_size", 8)
        kwargs.setdefault("num_labeled", 6)
        super().__init__(**kwargs)
        self.labels = np.arange(60) % 3 if labels is None else np.asarray(labels)

    def load_train_pool(self):
        images = np.random.default_rng(0).integers(0, 256, (60, 4, 4, 1), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(60)
        return images, self.labels

    def load_test_set(self):
        return self.load_train_pool()


def pool_ids(dataset) -> set[int]:
    return set(np.asarray(dataset.images[:, 0, 0, 0]).tolist())


def test_split_is_balanced_disjoint_and_hides_labels():
    dm = ToyDataModule(num_labeled=7, val_size=12, data_seed=3, unlabeled_includes_labeled=False)
    dm.setup("fit")
    assert np.bincount(dm.labeled.labels.numpy(), minlength=3).tolist() == [3, 2, 2]
    labeled, unlabeled, val = pool_ids(dm.labeled), pool_ids(dm.unlabeled), pool_ids(dm.val)
    assert len(val) == 12 and len(labeled) == 7 and len(unlabeled) == 60 - 12 - 7
    assert not (labeled & unlabeled) and not (labeled & val) and not (unlabeled & val)
    assert (dm.unlabeled.labels == UNKNOWN_LABEL).all()


def test_unlabeled_pool_options():
    dm = ToyDataModule(val_size=12, unlabeled_includes_labeled=True, unlabeled_includes_val=True)
    dm.setup("fit")
    assert pool_ids(dm.unlabeled) == set(range(60))
    assert pool_ids(dm.labeled) <= pool_ids(dm.unlabeled)


@pytest.mark.parametrize("includes_labeled", [False, True])
def test_the_split_records_the_examples_it_labeled_as_the_streams_serve_them(includes_labeled):
    dm = ToyDataModule(num_labeled=7, val_size=12, data_seed=3, unlabeled_includes_labeled=includes_labeled)
    dm.setup("fit")
    record = dm.labeled_examples
    labeled = {int(name) for name, _ in record["labeled"]}
    assert labeled == pool_ids(dm.labeled) and {int(name) for name, _ in record["val"]} == pool_ids(dm.val)
    assert all(label == str(int(name) % 3) for name, label in record["labeled"] + record["val"])  # the pool's labels
    # the labeled examples are in the unlabeled stream exactly when unlabeled_includes_labeled says so
    served = set()
    for x, _ in dm.train_dataloader()["unlabeled"]:
        served |= set((x[:, 0, 0, 0] * 255).round().int().tolist())
    assert (labeled <= served) if includes_labeled else not (labeled & pool_ids(dm.unlabeled))
    assert not (pool_ids(dm.val) & pool_ids(dm.unlabeled))
    # the same data_seed, the same record; another, another
    again = ToyDataModule(num_labeled=7, val_size=12, data_seed=3, unlabeled_includes_labeled=includes_labeled)
    other = ToyDataModule(num_labeled=7, val_size=12, data_seed=4, unlabeled_includes_labeled=includes_labeled)
    again.setup("fit"), other.setup("fit")
    assert again.labeled_examples == record and other.labeled_examples != record


def served_order(dm) -> list[int]:
    return [i for x, _ in dm.train_dataloader()["unlabeled"] for i in (x[:, 0, 0, 0] * 255).round().int().tolist()]


def test_split_from_a_runs_record_gives_that_runs_draw(tmp_path):
    options = {"num_labeled": 7, "val_size": 12, "unlabeled_includes_labeled": True}
    drawn = ToyDataModule(data_seed=3, **options)
    torch.manual_seed(0)  # the order of the epochs (the data module's shuffle_seed)
    drawn.setup("fit")
    write_record(tmp_path / "labeled_examples.csv", drawn.labeled_examples)
    # the same seed: the same split and the same unlabeled order, as the run the record came from
    again = ToyDataModule(data_seed=3, split_from=str(tmp_path / "labeled_examples.csv"), **options)
    torch.manual_seed(0)
    again.setup("fit")
    assert again.labeled_examples == drawn.labeled_examples
    assert served_order(again) == served_order(drawn)
    # another seed: the record's labeled and validation examples all the same, not that seed's own draw
    other = ToyDataModule(data_seed=4, split_from=str(tmp_path / "labeled_examples.csv"), **options)
    own = ToyDataModule(data_seed=4, **options)
    other.setup("fit"), own.setup("fit")
    assert other.labeled_examples == drawn.labeled_examples != own.labeled_examples
    assert pool_ids(other.labeled) == pool_ids(drawn.labeled) and pool_ids(other.val) == pool_ids(drawn.val)
    assert pool_ids(other.unlabeled) == pool_ids(drawn.unlabeled)


@pytest.mark.parametrize(
    ("edit", "options", "match"),
    [
        (lambda rows: rows[:1] + [["labeled", "99", "0"]] + rows[2:], {}, "labeled example '99', which the data lacks"),
        (lambda rows: rows[:1] + [[*rows[1][:2], str((int(rows[1][2]) + 1) % 3)]] + rows[2:], {}, "the data labels it"),
        (lambda rows: rows, {"val_size": 10}, "12 validation examples; data.val_size is 10"),
        (lambda rows: rows, {"num_labeled": 6}, r"not the numbers per class that data.num_labeled \(6\)"),
        (lambda rows: [["a", "b"]], {}, "is not a run's labeled_examples.csv"),
    ],
)
def test_a_record_that_does_not_fit_the_data_is_named(tmp_path, edit, options, match):
    drawn = ToyDataModule(num_labeled=7, val_size=12, data_seed=3)
    drawn.setup("fit")
    path = tmp_path / "labeled_examples.csv"
    write_record(path, drawn.labeled_examples)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(edit(rows))
    with pytest.raises(ConfigError, match=match):
        dm = ToyDataModule(data_seed=3, split_from=str(path), **{"num_labeled": 7, "val_size": 12, **options})
        dm.setup("fit")


def test_a_missing_record_is_named_when_the_data_module_is_built(tmp_path):
    with pytest.raises(MissingFileError, match="data.split_from: no file .*nothing.csv"):
        ToyDataModule(split_from=str(tmp_path / "nothing.csv"))


def test_the_checkpointed_state_records_the_run_which_binds_a_resumed_fit_alone():
    dm = ToyDataModule(val_size=12, data_seed=3, unlabeled_includes_labeled=False)
    dm.setup("fit")
    state = dm.state_dict()
    run = {"data_seed": 3, "num_labeled": 6, "val_size": 12, "unlabeled_includes_labeled": False}
    run |= {"unlabeled_includes_val": False, "batch_size": 8, "batches_per_epoch": None, "training_images": 42}
    assert state == {"shuffle_seed": dm.shuffle_seed, "run": run}
    other = ToyDataModule(val_size=12, data_seed=4, batch_size=4)
    other.trainer = SimpleNamespace(state=SimpleNamespace(fn="test"), ckpt_path="run.ckpt")
    other.load_state_dict(state)  # test, validate, predict: another run's options are theirs to choose
    assert other.shuffle_seed == dm.shuffle_seed
    other.trainer.state.fn = "fit"
    other.load_state_dict({"shuffle_seed": 5})  # a checkpoint older than the record: nothing to check
    with pytest.raises(ConfigError, match=r"^--ckpt_path run.ckpt: data.data_seed is 3 in the checkpoint's run but 4 "):
        other.load_state_dict(state)
    assert other.shuffle_seed == 5  # refused: nothing taken from the checkpoint


def test_data_seed_decides_the_split():
    def labeled_ids(seed):
        dm = ToyDataModule(val_size=10, data_seed=seed)
        dm.setup("fit")
        return pool_ids(dm.labeled)

    assert labeled_ids(1) == labeled_ids(1)
    assert labeled_ids(1) != labeled_ids(2)


def test_train_loaders_one_epoch_is_one_pass_over_unlabeled():
    dm = ToyDataModule(val_size=12, unlabeled_includes_labeled=False)
    dm.setup("fit")
    loaders = dm.train_dataloader()
    assert set(loaders) == {"labeled", "unlabeled", "unlabeled_g"}
    batches = {name: list(loader) for name, loader in loaders.items()}
    assert all(len(b) == 42 // 8 for b in batches.values())  # drop_last: 5 full batches
    x, y = batches["labeled"][0]
    assert x.shape == (8, 1, 4, 4) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    # the 6 labeled examples are cycled to fill every batch, each pass in a new order
    labeled_seen = torch.cat([x[:, 0, 0, 0] for x, _ in batches["labeled"]])
    assert len(labeled_seen) == 40 and set((labeled_seen * 255).round().int().tolist()) == pool_ids(dm.labeled)
    # the generator's unlabeled batches come in an order of their own
    first = [x[:, 0, 0, 0] for x, _ in batches["unlabeled"]]
    second = [x[:, 0, 0, 0] for x, _ in batches["unlabeled_g"]]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_batches_per_epoch_sets_the_epoch_length():
    dm = ToyDataModule(batches_per_epoch=11)
    dm.setup("fit")
    assert all(len(loader) == 11 for loader in dm.train_dataloader().values())


def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    sampler = EpochSampler(10, num_samples=25, seed=7)
    first = list(sampler)
    assert len(first) == 25 and sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))
    assert list(EpochSampler(10, num_samples=25, seed=7)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_epoch_sampler_start_skips_once_into_the_same_order():
    full = list(EpochSampler(10, num_samples=25, seed=7))
    sampler = EpochSampler(10, num_samples=25, seed=7, start=15)
    assert list(sampler) == full[15:]  # a resumed epoch: the indices not yet seen, same order
    assert list(sampler) == full  # and the next pass starts at the beginning


@pytest.mark.parametrize("num_workers", [0, 1])  # with a worker: persistent, prefetching ahead
def test_training_loaders_save_their_place_and_resume_after_it(num_workers):
    dm = ToyDataModule(val_size=12, unlabeled_includes_labeled=False, num_workers=num_workers)
    dm.setup("fit")
    full = {name: [x[:, 0, 0, 0] for x, _ in loader] for name, loader in dm.train_dataloader().items()}
    loaders = dm.train_dataloader()
    for name, loader in loaders.items():
        assert isinstance(loader, ResumableDataLoader)
        iterator = iter(loader)
        next(iterator), next(iterator)
        assert loader.state_dict() == {"batches_yielded": 2}
        fresh = dm.train_dataloader()[name]
        fresh.load_state_dict(loader.state_dict())
        rest = [x[:, 0, 0, 0] for x, _ in fresh]
        assert len(rest) == len(full[name]) - 2
        assert all(torch.equal(a, b) for a, b in zip(rest, full[name][2:], strict=True))
        assert len(list(fresh)) == len(full[name])  # the next epoch starts at its beginning again
        # a finished epoch: the next one starts afresh
        fresh.load_state_dict({"batches_yielded": len(fresh)})
        assert len(list(fresh)) == len(full[name])


def test_train_augmentations_apply_to_training_images_only():
    dm = ToyDataModule(val_size=10, train_transforms=[A.HorizontalFlip(p=1.0)])
    dm.setup("fit")
    raw = torch.from_numpy(np.asarray(dm.labeled.images)).permute(0, 3, 1, 2).float() / 255
    x, _ = dm.labeled.__getitems__(list(range(len(dm.labeled))))
    torch.testing.assert_close(x, raw.flip(-1))
    xv, _ = dm.val.__getitems__([0])
    torch.testing.assert_close(xv[0], torch.from_numpy(dm.val.images[0]).permute(2, 0, 1).float() / 255)


def test_labeled_transforms_augment_the_labeled_images_alone_after_the_training_ones():
    dm = ToyDataModule(
        val_size=10, train_transforms=[A.HorizontalFlip(p=1.0)], labeled_transforms=[A.VerticalFlip(p=1.0)]
    )
    dm.setup("fit")

    def raw(dataset):
        return torch.from_numpy(np.asarray(dataset.images)).permute(0, 3, 1, 2).float() / 255

    labeled, _ = dm.labeled.__getitems__(list(range(len(dm.labeled))))
    unlabeled, _ = dm.unlabeled.__getitems__(list(range(len(dm.unlabeled))))
    torch.testing.assert_close(labeled, raw(dm.labeled).flip(-1).flip(-2))
    torch.testing.assert_close(unlabeled, raw(dm.unlabeled).flip(-1))


def test_augmentation_is_a_function_of_the_batch_so_reruns_and_resumed_runs_repeat_it():
    crop = [A.PadIfNeeded(12, 12, border_mode=0), A.RandomCrop(8, 8)]
    batches = []
    for _ in range(2):  # two runs, each with its own albumentations pipeline
        dm = ToyDataModule(val_size=10, train_transforms=crop)
        dm.setup("fit")
        batches.append([dm.unlabeled.__getitems__(order)[0] for order in ([0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3])])
    (first, reversed_order, again), rerun = batches
    assert torch.equal(first, again) and all(torch.equal(a, b) for a, b in zip(batches[0], rerun, strict=True))
    assert not torch.equal(first, reversed_order.flip(0))  # another batch: other crops


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_labeled": 2}, r"num_labeled must be at least the number of classes \(3\)"),
        ({"num_labeled": 55, "val_size": 10}, r"num_labeled \(55\) is more than the training examples left .* \(50\)"),
        ({"val_size": 60}, "val_size"),
        ({"batch_size": 100}, "smaller than batch_size"),
    ],
)
def test_bad_split_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyDataModule(**kwargs).setup("fit")


def test_labels_outside_the_classes_are_refused():
    labels = np.arange(60) % 3
    labels[5] = 3
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[3\]"):
        ToyDataModule(labels=labels).setup("fit")


def test_class_too_small_for_balanced_labels_is_refused():
    labels = np.zeros(60, dtype=int)
    labels[:2] = [1, 2]
    with pytest.raises(ValueError, match="needs 2 labeled examples of class '1'; there are 1"):
        ToyDataModule(labels=labels, num_labeled=6).setup("fit")
    with pytest.raises(ValueError, match="needs 30 labeled examples of class '0'; there are"):
        ToyDataModule(num_labeled=[30, 2, 2]).setup("fit")


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_truncation(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "b").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match=r"b is truncated"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="c is not an IDX file"):
        read_idx(tmp_path / "c")


def test_missing_mnist_file_is_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((20, 28, 28)))
    dm = MNISTDataModule(data_dir=str(tmp_path), num_labeled=10)
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz"):
        dm.setup("fit")


def test_mnist_reads_the_real_files(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), num_labeled=100, val_size=10000)
    dm.setup("fit")
    assert len(dm.labeled) == 100 and len(dm.unlabeled) == 50000 and len(dm.val) == 10000
    assert np.bincount(dm.labeled.labels.numpy()).tolist() == [10] * 10
    dm.setup("test")
    assert len(dm.test) == 10000
    assert np.bincount(dm.test.labels.numpy()).tolist()[:3] == [980, 1135, 1032]  # the published counts


def test_fashion_mnist_reads_the_real_files(fashion_mnist_dir):
    dm = FashionMNISTDataModule(data_dir=str(fashion_mnist_dir))
    dm.setup("test")
    assert np.bincount(dm.test.labels.numpy()).tolist() == [1000] * 10


def test_digits_split():
    dm = DigitsDataModule()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.test) == 500 and len(dm.labeled) == 50 and len(dm.val) == 200
    assert len(dm.unlabeled) == 1797 - 500 - 200
    assert np.asarray(dm.test.images).max() == 255


@pytest.mark.parametrize(
    "options, record, unlabeled",
    [
        ({}, "2ce8d32d30fcfc0a", "c8021d1275ae6ebd"),
        (
            {"data_seed": 7, "num_labeled": [2, 8] + [5] * 8, "val_size": 100, "unlabeled_includes_labeled": False},
            "f4467bf114db4f8b",
            "6cd46156e373ec65",
        ),
    ],
)
def test_the_digits_data_module_serves_the_split_it_served_before_the_split_moved_out(options, record, unlabeled):
    # digests of the record (labeled and validation examples, in order) and of the unlabeled images in
    # their order, as the data module gave them at commit d4b8dac (the split still inside it)
    dm = DigitsDataModule(**options)
    dm.setup("fit")
    assert hashlib.sha256(json.dumps(dm.labeled_examples).encode()).hexdigest()[:16] == record
    assert hashlib.sha256(np.asarray(dm.unlabeled.images).tobytes()).hexdigest()[:16] == unlabeled


def test_ddp_processes_share_each_epoch_and_together_make_one_pass():
    whole = EpochSampler(12, num_samples=12, seed=3)
    shares = [list(EpochSampler(12, num_samples=6, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == list(range(12))
    assert shares[0] == list(whole)[0::2] and shares[1] == list(whole)[1::2]


def test_per_class_num_labeled_draws_an_imbalanced_labeled_set():
    dm = ToyDataModule(num_labeled=[5, 1, 2])
    dm.setup("fit")
    assert np.bincount(dm.labeled.labels.numpy(), minlength=3).tolist() == [5, 1, 2]


def labeled_classes_drawn(dm: ToyDataModule, epoch: int) -> np.ndarray:
    loader = dm.train_dataloader()["labeled"]
    loader.sampler.set_epoch(epoch)
    labels = torch.cat([y for _, y in loader]).numpy()
    return np.bincount(labels, minlength=3) / len(labels)


def test_class_balancing_starts_balanced_and_anneals_to_the_final_weights():
    dm = ToyDataModule(num_labeled=[12, 3, 3], batches_per_epoch=500, balance_ratio=0.5)
    dm.setup("fit")
    first, later = labeled_classes_drawn(dm, 0), labeled_classes_drawn(dm, 20)
    # epoch 0: inverse class frequency, so the classes come equally often
    assert first == pytest.approx([1 / 3] * 3, abs=0.02)
    # later: alpha = 0.5**20, final weights 1 each: the labeled set's own frequencies, 12:3:3
    assert later == pytest.approx([12 / 18, 3 / 18, 3 / 18], abs=0.02)
    # a function of (seed, epoch) only: the same draw again, whatever happened in between
    assert np.array_equal(labeled_classes_drawn(dm, 0), first)


def test_balance_weights_given_explicitly():
    dm = ToyDataModule(num_labeled=6, batches_per_epoch=500, balance_ratio=1.0, balance_weights=[2, 1, 1])
    dm.setup("fit")
    assert labeled_classes_drawn(dm, 3) == pytest.approx([0.5, 0.25, 0.25], abs=0.02)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"balance_ratio": 1.5}, r"balance_ratio must be a float in \[0, 1\]"),
        ({"balance_ratio": -0.1}, r"balance_ratio must be a float in \[0, 1\]"),
        ({"balance_weights": [1, 1, 1]}, "need data.balance_ratio"),
        ({"balance_ratio": 0.9, "balance_weights": [1, -1, 1]}, "balance_weights must be 0 or more"),
        ({"balance_ratio": 0.9, "final_balance_weights": [1, 1]}, "final_balance_weights needs one weight for each"),
        ({"num_labeled": [2, 2, 2, 2]}, "one count .* for each of the 3 classes"),
        ({"num_labeled": [2, -1, 2]}, "one count"),
    ],
)
def test_bad_balancing_and_per_class_counts_are_refused_when_the_data_module_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyDataModule(**kwargs)


def fake_trainer(device: str, processes_per_node: int = 1) -> SimpleNamespace:
    """What the data module reads of its trainer: the device its step runs on, and the processes."""
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)),
        num_devices=processes_per_node,
        global_rank=0,
        world_size=processes_per_node,
    )


@pytest.fixture
def sixteen_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)


@pytest.mark.parametrize(
    "device, processes, streams, workers",
    [
        ("cpu", 1, 3, 0),  # the step's threads take the cores
        ("cuda", 1, 3, 5),  # 16 cores, one for the step's process, 15 shared by the three training streams
        ("cuda", 1, 1, 15),  # an evaluation loader: one stream
        ("cuda", 2, 3, 2),  # two processes on the machine: 8 cores each, 7 for workers
        ("cuda", 8, 3, 1),  # 2 cores a process: still one worker a stream
    ],
)
def test_num_workers_auto_shares_the_machines_cores_among_processes_and_streams(
    sixteen_cores, device, processes, streams, workers
):
    assert auto_workers(device, processes, streams) == workers


def test_on_a_gpu_auto_workers_pin_prefetch_and_persist_and_each_training_stream_gets_its_share(sixteen_cores):
    dm = ToyDataModule(val_size=12, num_workers="auto")
    dm.trainer = fake_trainer("cuda")
    dm.setup("fit")
    loaders = [*dm.train_dataloader().values(), dm.val_dataloader()]
    assert [loader.num_workers for loader in loaders] == [5, 5, 5, 15]
    for loader in loaders:
        assert loader.pin_memory and loader.persistent_workers and loader.prefetch_factor == PREFETCH_FACTOR == 2


@pytest.mark.parametrize("num_workers", [0, "auto"])
def test_on_a_cpu_the_loaders_read_in_the_step_s_process_and_pin_nothing(sixteen_cores, num_workers):
    dm = ToyDataModule(val_size=12, num_workers=num_workers)
    dm.trainer = fake_trainer("cpu")
    dm.setup("fit")
    for loader in [*dm.train_dataloader().values(), dm.val_dataloader()]:
        assert loader.num_workers == 0 and not loader.pin_memory and not loader.persistent_workers
        assert loader.prefetch_factor is None


def test_workers_asked_for_on_a_cpu_prefetch_and_persist_without_pinning():
    dm = ToyDataModule(val_size=12, num_workers=2)
    dm.setup("fit")  # no trainer: a CPU run
    for loader in [*dm.train_dataloader().values(), dm.val_dataloader()]:
        assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 2
        assert not loader.pin_memory


@pytest.mark.parametrize("num_workers", [-1, "many", True, 2.5, None])
def test_a_bad_num_workers_is_refused_naming_it_when_the_data_module_is_built(num_workers):
    with pytest.raises(ConfigError, match=r"^data.num_workers must be 0 or more, or 'auto' .*; got"):
        ToyDataModule(num_workers=num_workers)
