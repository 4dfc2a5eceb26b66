"""Your own images: folders of PNGs (made here from the digits), trained through
configs/image_folder.yaml, predicted to CSV; and every bad input refused with a clear message."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lit_ssgan import SemiSupervisedGAN
from lit_ssgan.cli import cli
from lit_ssgan.data import ImageFolderDataModule
from lit_ssgan.data.decoding import read_image
from lit_ssgan.data.record import write_record
from lit_ssgan.errors import ConfigError
from tests.helpers import CONFIGS, folder_args
from tests.helpers import write_png as write


def test_train_test_and_predict_a_folder_of_images_to_csv(folders, tmp_path):
    test = ["--data.test_dir", str(folders / "test"), "--test_after_fit", "true"]
    run = cli(folder_args(folders, tmp_path, "--trainer.max_epochs", "15", *test))
    assert run.datamodule.class_names == [str(d) for d in range(10)]
    assert run.trainer.callback_metrics["test/acc"] > 0.8  # 100 labels, 16x16 digits
    log_dir = Path(run.trainer.log_dir)
    assert (log_dir / "confusion_matrix.png").is_file()
    with open(log_dir / "per_class.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["class"] for row in table] == [str(d) for d in range(10)]
    assert sum(int(row["support"]) for row in table) == 300
    matrix = cv2.imread(str(log_dir / "confusion_matrix.png"))
    assert matrix.shape[0] > 10 * 48 and matrix.shape[1] > 10 * 48
    # the record of what the run used and what the test scored
    with open(log_dir / "labeled_examples.csv", newline="") as f:
        examples = list(csv.reader(f))
    assert examples[0] == ["split", "example", "label"] and len(examples) == 1 + 100  # no val: val_size 0
    assert all(split == "labeled" and (folders / "labeled" / name).is_file() for split, name, _ in examples[1:])
    assert all(Path(name).parent.name == label for _, name, label in examples[1:])  # class folder = label
    recorded = torch.load(log_dir / "checkpoints" / "last.ckpt", weights_only=True)["labeled_examples"]
    assert recorded == {"labeled": [row[1:] for row in examples[1:]], "val": []}
    report = json.loads((log_dir / "test.json").read_text())
    assert report["checkpoint"] is None and report["data"]["test_dir"] == str(folders / "test")  # fit's own weights
    assert report["scores"]["test/acc"] == pytest.approx(run.trainer.callback_metrics["test/acc"].item())

    # predict a folder of new images from the checkpoint alone: the classes come from it
    ckpt = str(log_dir / "checkpoints" / "last.ckpt")
    out = tmp_path / "out" / "predictions.csv"
    predict = ["--ckpt_path", ckpt, "--data.predict_dir", str(folders / "new"), "--predictions_csv", str(out)]
    cli(folder_args(folders, tmp_path, *predict, subcommand="predict"))
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "prediction", *[str(d) for d in range(10)]]
    assert [row[0] for row in rows[1:]] == sorted(p.name for p in (folders / "new").iterdir())  # stable order
    truth = dict(line.split(",") for line in (folders / "truth.csv").read_text().splitlines())
    correct = sum(row[1] == truth[row[0]] for row in rows[1:])
    assert correct >= 80
    for row in rows[1:]:
        probs = [float(p) for p in row[2:]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4) and row[1] == str(int(np.argmax(probs)))
    source = json.loads(out.with_suffix(".json").read_text())
    assert source["checkpoint"] == str(Path(ckpt).resolve()) and source["data"]["predict_dir"] == str(folders / "new")
    assert source["rows"] == 100 and source["datamodule"] == "ImageFolderDataModule"


def test_labels_from_a_csv_with_or_without_extensions(folders, tmp_path):
    flat = tmp_path / "flat"
    rows = ["filename,label"]
    for i, path in enumerate(sorted((folders / "labeled").rglob("*.png"))):
        name = f"x{i}.png"
        write(flat / name, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        rows.append(f"{name if i % 2 else Path(name).stem},{path.parent.name}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    dm = ImageFolderDataModule(
        labeled_dir=str(flat),
        labels_csv=str(tmp_path / "labels.csv"),
        unlabeled_dir=str(folders / "unlabeled"),
        image_size=8,
        channels=1,
        batch_size=20,
    )
    dm.setup("fit")
    assert dm.class_names == [str(d) for d in range(10)] and len(dm.labeled) == 100
    assert np.bincount(dm.labeled.labels.numpy()).tolist() == [10] * 10


def test_images_of_other_sizes_and_channels_are_resized_and_converted(tmp_path):
    grey = write(tmp_path / "grey.png", np.full((20, 30), 200, np.uint8))
    rgba = write(tmp_path / "rgba.png", np.dstack([np.full((5, 5), v, np.uint8) for v in (10, 20, 30, 255)]))
    jpeg = write(tmp_path / "colour.jpg", np.dstack([np.full((64, 64), v, np.uint8) for v in (0, 0, 255)]))
    tiff = write(tmp_path / "sixteen.tif", np.full((8, 8), 65535, np.uint16))
    assert read_image(grey, 16, 3).shape == (16, 16, 3) and read_image(grey, 16, 3)[0, 0].tolist() == [200] * 3
    assert read_image(rgba, 8, 3)[0, 0].tolist() == [30, 20, 10]  # RGB order, alpha dropped
    assert read_image(jpeg, 32, 3)[16, 16, 0] > 240  # red, from OpenCV's BGR
    assert read_image(jpeg, 32, 1).shape == (32, 32, 1)
    assert read_image(tiff, 8, 1)[0, 0, 0] == 255


def make_dm(folders: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("labeled_dir", str(folders / "labeled"))
    kwargs.setdefault("unlabeled_dir", str(folders / "unlabeled"))
    return ImageFolderDataModule(image_size=8, channels=1, batch_size=20, **kwargs)


def test_a_runs_record_of_file_names_gives_its_draw_again(folders, tmp_path):
    drawn = make_dm(folders, num_labeled=30, val_size=20, data_seed=1)
    drawn.setup("fit")
    record = tmp_path / "labeled_examples.csv"
    write_record(record, drawn.labeled_examples)
    again = make_dm(folders, num_labeled=30, val_size=20, data_seed=2, split_from=str(record))
    own = make_dm(folders, num_labeled=30, val_size=20, data_seed=2)
    again.setup("fit"), own.setup("fit")
    assert again.labeled_examples == drawn.labeled_examples != own.labeled_examples
    assert torch.equal(again.labeled.__getitems__(range(30))[0], drawn.labeled.__getitems__(range(30))[0])


def test_a_record_with_a_validation_folder_of_its_own_must_name_that_folder(folders, tmp_path):
    drawn = make_dm(folders, num_labeled=30, val_dir=str(folders / "test"), data_seed=1)
    drawn.setup("fit")
    record = tmp_path / "labeled_examples.csv"
    write_record(record, drawn.labeled_examples)
    again = make_dm(folders, num_labeled=30, val_dir=str(folders / "test"), data_seed=2, split_from=str(record))
    again.setup("fit")
    assert again.labeled_examples == drawn.labeled_examples and len(again.val) == 300
    rows = drawn.labeled_examples
    write_record(record, {"labeled": rows["labeled"], "val": rows["val"][1:]})  # one validation image fewer
    with pytest.raises(ConfigError, match="lists other validation examples than the data's own"):
        make_dm(folders, num_labeled=30, val_dir=str(folders / "test"), split_from=str(record)).setup("fit")


def test_num_labeled_on_folders_takes_that_many_per_class_and_serves_the_rest_unlabeled(folders):
    dm = make_dm(folders, num_labeled=30, unlabeled_includes_labeled=False)
    dm.setup("fit")
    assert dm.labeled is not None and dm.unlabeled is not None
    assert dm.labeled.labels.bincount().tolist() == [3] * 10
    assert len(dm.unlabeled) == 1000 + 70  # unlabeled_dir, and the labeled pool's other images
    chosen = {image.tobytes() for image in dm.labeled.images}
    assert not chosen & {image.tobytes() for image in dm.unlabeled.images}
    # a list asks per class; the same data_seed chooses the same images
    again = make_dm(folders, num_labeled=[10] + [1] * 9, unlabeled_includes_labeled=False)
    again.setup("fit")
    assert again.labeled is not None and again.labeled.labels.bincount().tolist() == [10] + [1] * 9
    same = make_dm(folders, num_labeled=30, unlabeled_includes_labeled=False)
    same.setup("fit")
    assert same.labeled is not None and np.array_equal(same.labeled.images, dm.labeled.images)


def test_a_labeled_pool_alone_with_num_labeled_trains_the_rest_unlabeled(folders):
    """No unlabeled_dir: each data_seed draws its labels from the pool (what ``lit-ssgan draws`` varies)."""
    drawn = {}
    for seed in (1, 2):
        dm = make_dm(folders, unlabeled_dir=None, num_labeled=30, unlabeled_includes_labeled=False, data_seed=seed)
        dm.setup("fit")
        assert dm.labeled is not None and dm.unlabeled is not None
        assert dm.labeled.labels.bincount().tolist() == [3] * 10
        assert len(dm.unlabeled) == 70  # the pool's other images, and nothing else
        drawn[seed] = {image.tobytes() for image in dm.labeled.images}
        assert not drawn[seed] & {image.tobytes() for image in dm.unlabeled.images}
    assert drawn[1] != drawn[2]
    # with neither, there is nothing unlabeled to train on: the message names both ways
    with pytest.raises(ConfigError, match="fit needs data.unlabeled_dir, or data.num_labeled"):
        make_dm(folders, unlabeled_dir=None).setup("fit")


def test_fit_without_unlabeled_images_is_refused_before_any_image_is_read(folders, tmp_path, monkeypatch):
    """Before fit (and a draws study) reads a folder of thousands of images, not after."""
    monkeypatch.setattr(ImageFolderDataModule, "_read", lambda *_: pytest.fail("an image was read"))
    with pytest.raises(ConfigError, match="fit needs data.unlabeled_dir, or data.num_labeled"):
        make_dm(folders, unlabeled_dir=None).check_fit_set()
    make_dm(folders, unlabeled_dir=None, num_labeled=30).check_fit_set()
    with pytest.raises(ConfigError, match="fit needs data.unlabeled_dir, or data.num_labeled"):
        cli(folder_args(folders, tmp_path / "run", "--data.unlabeled_dir", "null"))
    assert not (tmp_path / "run").exists()  # refused before the run's folder was made


def test_num_labeled_beyond_a_class_on_folders_is_refused_naming_the_class(folders, tmp_path):
    with pytest.raises(ValueError, match="needs 11 labeled examples of class '0'; there are 10"):
        make_dm(folders, num_labeled=[11] + [1] * 9).setup("fit")
    with pytest.raises(ValueError, match=r"num_labeled as a list needs one count .* for each of the 10 classes"):
        make_dm(folders, num_labeled=[1, 1])  # refused when built, before any image is read
    # on the command line: one line, before training
    args = folder_args(folders, tmp_path, "--data.num_labeled", "[11, 1, 1, 1, 1, 1, 1, 1, 1, 1]")
    with pytest.raises(ValueError, match="class '0'"):
        cli(args)
    with pytest.raises(ValueError, match="give data.val_size or data.val_dir, not both"):
        make_dm(folders, val_dir=str(folders / "test"), val_size=10)  # refused when built


def test_a_corrupt_image_is_named_or_skipped_and_reported(folders, tmp_path):
    unlabeled = tmp_path / "unlabeled"
    for path in sorted((folders / "unlabeled").glob("*.png"))[:30]:
        write(unlabeled / path.name, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    (unlabeled / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png could not be read"):
        make_dm(folders, unlabeled_dir=str(unlabeled)).setup("fit")
    dm = make_dm(folders, unlabeled_dir=str(unlabeled), skip_bad_images=True)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images, e.g. .*broken.png"):
        dm.setup("fit")
    assert len(dm.unlabeled) == 30 + 100  # the readable ones, plus the labeled images


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: {"labeled_dir": str(root / "nowhere")}, "data.labeled_dir: no folder"),
        (lambda root: {"labeled_dir": str(root / "empty_classes")}, "class folder .*7 has no images"),
        (lambda root: {"labeled_dir": str(root / "flat_only")}, "has no class subfolders"),
        (lambda root: {"labels_csv": str(root / "missing.csv")}, r"missing.csv, row 3: no image 'ghost.png'"),
        (lambda root: {"labels_csv": str(root / "twice.csv")}, "row 3: .* is listed twice"),
        (lambda root: {"labels_csv": str(root / "outside.csv")}, r"row 2: '\.\./secret.png' is outside"),
    ],
)
def test_bad_folders_and_csvs_are_refused_naming_the_place(folders, tmp_path, make, match):
    (tmp_path / "empty_classes" / "7").mkdir(parents=True)
    write(tmp_path / "empty_classes" / "3" / "a.png", np.zeros((8, 8), np.uint8))
    write(tmp_path / "flat_only" / "a.png", np.zeros((8, 8), np.uint8))
    flat = tmp_path / "flat"
    for name in ("a.png", "b.png"):
        write(flat / name, np.zeros((8, 8), np.uint8))
    write(tmp_path / "secret.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "missing.csv").write_text("filename,label\na.png,1\nghost.png,2\n")
    (tmp_path / "twice.csv").write_text("filename,label\na.png,1\na,2\n")
    (tmp_path / "outside.csv").write_text("filename,label\n../secret.png,1\n")
    kwargs = make(tmp_path)
    if "labels_csv" in kwargs:
        kwargs["labeled_dir"] = str(flat)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        make_dm(folders, **kwargs).setup("fit")


def test_an_unknown_test_label_and_an_empty_predict_folder_are_refused(folders, tmp_path):
    write(tmp_path / "test" / "eleven" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"unknown labels \['eleven'\]"):
        make_dm(folders, test_dir=str(tmp_path / "test")).setup("test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="predict_dir .*empty: no images"):
        make_dm(folders, predict_dir=str(tmp_path / "empty")).setup("predict")


def test_a_failed_predict_leaves_no_partial_csv(folders, tmp_path, monkeypatch):
    run = cli(folder_args(folders, tmp_path, "--trainer.max_steps", "2", "--test_after_fit", "false"))
    ckpt = str(Path(run.trainer.log_dir, "checkpoints", "last.ckpt"))
    original = SemiSupervisedGAN.predict_step

    def fails_on_the_second_batch(self, batch, batch_idx):
        if batch_idx == 1:
            raise RuntimeError("the disk went away")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SemiSupervisedGAN, "predict_step", fails_on_the_second_batch)
    out = tmp_path / "out" / "predictions.csv"
    predict = ["--ckpt_path", ckpt, "--data.predict_dir", str(folders / "new"), "--predictions_csv", str(out)]
    with pytest.raises(RuntimeError, match="the disk went away"):
        cli(folder_args(folders, tmp_path, *predict, "--data.eval_batch_size", "30", subcommand="predict"))
    assert not out.exists() and not list(tmp_path.glob("out/*"))


def test_the_configs_augmentation_applies_to_colour_training_images_and_eval_stays_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for i in range(12):
            write(tmp_path / "labeled" / name / f"{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
            write(tmp_path / "unlabeled" / f"{name}{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    # the shipped config's data section, its augmentation pipeline included, built as the command builds it
    built = cli(
        ["--config", str(CONFIGS / "image_folder.yaml"), "--data.labeled_dir", str(tmp_path / "labeled")]
        + ["--data.unlabeled_dir", str(tmp_path / "unlabeled"), "--data.image_size", "16", "--data.val_size", "4"]
        + ["--data.batch_size", "8", "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )
    data = built.datamodule
    data.setup("fit")
    first, again = (data.labeled.__getitems__(list(range(8)))[0] for _ in range(2))
    other_batch = data.labeled.__getitems__(list(range(7, -1, -1)))[0].flip(0)  # the same images, in another batch
    raw = torch.from_numpy(data.labeled.images[:8]).permute(0, 3, 1, 2).float() / 255
    assert first.shape == raw.shape == (8, 3, 16, 16) and not torch.equal(first, raw)  # random flips, shifts, colour
    assert not torch.equal(first, other_batch)  # drawn anew for each batch
    assert torch.equal(first, again)  # seeded from the batch: a rerun or a resumed run repeats it
    val_first, val_second = (data.val.__getitems__(list(range(4)))[0] for _ in range(2))
    assert torch.equal(val_first, val_second)  # no augmentation at evaluation


def test_a_grid_of_generated_images_from_a_checkpoint(checkpoint, tmp_path):
    from lit_ssgan.sample_grid import main

    main(["--ckpt_path", str(checkpoint), "--out", str(tmp_path / "grid.png"), "--num_images", "16"])
    grid = cv2.imread(str(tmp_path / "grid.png"), cv2.IMREAD_UNCHANGED)
    assert grid.shape == (168, 168)  # 4 x 4 digits of 8 px, 2 px apart: 42 px, enlarged 4x
    assert grid.std() > 10  # drawn digits, not a blank page


def test_numeric_labels_from_a_csv_are_read_as_numbers_for_regression(folders, tmp_path):
    flat = tmp_path / "graded"
    grades = [0, 1.5, 2, 4, 3, 0.5]
    for i, _ in enumerate(grades):
        write(flat / f"g{i}.png", np.full((8, 8), 40 * i, np.uint8))
    (tmp_path / "grades.csv").write_text("image,level\n" + "".join(f"g{i},{g}\n" for i, g in enumerate(grades)))
    dm = make_dm(folders, labeled_dir=str(flat), labels_csv=str(tmp_path / "grades.csv"), numeric_labels=True)
    dm.setup("fit")
    assert dm.num_classes == 5 and dm.class_names == ["0", "1", "2", "3", "4"]  # grades 0..4, for kappa
    assert dm.labeled.labels.dtype == torch.float32
    assert sorted(dm.labeled.labels.tolist()) == sorted(grades)
    # tefla's class balancing over the grades (the image folders' config has it on): each label counts
    # in its nearest grade, 0 (0, 0.5), 2 (1.5, 2), 3 and 4, so that each of the four comes equally often
    csv_path = str(tmp_path / "grades.csv")
    graded = {"labeled_dir": str(flat), "labels_csv": csv_path, "numeric_labels": True}
    balanced = make_dm(folders, **graded, balance_ratio=0.9, batches_per_epoch=200)
    balanced.setup("fit")
    drawn = torch.cat([y for _, y in balanced.train_dataloader()["labeled"]])
    assert len(drawn) == 200 * 20
    assert [(drawn == g).float().mean().item() for g in (3.0, 4.0)] == pytest.approx([0.25, 0.25], abs=0.03)
