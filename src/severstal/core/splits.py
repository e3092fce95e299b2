"""Multilabel stratified K-fold assignment over class presence (pure: frames in, frames out).

Every image goes to exactly one fold; the folds get (almost) equal numbers of images of each
defect class and of defect-free images, as ``MultilabelStratifiedKFold`` arranges it. On the
12,568 official training images every class count per fold is within one image of total / K.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .constants import CLASS_IDS
from .labels import presence_columns

PRESENCE_COLUMNS = presence_columns(CLASS_IDS)  # Severstal's has_1..has_4
FOLD_COLUMNS = ["ImageId", "fold", *PRESENCE_COLUMNS]


def presence_columns_of(frame: pd.DataFrame) -> list[str]:
    """The ``has_<class id>`` columns of a presence or folds frame, by class id."""
    columns = [c for c in frame.columns if str(c).startswith("has_") and str(c)[4:].isdigit()]
    return sorted(columns, key=lambda c: int(str(c)[4:]))


def check_presence_frame(presence: pd.DataFrame) -> list[str]:
    """The ``has_<class>`` columns of a presence table; ``ValueError`` unless it has one row per image and 0/1
    values in at least one such column."""
    columns = presence_columns_of(presence)
    if "ImageId" not in presence.columns or not columns:
        needed = ",".join(["ImageId", *PRESENCE_COLUMNS])
        raise ValueError(f"presence table lacks columns: it needs ImageId and has_<class> columns such as {needed}")
    repeated = presence["ImageId"][presence["ImageId"].duplicated()]
    if len(repeated):
        image_id = repeated.iloc[0]
        times = int((presence["ImageId"] == image_id).sum())
        raise ValueError(f"image {image_id} appears {times} times in the presence table")
    values = presence[columns]
    if not values.isin([0, 1]).all().all():
        column = values.columns[~values.isin([0, 1]).all()][0]
        raise ValueError(f"column {column} must hold 0 or 1 only")
    return columns


def stratification_targets(presence: pd.DataFrame) -> np.ndarray:
    """``(images, classes + 1)`` 0/1 matrix: the class-presence columns and a no-defect column."""
    has = presence[presence_columns_of(presence)].to_numpy(dtype=np.int64)  # (images, classes)
    return np.column_stack([has, (has.sum(axis=1) == 0).astype(np.int64)])


def make_folds(presence: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Assign every image to one of ``k`` folds, stratified on the classes and on "no defect".

    The result depends only on the set of rows, ``k`` and ``seed`` (rows are sorted by ImageId first).

    Args:
        presence: ``ImageId, has_1..has_C`` (0/1), one row per image (``labels.presence_table``).
        k: number of folds, at least 2 and at most the number of images.
        seed: random state of the shuffle.

    Returns:
        ``ImageId, fold, has_1..has_C`` sorted by ImageId; ``fold`` in ``0..k-1``.

    Raises:
        ValueError: for a malformed presence table or an impossible ``k``.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold  # imports scikit-learn: only when splitting

    columns = check_presence_frame(presence)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise ValueError(f"the number of folds must be an integer of at least 2, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"the fold seed must be a non-negative integer, got {seed!r}")
    if k > len(presence):
        raise ValueError(f"cannot make {k} folds of {len(presence)} images")
    table = presence[["ImageId", *columns]].sort_values("ImageId").reset_index(drop=True)
    targets = stratification_targets(table)  # (images, classes + 1)
    fold = np.full(len(table), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=int(k), shuffle=True, random_state=int(seed))
    for index, (_, held_out) in enumerate(splitter.split(np.zeros((len(table), 1)), targets)):
        fold[held_out] = index
    table.insert(1, "fold", fold)
    return table[["ImageId", "fold", *columns]]


def fold_counts(folds: pd.DataFrame) -> pd.DataFrame:
    """Images per fold and class: index ``0..k-1`` and ``total``.

    Args:
        folds: ``make_folds`` output (or the folds file).

    Returns:
        Columns ``images, class 1..class C, no defect``.
    """
    targets = stratification_targets(folds)  # (images, classes + 1)
    names = [f"class {str(column)[4:]}" for column in presence_columns_of(folds)]
    counts = pd.DataFrame(targets, columns=[*names, "no defect"])
    counts.insert(0, "images", 1)
    counts["fold"] = folds["fold"].to_numpy()
    table = counts.groupby("fold").sum()
    table.loc["total"] = table.sum()
    table.index.name = "fold"
    return table
