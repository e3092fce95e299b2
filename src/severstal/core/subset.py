"""A small, deterministic subset of a training set that still shows every class (the smoke run's data).

Everything is chosen by sorted image name, so the same labels and images always give the same subset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from .constants import CLASS_IDS, LONG_COLUMNS
from .labels import non_empty


def choose_training_images(labels: pd.DataFrame, image_ids: Iterable[str], count: int,
                           class_ids: Sequence[int] = CLASS_IDS) -> list[str]:
    """Choose ``count`` training images that cover every class and are about half defect-free.

    First, for each class in turn, the first image (by name) that has the class and is not yet chosen,
    while fewer than ``count`` are chosen. Then, one at a time: the first defect-free image not yet
    chosen while fewer than half of those chosen are defect-free, otherwise the first image of any
    kind not yet chosen (and when no defect-free image is left, too).

    Args:
        labels: a normal label frame (``ImageId, ClassId, EncodedPixels``); rows of images not in
            ``image_ids`` are ignored.
        image_ids: the images that exist (the training image folder's names).
        count: how many to choose; all of them when there are no more than that.
        class_ids: the classes to cover, in turn.

    Returns:
        The chosen image names, sorted.
    """
    names = sorted(set(image_ids))
    if count >= len(names):
        return names
    defects = non_empty(labels, class_ids)
    defects = defects[defects["ImageId"].isin(set(names))]
    chosen: list[str] = []
    for class_id in class_ids:
        if len(chosen) == count:
            break
        candidates = sorted(set(defects.loc[defects["ClassId"] == class_id, "ImageId"]) - set(chosen))
        if candidates:
            chosen.append(candidates[0])
    defective = set(defects["ImageId"])
    taken = set(chosen)
    defect_free = iter([name for name in names if name not in defective])
    in_order = iter(names)
    while len(chosen) < count:
        name = None
        if 2 * sum(picked not in defective for picked in chosen) < len(chosen):
            name = next((candidate for candidate in defect_free if candidate not in taken), None)
        if name is None:
            name = next(candidate for candidate in in_order if candidate not in taken)
        chosen.append(name)
        taken.add(name)
    return sorted(chosen)


def labels_of(labels: pd.DataFrame, image_ids: Iterable[str], class_ids: Sequence[int] = CLASS_IDS) -> pd.DataFrame:
    """The non-empty masks of ``image_ids`` as written to ``train.csv``.

    Args:
        labels: a normal label frame.
        image_ids: the images to keep.
        class_ids: the classes to keep.

    Returns:
        A frame with the long layout's columns (``ImageId, ClassId, EncodedPixels``), sorted by image and class.
    """
    masks = non_empty(labels, class_ids)
    masks = masks[masks["ImageId"].isin(set(image_ids))]
    return masks[list(LONG_COLUMNS)].sort_values(["ImageId", "ClassId"]).reset_index(drop=True)


def images_per_class(labels: pd.DataFrame, image_ids: Iterable[str], class_ids: Sequence[int] = CLASS_IDS
                     ) -> dict[int, int]:
    """``{class id: number of images of image_ids with a non-empty mask of that class}``."""
    masks = labels_of(labels, image_ids, class_ids)
    return {class_id: int(masks.loc[masks["ClassId"] == class_id, "ImageId"].nunique()) for class_id in class_ids}
