"""The three layouts of a data directory, told apart by what it holds, and the masks layout's class list.

- ``kaggle``: ``train.csv`` (either of Kaggle's layouts), ``train_images/``, ``test_images/``,
  ``sample_submission.csv``.
- ``masks``: ``train_images/`` (JPEG, PNG, BMP or TIFF, all of one size), ``train_masks/<image
  stem>.png`` (one single-channel label map per defective image: pixel value = class number 1..C,
  0 = no defect; an image without one is defect-free), ``classes.txt`` (the class names, one a
  line, in class-number order), ``test_images/`` and optionally ``test_masks/`` (the test truth).
- ``folders``: ``train/<class name>/*`` (one folder of images per class) and optionally
  ``test/<class name>/*`` (labelled) or ``test/*`` (unlabelled).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..core.constants import CLASS_IDS, HEIGHT, WIDTH
from .errors import UserError
from .images import image_names, image_sizes

LAYOUTS = ("kaggle", "masks", "folders")
TRAIN_IMAGES = "train_images"
TEST_IMAGES = "test_images"
TRAIN_LABELS = "train.csv"
TEST_LABELS = "test_labels.csv"
SAMPLE_SUBMISSION = "sample_submission.csv"
TRAIN_MASKS = "train_masks"
TEST_MASKS = "test_masks"
CLASSES_FILE = "classes.txt"
FOLDERS_TRAIN = "train"
FOLDERS_TEST = "test"
SIZE_SAMPLE = 64  # images whose headers give a data set's image size (check-data checks every image)
SEVERSTAL_CLASSES = tuple(str(class_id) for class_id in CLASS_IDS)


class LayoutError(UserError):
    """A data directory is missing or in none of the layouts."""


def detect_layout(data_dir: str | os.PathLike) -> str:
    """The layout of a data directory: ``kaggle``, ``masks`` or ``folders``.

    Raises:
        UserError: the directory is missing or in none of the three layouts (the message shows them).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LayoutError(f"data directory {data_dir} does not exist: run `severstal download` (Kaggle's data) or "
                        "`severstal demo-data` (demo data), or pass --data DIR")
    if (data_dir / TRAIN_LABELS).is_file():
        return "kaggle"
    if (data_dir / CLASSES_FILE).is_file() or (data_dir / TRAIN_MASKS).is_dir():
        return "masks"
    train = data_dir / FOLDERS_TRAIN
    if train.is_dir() and any(entry.is_dir() for entry in train.iterdir()):
        return "folders"
    raise LayoutError(
        f"{data_dir} is in none of the data layouts this project reads:\n"
        f"  kaggle:  {TRAIN_LABELS}, {TRAIN_IMAGES}/, test_images/, sample_submission.csv\n"
        f"  masks:   {TRAIN_IMAGES}/, {TRAIN_MASKS}/<image stem>.png (pixel value = class number, 0 = no defect), "
        f"{CLASSES_FILE}, test_images/ [, {TEST_MASKS}/]\n"
        f"  folders: {FOLDERS_TRAIN}/<class name>/<images> [, {FOLDERS_TEST}/<class name>/<images> or "
        f"{FOLDERS_TEST}/<images>]\n"
        f"it holds: {', '.join(sorted(entry.name for entry in data_dir.iterdir())) or 'nothing'}")


def class_names_problems(text: str) -> tuple[list[str], list[str]]:
    """The class names of a ``classes.txt`` text, one a line in class-number order, and its problems.

    Blank lines at the end are ignored; a blank line between names, a repeated name or no name at all
    is a problem.

    Returns:
        ``(names, problems)``.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    problems = [f"{CLASSES_FILE} line {number}: blank (class {number} needs a name)"
                for number, name in enumerate(names, start=1) if not name]
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if name and name in seen:
            problems.append(f"{CLASSES_FILE} line {number}: {name!r} already names class {seen[name]}")
        seen.setdefault(name, number)
    if not names:
        problems.append(f"{CLASSES_FILE} names no class: write one class name a line, class 1 first")
    return names, problems


@dataclass(frozen=True)
class DataFacts:
    """What a data directory says about its data set.

    Attributes:
        layout: ``kaggle``, ``masks`` or ``folders``.
        class_names: the classes in class-number order (Kaggle: ``1`` .. ``4``; masks: ``classes.txt``;
            folders: the class folders, sorted by name).
        shape: the images' ``(height, width)`` (Kaggle: 256 x 1600; else the most common size among
            the first training images); None when there are no readable training images.
    """

    layout: str
    class_names: tuple[str, ...]
    shape: tuple[int, int] | None


def class_folders(folder: str | os.PathLike) -> list[str]:
    """The names of the subfolders of ``folder`` that hold images, sorted (the folders layout's classes)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and image_names(entry))


def folder_images(folder: str | os.PathLike) -> list[tuple[str, str | None]]:
    """The images of a folders-layout split: ``[(image id, class name)]`` sorted by id.

    Labelled (``<folder>/<class>/<image>``): ids are ``<class>/<image>``; unlabelled (``<folder>/<image>``):
    ids are the file names and the class is None.
    """
    classes = class_folders(folder)
    if classes:
        return [(f"{name}/{image}", name) for name in classes for image in image_names(Path(folder) / name)]
    return [(image, None) for image in image_names(folder)]


def _common_size(folders: list[Path]) -> tuple[int, int] | None:
    """The most common ``(height, width)`` among the first :data:`SIZE_SAMPLE` images of ``folders``."""
    sizes: Counter = Counter()
    for folder in folders:
        names = image_names(folder)[:SIZE_SAMPLE]
        sizes.update(size for size in image_sizes(folder, names).values() if size)
    return sizes.most_common(1)[0][0] if sizes else None


def data_facts(data_dir: str | os.PathLike) -> DataFacts:
    """The layout, classes and image size of a data directory.

    Raises:
        UserError: the directory is in no layout, or its ``classes.txt`` cannot be read or has problems.
    """
    data_dir = Path(data_dir)
    layout = detect_layout(data_dir)
    if layout == "kaggle":
        return DataFacts(layout, SEVERSTAL_CLASSES, (HEIGHT, WIDTH))
    if layout == "folders":
        names = class_folders(data_dir / FOLDERS_TRAIN)
        return DataFacts(layout, tuple(names), _common_size([data_dir / FOLDERS_TRAIN / name for name in names]))
    path = data_dir / CLASSES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: a data directory in the masks layout names its classes there, "
                        "one a line in class-number order (class 1 first)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path} ({error}): write it as UTF-8 text, one class name a line") from None
    names, problems = class_names_problems(text)
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))
    return DataFacts(layout, tuple(names), _common_size([data_dir / TRAIN_IMAGES]))
