"""The three layouts of a data directory, told apart by what it holds, and the masks layout's class list.

- ``kaggle``: ``train.csv`` (either of Kaggle's layouts), ``train_images/``, ``test_images/``,
  ``sample_submission.csv``.
- ``masks``: ``train_images/`` (JPEG, PNG or BMP, all of one size), ``train_masks/<image
  stem>.png`` (one single-channel label map per defective image: pixel value = class number 1..C,
  0 = no defect; an image without one is defect-free), ``classes.txt`` (the class names, one a
  line, in class-number order), ``test_images/`` and optionally ``test_masks/`` (the test truth).
- ``folders``: ``train/<class name>/*`` (one folder of images per class) and optionally
  ``test/<class name>/*`` (labelled) or ``test/*`` (unlabelled).
"""

from __future__ import annotations

import os
from pathlib import Path

from .artifacts import TRAIN_IMAGES, TRAIN_LABELS
from .errors import UserError

LAYOUTS = ("kaggle", "masks", "folders")
TRAIN_MASKS = "train_masks"
TEST_MASKS = "test_masks"
CLASSES_FILE = "classes.txt"
FOLDERS_TRAIN = "train"
FOLDERS_TEST = "test"


def detect_layout(data_dir: str | os.PathLike) -> str:
    """The layout of a data directory: ``kaggle``, ``masks`` or ``folders``.

    Raises:
        UserError: the directory is missing or in none of the three layouts (the message shows them).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory {data_dir} does not exist: run `severstal download` (Kaggle's data) or "
                        "`severstal demo-data` (demo data), or pass --data DIR")
    if (data_dir / TRAIN_LABELS).is_file():
        return "kaggle"
    if (data_dir / CLASSES_FILE).is_file() or (data_dir / TRAIN_MASKS).is_dir():
        return "masks"
    train = data_dir / FOLDERS_TRAIN
    if train.is_dir() and any(entry.is_dir() for entry in train.iterdir()):
        return "folders"
    raise UserError(
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
