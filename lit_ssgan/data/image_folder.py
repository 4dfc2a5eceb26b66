"""Your own images: folders of PNG/JPEG/BMP/TIFF files, labeled by class subfolder or by CSV."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset

from lit_ssgan.data.datamodule import SemiSupervisedDataModule
from lit_ssgan.data.datasets import ImageRows
from lit_ssgan.data.decode_cache import DecodeCache
from lit_ssgan.data.decoding import DecodingDataset, file_name, shown
from lit_ssgan.errors import BadFileError, ConfigError, MissingFileError, check_choice

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_text(path: Path) -> str:
    """A text file as UTF-8, with or without a byte-order mark (what Excel's "CSV UTF-8" writes).

    Raises:
        BadFileError: naming the file, the first byte that is not UTF-8 and its line, for any
            other encoding (Excel's plain "CSV" on Windows writes the local code page).
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadFileError(
            f"{shown(path)} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} ({err.reason}); save it as "
            "UTF-8 (in Excel: Save As, 'CSV UTF-8')"
        ) from None


def find_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The image files under ``folder``, at any depth and through symbolic links to folders (each
    folder once, so a link to a folder above cannot loop), in a stable (sorted) order; and the
    other files found, which are skipped (hidden files such as ``.DS_Store`` are not counted).

    An image file is a regular file named with an image suffix, or a symbolic link so named that
    leads nowhere: reading it fails as a file that cannot be read does, naming the link and its
    missing target (or it is skipped, with ``skip_bad_images``). Any name the file system allows is
    found, also one that is not UTF-8."""
    images: list[Path] = []
    others: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        status = os.stat(root)
        if (status.st_dev, status.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        for name in names:
            path = Path(root) / name
            if not name.startswith("."):
                image = path.suffix.lower() in IMAGE_SUFFIXES and (path.is_file() or _dangling(path))
                (images if image else others).append(path)
    return sorted(images), sorted(others)


def _dangling(path: Path) -> bool:
    """Whether ``path`` is a symbolic link to nothing (or to a loop of links)."""
    return path.is_symlink() and not path.exists()


def list_images(folder: Path, what: str | None = None, expected: Sequence[Path] = ()) -> list[Path]:
    """The image files under ``folder`` (:func:`find_images`); with ``what``, the files skipped
    (GIFs, text, ...; all but ``expected`` ones) are counted in one warning naming the first few."""
    images, others = find_images(folder)
    report_skipped([p for p in others if p not in expected], what)
    return images


def report_skipped(others: Sequence[Path], what: str | None) -> None:
    if others and what:
        kinds = sorted({p.suffix.lower() or "no extension" for p in others})
        rank_zero_warn(
            f"{what}: skipped {len(others)} files that are not images this reads ({', '.join(kinds)}), "
            f"e.g. {', '.join(shown(p) for p in others[:3])}; images are {' '.join(IMAGE_SUFFIXES)}"
        )


class ImageFolderDataModule(SemiSupervisedDataModule):
    """Semi-supervised training on your own image folders.

    - ``labeled_dir``: images in class subfolders (``<labeled_dir>/<class name>/*.png``), or
      anywhere under it with ``labels_csv`` (rows ``filename,label`` after a header line; the file
      name relative to ``labeled_dir``, with or without its extension, as tefla's ``DataSet``; a
      name without one that matches two files, or a row with a third field, is refused by row).
    - ``unlabeled_dir``: images in any subfolders; their labels, if any, are never read. Not needed
      with ``num_labeled``: the labeled images it leaves out are then the unlabeled set.
    - ``val_dir`` / ``test_dir``: labeled like ``labeled_dir`` (with ``val_labels_csv`` /
      ``test_labels_csv``); without ``val_dir``, ``val_size`` images are split off the labeled
      pool with ``data_seed``. ``predict_dir``: new images, predicted in file-name order.

    The training, validation and test images are decoded once, with OpenCV in threads, resized to
    ``image_size`` and converted to ``channels``, into an on-disk cache of uint8 pixels
    (:class:`~lit_ssgan.data.decode_cache.DecodeCache`; 128×128 RGB: 49 KB an image) that later
    runs read without decoding; batches are gathered from it, memory-mapped, so no process holds
    the images in its own memory. ``predict`` decodes a batch at a time, as it goes.

    Any file name the file system allows is read. Names are recorded (``labeled_examples.csv``,
    the predictions CSV) and matched (a labels CSV) as :func:`~lit_ssgan.data.decoding.file_name`
    writes them: as they are where they are UTF-8, else with each byte that is not as ``\\xNN``
    (``caf\\xe9.png``). A symbolic link named as an image that leads nowhere is an image that
    cannot be read: refused naming its target, or skipped with ``skip_bad_images``.

    Args:
        labeled_dir: the labeled images.
        labels_csv: a CSV of ``filename,label`` for ``labeled_dir`` (instead of class subfolders).
        unlabeled_dir: the unlabeled images (optional with ``num_labeled``).
        val_dir: validation images (class subfolders, or ``val_labels_csv``).
        val_labels_csv: a CSV of labels for ``val_dir``.
        test_dir: test images (class subfolders, or ``test_labels_csv``).
        test_labels_csv: a CSV of labels for ``test_dir``.
        predict_dir: images to predict.
        image_size: side of the square images the networks take.
        channels: 1 (grey) or 3 (RGB).
        class_names: the classes, in the order of the network's outputs; default the sorted class
            folder names or CSV labels, or those a checkpoint recorded (test and predict).
        numeric_labels: the labels are numbers (regression: the discriminator's ``regression: true``): CSV
            labels are read as floats, folder names as integers; ``num_classes`` is then the number
            of integer grades 0 … K-1 (for kappa).
        skip_bad_images: skip images that cannot be decoded (reported once) instead of stopping.
        num_labeled: use only this many labeled images (balanced across classes), or a count for
            each class; None: all. The others join the unlabeled set (their labels unused).
        val_size: images split off the labeled pool for validation (not with ``val_dir``).
        cache_dir: where the decoded images are kept (one ``.npy`` and one ``.json`` a folder, as
            large as the pixels: 128×128 RGB is 4.9 GB for 100 000 images); default
            ``$XDG_CACHE_HOME/lit_ssgan`` or ``~/.cache/lit_ssgan``.
        **kwargs: see :class:`SemiSupervisedDataModule`.
    """

    def __init__(
        self,
        labeled_dir: str | None = None,
        labels_csv: str | None = None,
        unlabeled_dir: str | None = None,
        val_dir: str | None = None,
        val_labels_csv: str | None = None,
        test_dir: str | None = None,
        test_labels_csv: str | None = None,
        predict_dir: str | None = None,
        image_size: int = 32,
        channels: int = 3,
        class_names: list[str] | None = None,
        numeric_labels: bool = False,
        skip_bad_images: bool = False,
        num_labeled: int | list[int] | None = None,
        val_size: int = 0,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_choice("channels", channels, (1, 3))
        if image_size < 4:
            raise ConfigError(f"image_size must be at least 4, got {image_size}")
        self.image_shape = (channels, image_size, image_size)
        self.dirs = {
            name: Path(value) if value else None
            for name, value in (("labeled_dir", labeled_dir), ("unlabeled_dir", unlabeled_dir), ("val_dir", val_dir))
            + (("test_dir", test_dir), ("predict_dir", predict_dir))
        }
        for name, folder in self.dirs.items():
            if folder is not None and not folder.is_dir():
                raise MissingFileError(f"data.{name}: no folder {shown(folder)}")
        if val_dir and val_size:
            raise ConfigError("give data.val_size or data.val_dir, not both")
        self.csvs = {"labeled_dir": labels_csv, "val_dir": val_labels_csv, "test_dir": test_labels_csv}
        self.numeric_labels, self.skip_bad_images = numeric_labels, skip_bad_images
        # the classes first: the base class checks the options against them
        self.class_names = list(class_names) if class_names else self._find_class_names()
        self.num_classes = len(self.class_names)
        self._check_classes(class_names is not None)
        self.cache = DecodeCache(cache_dir)
        self.predict_files: list[str] = []  # relative to predict_dir, in prediction order
        # the images read of each labeled folder, relative to it, in the order of their rows
        self.read_files: dict[str, list[str]] = {}
        super().__init__(num_labeled=num_labeled, val_size=val_size, **kwargs)

    # -- labels ------------------------------------------------------------------------------
    def _find_class_names(self) -> list[str]:
        folder = self.dirs["labeled_dir"]
        if folder is None:  # test or predict: the command takes them from the checkpoint
            return []
        names = sorted({label for _, label in self._labeled_files("labeled_dir")}, key=self._sort_key)
        if self.numeric_labels:
            return [str(g) for g in range(int(max(float(n) for n in names)) + 1)]
        return names

    def _check_classes(self, given: bool) -> None:
        """At least two classes, or a message that says where they were looked for."""
        if not self.class_names:
            raise ConfigError(
                "no classes: give data.labeled_dir (class subfolders, or a labels CSV), data.class_names, "
                "or a checkpoint that records them"
            )
        if len(self.class_names) >= 2 or self.numeric_labels:
            return
        found = f"the class {self.class_names[0]!r}"
        if given:
            raise ConfigError(f"data.class_names: a classifier needs two classes or more, got only {found}")
        folder = self.dirs["labeled_dir"]
        assert folder is not None
        deeper = sorted(shown(p.name) for p in (folder / self.class_names[0]).glob("*") if p.is_dir())
        hint = (
            f"; its folder holds the subfolders {', '.join(deeper[:5])}: one level too deep? Give "
            f"data.labeled_dir {shown(folder / self.class_names[0])}"
            if deeper and not self.csvs["labeled_dir"]
            else ""
        )
        raise ConfigError(
            f"data.labeled_dir {shown(folder)}: a classifier needs two classes or more, found only {found}{hint}"
        )

    def _sort_key(self, name: str) -> Any:
        try:
            return (0, float(name), name)
        except ValueError:
            return (1, 0.0, name)

    def _labeled_files(self, which: str) -> list[tuple[Path, str]]:
        """``(file, label)`` of a labeled folder, by class subfolder or by its CSV."""
        folder = self.dirs[which]
        assert folder is not None
        if self.csvs[which]:
            return self._read_csv(folder, Path(str(self.csvs[which])), which)
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise ConfigError(f"data.{which}: {shown(folder)} has no class subfolders (or give a labels CSV)")
        files: list[tuple[Path, str]] = []
        skipped = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]  # not in a class
        for class_dir in classes:
            images, others = find_images(class_dir)
            if not images:
                raise ConfigError(f"data.{which}: the class folder {shown(class_dir)} has no images")
            files += [(path, file_name(class_dir.name)) for path in images]
            skipped += others
        report_skipped(skipped, f"data.{which} {shown(folder)}")
        return files

    def _read_csv(self, folder: Path, csv_path: Path, which: str) -> list[tuple[Path, str]]:
        """The ``(file, label)`` rows of a labels CSV: ``filename,label`` (fields past the second must
        be empty), after a header line unless the first row names an image. A name is the file's
        path relative to ``folder`` (as :func:`~lit_ssgan.data.decoding.file_name` writes it), with
        or without its extension; without, it must match one file alone. Each refusal names the CSV
        and the row (the line, in a CSV with no field across lines)."""
        where = shown(csv_path)
        if not csv_path.is_file():
            raise MissingFileError(f"no labels CSV {where}")
        images = list_images(folder, f"data.{which} {shown(folder)}", expected=[csv_path])
        by_name = {file_name(p.relative_to(folder).as_posix()): p for p in images}
        by_stem: dict[str, list[Path]] = {}
        for p in images:
            by_stem.setdefault(file_name(p.relative_to(folder).with_suffix("").as_posix()), []).append(p)
        root, files, seen = folder.resolve(), [], set()
        rows = list(csv.reader(io.StringIO(read_text(csv_path), newline="")))
        first = next((row for row in rows if row and "".join(row).strip()), [""])
        named = Path(first[0].strip()).as_posix()
        if named in by_name or named in by_stem:  # its first row names an image: there is no header line
            rank_zero_warn(f"{where} has no header line: its first row ({','.join(first)}) is read as data")
            start = 1
        else:
            start = 2  # line 1 is the header
        for line, row in enumerate(rows[start - 1 :], start=start):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ConfigError(f"{where}, row {line}: expected filename,label, got {row}")
            if "".join(row[2:]).strip():
                raise ConfigError(
                    f"{where}, row {line}: {len(row)} fields ({','.join(row)}); expected 2, filename,label "
                    "(quote a label that holds a comma)"
                )
            name, label = row[0].strip(), row[1].strip()
            if not label:
                raise ConfigError(f"{where}, row {line}: {name!r} has an empty label")
            if not (folder / name).resolve().is_relative_to(root):
                raise ConfigError(f"{where}, row {line}: {name!r} is outside {shown(folder)}: refused")
            key = Path(name).as_posix()
            path = by_name.get(key)
            if path is None:
                matches = by_stem.get(key, [])
                if len(matches) > 1:
                    both = ", ".join(shown(p.relative_to(folder)) for p in matches[:-1])
                    raise ConfigError(
                        f"{where}, row {line}: {name!r} matches {both} and {shown(matches[-1].relative_to(folder))}; "
                        "give the file name with its extension"
                    )
                path = matches[0] if matches else None
            if path is None:
                raise MissingFileError(f"{where}, row {line}: no image {name!r} in {shown(folder)}")
            if path in seen:
                raise ConfigError(f"{where}, row {line}: {name!r} is listed twice")
            seen.add(path)
            files.append((path, label))
        if not files:
            raise ConfigError(f"{where} lists no images")
        return files

    def _label_values(self, labels: list[str], where: str) -> np.ndarray:
        if self.numeric_labels:
            try:
                return np.asarray([float(label) for label in labels], dtype=np.float32)
            except ValueError as err:
                raise ConfigError(f"{where}: numeric_labels is set but a label is not a number ({err})") from None
        index = {name: i for i, name in enumerate(self.class_names or [])}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ConfigError(f"{where}: unknown labels {unknown[:5]}; the classes are {self.class_names}")
        return np.asarray([index[label] for label in labels], dtype=np.int64)

    # -- images ------------------------------------------------------------------------------
    def _read(self, paths: Sequence[Path], which: str) -> tuple[ImageRows, list[int]]:
        folder = self.dirs[which]
        assert folder is not None
        what = f"data.{which} {shown(folder)}"
        if not paths:
            raise ConfigError(f"{what}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.cache.check()
        c, size, _ = self.image_shape
        images, kept, bad = self.cache.images(paths, size, c, f"data.{which}", folder, self.skip_bad_images)
        if bad:
            names = ", ".join(shown(path) for path, _ in bad[:3])
            rank_zero_warn(f"{what}: skipped {len(bad)} unreadable images, e.g. {names} (the first: {bad[0][1]})")
        if not kept:
            raise ConfigError(f"{what}: none of the images could be read")
        return images, kept

    def _labeled(self, which: str) -> tuple[ImageRows, np.ndarray]:
        files = self._labeled_files(which)
        labels = self._label_values([label for _, label in files], f"data.{which}")  # before decoding
        images, kept = self._read([p for p, _ in files], which)
        folder = self.dirs[which]
        assert folder is not None
        self.read_files[which] = [file_name(files[i][0].relative_to(folder).as_posix()) for i in kept]
        return images, labels[kept]

    def _folder(self, which: str, needed_by: str, otherwise: str = "") -> Path:
        folder = self.dirs[which]
        if folder is None:
            raise ConfigError(f"{needed_by} needs data.{which}{otherwise}")
        return folder

    def example_names(self, part: str, indices: np.ndarray) -> list[str]:
        """File names relative to their folder (``labeled_dir`` for the pool, else ``val_dir``)."""
        files = self.read_files["labeled_dir" if part == "pool" else "val_dir"]
        return [files[int(i)] for i in indices]

    # -- the parts the base class splits and serves -------------------------------------------
    def load_train_pool(self) -> tuple[ImageRows, np.ndarray]:
        self._folder("labeled_dir", "fit")
        return self._labeled("labeled_dir")

    def load_val_set(self) -> tuple[ImageRows, np.ndarray] | None:
        return self._labeled("val_dir") if self.dirs["val_dir"] is not None else None

    def load_unlabeled(self) -> ImageRows | None:
        folder = self._unlabeled_folder()
        if folder is None:
            return None  # the labeled pool's images past num_labeled are the unlabeled set
        return self._read(list_images(folder, f"data.unlabeled_dir {shown(folder)}"), "unlabeled_dir")[0]

    def _unlabeled_folder(self) -> Path | None:
        """``unlabeled_dir``; None when ``num_labeled`` leaves the rest of the labeled pool unlabeled."""
        if self.dirs["unlabeled_dir"] is None and self.hparams["num_labeled"] is not None:
            return None
        otherwise = ", or data.num_labeled (the rest of data.labeled_dir then trains unlabeled)"
        return self._folder("unlabeled_dir", "fit", otherwise)

    def check_fit_set(self) -> None:
        self._folder("labeled_dir", "fit")
        self._unlabeled_folder()

    def load_test_set(self) -> tuple[ImageRows, np.ndarray]:
        self._folder("test_dir", "test")
        return self._labeled("test_dir")

    def check_test_set(self, needed_by: str) -> None:
        if self.dirs["test_dir"] is None:
            raise ConfigError(f"{needed_by} needs data.test_dir (a labeled folder like data.labeled_dir)")
        files = self._labeled_files("test_dir")
        self._label_values([label for _, label in files], "data.test_dir")  # a class unknown to training

    def predict_dataset(self) -> Dataset:
        """The images of ``predict_dir`` in file-name order, decoded a batch at a time as predict
        goes (not cached: a folder to predict is read once)."""
        root = self._folder("predict_dir", "predict")
        files = list_images(root, f"data.predict_dir {shown(root)}")
        if not files:
            raise ConfigError(f"data.predict_dir {shown(root)}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.predict_files = [file_name(path.relative_to(root).as_posix()) for path in files]
        c, size, _ = self.image_shape
        return DecodingDataset(files, size, c, self.eval_transform, self.skip_bad_images)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_names": self.class_names}
