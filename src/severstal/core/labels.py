"""Label and submission tables in both Kaggle layouts, normalised to one long frame.

The normal form has columns ``ImageId`` (str), ``ClassId`` (int) and ``EncodedPixels``
(str, ``""`` for an empty mask). ``train.csv`` since October 2019 and ``sample_submission.csv``
are already long; the 2019 layout packs both ids into ``ImageId_ClassId`` (``abc.jpg_3``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .constants import CLASS_IDS, HEIGHT, LEGACY_COLUMNS, LONG_COLUMNS, NUM_CLASSES, SUBMISSION_COLUMNS, WIDTH
from .rle import area, decode, encode

NORMAL_COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]


def layout_of(columns, exact: bool = False) -> str | None:
    """``"long"`` or ``"legacy"`` for a header, None for neither.

    Args:
        columns: the header's column names.
        exact: the header must be exactly the layout's columns (in any order), as in a submission;
            otherwise it must contain them (a label file may carry more columns).
    """
    names = {str(c).strip() for c in columns}
    for layout, wanted in (("long", set(LONG_COLUMNS)), ("legacy", set(LEGACY_COLUMNS))):
        if (names == wanted) if exact else (wanted <= names):
            return layout
    return None


def detect_layout(columns) -> str:
    """``"long"`` or ``"legacy"`` from a header; ``ValueError`` naming the expected headers otherwise."""
    layout = layout_of(columns)
    if layout is None:
        raise ValueError(f"unexpected columns {[str(c).strip() for c in columns]}: expected "
                         f"{','.join(LONG_COLUMNS)} (any order) or the 2019 layout {','.join(LEGACY_COLUMNS)}")
    return layout


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert a label or submission frame of either layout into the normal long form.

    Args:
        frame: as read by ``pd.read_csv(..., dtype=str, keep_default_na=False)``.

    Returns:
        A new frame with ``ImageId, ClassId, EncodedPixels``; ClassId as int.

    Raises:
        ValueError: on an unknown header or a ClassId that is not an integer.
    """
    frame = frame.rename(columns=lambda c: str(c).strip())
    if detect_layout(frame.columns) == "legacy":
        pair = frame["ImageId_ClassId"].astype(str)
        split = pair.str.rsplit("_", n=1, expand=True)
        if split.shape[1] != 2 or split[1].isna().any():
            bad = pair[split[1].isna()].iloc[0] if split.shape[1] == 2 else pair.iloc[0]
            raise ValueError(f"ImageId_ClassId {bad!r} is not of the form <image>_<class>")
        frame = pd.DataFrame({"ImageId": split[0], "ClassId": split[1], "EncodedPixels": frame["EncodedPixels"]})
    out = frame[NORMAL_COLUMNS].copy()
    out["ImageId"] = out["ImageId"].astype(str).str.strip()
    class_text = out["ClassId"].astype(str).str.strip()
    numeric = pd.to_numeric(class_text, errors="coerce")
    if numeric.isna().any() or (numeric % 1 != 0).any():
        bad = class_text[numeric.isna() | (numeric % 1 != 0)].iloc[0]
        raise ValueError(f"ClassId {bad!r} is not an integer")
    out["ClassId"] = numeric.astype(int)
    out["EncodedPixels"] = out["EncodedPixels"].fillna("").astype(str).str.strip()
    return out.reset_index(drop=True)


def non_empty(frame: pd.DataFrame, class_ids: Sequence[int] = CLASS_IDS) -> pd.DataFrame:
    """Rows whose mask is not empty, of the classes ``class_ids`` only."""
    return frame[(frame["EncodedPixels"] != "") & frame["ClassId"].isin(class_ids)]


def rle_lookup(frame: pd.DataFrame, class_ids: Sequence[int] = CLASS_IDS) -> dict[str, dict[int, str]]:
    """``{ImageId: {ClassId: rle}}`` for the non-empty masks of a normal frame."""
    lookup: dict[str, dict[int, str]] = {}
    for image_id, class_id, rle in non_empty(frame, class_ids).itertuples(index=False):
        lookup.setdefault(image_id, {})[int(class_id)] = rle
    return lookup


def presence_table(frame: pd.DataFrame, image_ids, class_ids: Sequence[int] = CLASS_IDS) -> pd.DataFrame:
    """``ImageId, has_1..has_C`` (0/1) for ``image_ids`` from a normal label frame."""
    table = pd.DataFrame({"ImageId": list(image_ids)})
    positives = non_empty(frame, class_ids)
    for class_id in class_ids:
        ids = set(positives.loc[positives["ClassId"] == class_id, "ImageId"])
        table[f"has_{class_id}"] = table["ImageId"].isin(ids).astype(int)
    return table


def masks_for(rles: dict[int, str], shape: tuple[int, int] = (HEIGHT, WIDTH), num_classes: int = NUM_CLASSES
              ) -> np.ndarray:
    """Stack an image's class masks.

    Args:
        rles: ``{ClassId: rle}``; missing classes are empty.
        shape: ``(height, width)``.
        num_classes: channels (class ids 1..num_classes).

    Returns:
        ``(height, width, num_classes)`` uint8 array of 0/1.
    """
    masks = np.zeros((*shape, num_classes), dtype=np.uint8)  # (256, 1600, 4)
    for class_id, rle in rles.items():
        masks[..., class_id - 1] = decode(rle, shape)
    return masks


def to_submission_layout(frame: pd.DataFrame, layout: str = "long") -> pd.DataFrame:
    """A normal frame as written to disk: ``ImageId,EncodedPixels,ClassId`` or the legacy pair."""
    if layout == "long":
        return frame[list(SUBMISSION_COLUMNS)]
    if layout == "legacy":
        return pd.DataFrame({
            "ImageId_ClassId": frame["ImageId"] + "_" + frame["ClassId"].astype(str),
            "EncodedPixels": frame["EncodedPixels"],
        })
    raise ValueError(f"layout must be 'long' or 'legacy', got {layout!r}")


# ----------------------------------------------------------------------------- statistics of a training set

def presence_columns(class_ids: Sequence[int] = CLASS_IDS) -> list[str]:
    """``["has_1", ..., "has_C"]``."""
    return [f"has_{class_id}" for class_id in class_ids]


def classes_per_image(presence: pd.DataFrame, class_ids: Sequence[int] = CLASS_IDS) -> pd.Series:
    """Number of images with 0, 1, ..., C defect classes (index 0..C)."""
    counts = presence[presence_columns(class_ids)].sum(axis=1).value_counts()
    return counts.reindex(range(len(class_ids) + 1), fill_value=0)


def class_combinations(presence: pd.DataFrame, class_ids: Sequence[int] = CLASS_IDS) -> pd.Series:
    """Images per combination of classes, most common first; index like ``"3"``, ``"1+3"``, ``"none"``."""
    has = presence[presence_columns(class_ids)].to_numpy().astype(bool)  # (images, C)
    names = ["+".join(str(c) for c, present in zip(class_ids, row, strict=True) if present) or "none"
             for row in has]
    counts = pd.Series(names).value_counts()
    return counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")


def mask_areas(labels: pd.DataFrame, image_ids: Iterable[str], class_ids: Sequence[int] = CLASS_IDS
               ) -> dict[int, np.ndarray]:
    """``{class id: mask areas in pixels}`` of the non-empty masks of ``image_ids``."""
    masks = non_empty(labels, class_ids)
    masks = masks[masks["ImageId"].isin(set(image_ids))]
    return {class_id: np.array([area(rle) for rle in masks.loc[masks["ClassId"] == class_id, "EncodedPixels"]],
                               dtype=np.int64)
            for class_id in class_ids}


def choose_examples(presence: pd.DataFrame, class_id: int, count: int, seed: int) -> list[str]:
    """Up to ``count`` images showing ``class_id``, drawn reproducibly, in name order."""
    candidates = sorted(presence.loc[presence[f"has_{class_id}"] == 1, "ImageId"])
    if len(candidates) <= count:
        return candidates
    rng = np.random.default_rng([seed, class_id])
    return sorted(rng.choice(candidates, count, replace=False).tolist())


# ----------------------------------------------------------------------------- label maps (the masks layout)

def label_map_rows(image_id: str, label_map: np.ndarray, class_ids: Sequence[int]) -> list[tuple[str, int, str]]:
    """The normal-frame rows ``(ImageId, ClassId, rle)`` of one label map (pixel value = class number, 0 = none).

    Args:
        image_id: the image's file name.
        label_map: ``(height, width)`` integer array.
        class_ids: the data set's classes ``1..C``; every class gets a row (``""`` when absent).
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"a label map must be 2-D (height, width), got shape {label_map.shape}")
    return [(image_id, int(class_id), encode(label_map == class_id)) for class_id in class_ids]
