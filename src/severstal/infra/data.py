"""The data directory and the folds file as the stages read them: labels, class presence, folds, splits.

Every reader turns a missing or malformed file into a :class:`~severstal.infra.errors.UserError`
that says which file and what to do.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..core.ensemble import select_folds
from ..core.labels import presence_columns, presence_table, rle_lookup
from .artifacts import Paths
from .errors import UserError
from .images import image_names, image_sizes, usable_images
from .label_maps import read_label_maps
from .layouts import folder_images
from .schema import RuleError, folds_choice
from .tables import CSV_ERRORS, read_labels


def training_labels(paths: Paths) -> pd.DataFrame:
    """The training labels in the normal form: Kaggle's ``train.csv``, or the masks layout's label maps."""
    if paths.layout == "masks":
        return read_label_maps(paths.train_masks, image_names(paths.train_images), paths.config.data.class_ids,
                               "training label maps")
    if paths.layout == "folders":
        return folder_labels(paths)
    if not paths.train_labels.is_file():
        raise UserError(f"{paths.train_labels} does not exist: the data directory must hold Kaggle's train.csv "
                        "(get the data with severstal download or severstal demo-data, or pass --data DIR)")
    return read_labels(paths.train_labels, "training labels")


def folder_labels(paths: Paths) -> pd.DataFrame:
    """The folders layout's training labels in the normal form: each image's class covers the whole image.

    So folds, class presence, the input pipeline's crops and the classifier's targets work as for masks.
    """
    images = folder_images(paths.train_images)
    sizes = image_sizes(paths.train_images, [image_id for image_id, _ in images])
    index = {name: class_id for class_id, name in zip(paths.config.data.class_ids, paths.config.data.classes,
                                                         strict=True)}
    rows = []
    for image_id, name in images:
        size = sizes.get(image_id)
        whole = f"1 {size[0] * size[1]}" if size else ""  # an unreadable image: check-data names it
        rows += [(image_id, class_id, whole if index.get(name) == class_id else "") for class_id in index.values()]
    return pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])


def split_images(paths: Paths, folder: str | os.PathLike) -> list[str]:
    """The image ids of a folder of the data set: file names, or ``<class>/<file>`` in the folders layout."""
    if paths.layout == "folders":
        return [image_id for image_id, _ in folder_images(folder)]
    return image_names(folder)


def test_classes(paths: Paths) -> dict[str, int] | None:
    """``{image id: class index 0..C-1}`` of a labelled folders-layout test set; None when it is unlabelled."""
    images = folder_images(paths.test_images)
    if not images or any(name is None for _, name in images):
        return None
    index = {name: number for number, name in enumerate(paths.config.data.classes)}
    unknown = sorted({name for _, name in images if name not in index})
    if unknown:
        raise UserError(f"{paths.test_images}/ has class folder(s) {', '.join(unknown)} that are not training classes "
                        f"({', '.join(index)}); severstal check-data lists the problems of the data directory")
    return {image_id: index[name] for image_id, name in images}


def training_set(paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training labels and class presence of the images in ``train_images/`` (listed, not opened).

    Returns:
        ``(labels, presence)``: the normal label frame and ``ImageId, has_1..has_C`` for every
        image, sorted by name.
    """
    names = split_images(paths, paths.train_images)
    if not names:
        raise UserError(f"no training images in {paths.train_images}: get the data first (severstal download, "
                        "or severstal demo-data for the demo set) or pass --data DIR")
    labels = training_labels(paths)
    unknown = sorted(set(labels["ImageId"]) - set(names))
    if unknown:
        print(f"warning: {len(unknown)} image(s) in {paths.train_labels} are not in {paths.train_images} and are left "
              f"out (e.g. {unknown[0]}); severstal check-data lists them", file=sys.stderr)
    return labels, presence_table(labels, names, paths.config.data.class_ids)


def read_folds(paths: Paths) -> pd.DataFrame:
    """The folds file (``ImageId, fold, has_1..has_C``); UserError when it is missing or malformed."""
    path = paths.folds_file
    if not path.is_file():
        raise UserError(f"folds file {path} does not exist: run severstal folds first "
                        f"(severstal folds --config {paths.config.source})")
    try:
        folds = pd.read_csv(path, dtype={"ImageId": str})
    except CSV_ERRORS as error:
        raise UserError(f"cannot read the folds file {path} ({error}): re-make it with severstal folds --force") \
            from None
    columns = ["ImageId", "fold", *presence_columns(paths.config.data.class_ids)]
    if list(folds.columns) != columns or not pd.api.types.is_integer_dtype(folds["fold"]):
        raise UserError(f"{path} must have the columns {','.join(columns)} with whole fold numbers (one has_<class> "
                        f"column per class of the data set): re-make it with severstal folds --force")
    return folds


def chosen_folds(text: str, folds: pd.DataFrame) -> list[int]:
    """The folds a ``--fold`` option names (``all``, ``3`` or ``0,2``), among those of the folds file."""
    available = sorted(int(fold) for fold in folds["fold"].unique())
    try:
        return select_folds(folds_choice()(text), available)
    except (ValueError, RuleError) as error:
        raise UserError(f"--fold {text}: {error} (the folds file has folds {available})") from None


def split_ids(folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """``(training image ids, validation image ids)`` of ``fold``."""
    validation = folds["fold"].astype(int) == fold
    return folds.loc[~validation, "ImageId"].tolist(), folds.loc[validation, "ImageId"].tolist()


def truth_lookup(paths: Paths, images_dir: str | os.PathLike) -> dict[str, dict[int, str]] | None:
    """The truth ``{ImageId: {ClassId: rle}}`` of the images in ``images_dir`` when the data directory has it.

    ``test_images/`` has it in ``test_labels.csv`` (Kaggle's layout) or ``test_masks/`` (the masks layout),
    ``train_images/`` in ``train.csv`` or ``train_masks/``; any other folder has none (None).
    """
    normal = os.path.normpath(str(images_dir))
    class_ids = paths.config.data.class_ids
    masks = paths.layout == "masks"
    for folder, labels, maps in ((paths.test_images, paths.test_labels, paths.test_masks),
                                 (paths.train_images, paths.train_labels, paths.train_masks)):
        if normal != os.path.normpath(str(folder)):
            continue
        if masks and maps.is_dir():
            return rle_lookup(read_label_maps(maps, image_names(folder), class_ids, f"{maps.name} label maps"),
                              class_ids)
        if not masks and labels.is_file():
            return rle_lookup(read_labels(labels, "truth"), class_ids)
    return None


def locate_images(paths: Paths, image_ids: Sequence[str]) -> dict[str, Path]:
    """``{image id: folder}`` for ids found in the data dir's test_images/ or train_images/."""
    folders = [paths.test_images, paths.train_images]
    names = {folder: set(image_names(folder)) for folder in folders}
    located, missing = {}, []
    for image_id in image_ids:
        folder = next((folder for folder in folders if image_id in names[folder]), None)
        if folder is None:
            missing.append(image_id)
        else:
            located[image_id] = folder
    if missing:
        raise UserError(f"image(s) {', '.join(missing)} are in neither {folders[0]} nor {folders[1]}")
    return located



class TrainingImages:
    """What ``train`` and ``oof`` read about the training images, each part read once, when first needed.

    Args:
        paths: the experiment's paths.
        shape: the images' ``(height, width)``.
        skip_bad: leave out (and list) the images check-data rejects instead of stopping.
    """

    def __init__(self, paths: Paths, shape: tuple[int, int], skip_bad: bool):
        self.paths, self.skip_bad = paths, skip_bad
        self.shape = None if paths.layout == "folders" else shape  # photos of a folders data set: any size

    @functools.cached_property
    def labels(self) -> pd.DataFrame:
        """The training labels in the normal form (a UserError when they are missing or malformed)."""
        return training_labels(self.paths)

    def check_labels(self) -> int:
        """Read and check the training labels now, before anything slower runs (they are kept for the masks).

        Returns:
            Its number of mask rows.
        """
        return len(self.labels)

    @functools.cached_property
    def folds(self) -> pd.DataFrame:
        """The folds file (a UserError when it is missing or malformed)."""
        return read_folds(self.paths)

    @functools.cached_property
    def lookup(self) -> dict[str, dict[int, str]]:
        """``{ImageId: {ClassId: rle}}`` of the training masks."""
        return rle_lookup(self.labels, self.paths.config.data.class_ids)

    @functools.cached_property
    def excluded(self) -> set[str]:
        """The images that cannot be used (``--skip-bad``; otherwise a UserError lists them)."""
        return usable_images(self.paths.train_images, self.folds["ImageId"].tolist(), self.shape, self.skip_bad)

    def split(self, fold: int) -> tuple[list[str], list[str]]:
        """``(training ids, validation ids)`` of ``fold``, without the excluded images."""
        return tuple([name for name in ids if name not in self.excluded] for ids in split_ids(self.folds, fold))
