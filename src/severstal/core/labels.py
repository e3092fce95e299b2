"""Label and submission tables in both Kaggle layouts, normalised to one long frame.

The normal form has columns ``ImageId`` (str), ``ClassId`` (int) and ``EncodedPixels``
(str, ``""`` for an empty mask). ``train.csv`` since October 2019 and ``sample_submission.csv``
are already long; the 2019 layout packs both ids into ``ImageId_ClassId`` (``abc.jpg_3``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .constants import CLASS_IDS, HEIGHT, LEGACY_COLUMNS, SUBMISSION_COLUMNS, WIDTH
from .rle import decode

NORMAL_COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]


def detect_layout(columns) -> str:
    """``"long"`` or ``"legacy"`` from a header; ``ValueError`` naming the expected headers otherwise."""
    columns = [str(c).strip() for c in columns]
    if {"ImageId", "ClassId", "EncodedPixels"} <= set(columns):
        return "long"
    if set(LEGACY_COLUMNS) <= set(columns):
        return "legacy"
    raise ValueError(
        f"unexpected columns {columns}: expected ImageId,ClassId,EncodedPixels (any order) "
        "or the 2019 layout ImageId_ClassId,EncodedPixels"
    )


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


def read_table(path) -> pd.DataFrame:
    """Read a label or submission CSV of either layout into the normal form."""
    return normalise(pd.read_csv(path, dtype=str, keep_default_na=False))


def non_empty(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose mask is not empty, ClassId 1..4 only."""
    return frame[(frame["EncodedPixels"] != "") & frame["ClassId"].isin(CLASS_IDS)]


def rle_lookup(frame: pd.DataFrame) -> dict[str, dict[int, str]]:
    """``{ImageId: {ClassId: rle}}`` for the non-empty masks of a normal frame."""
    lookup: dict[str, dict[int, str]] = {}
    for image_id, class_id, rle in non_empty(frame).itertuples(index=False):
        lookup.setdefault(image_id, {})[int(class_id)] = rle
    return lookup


def presence_table(frame: pd.DataFrame, image_ids) -> pd.DataFrame:
    """``ImageId, has_1..has_4`` (0/1) for ``image_ids`` from a normal label frame."""
    table = pd.DataFrame({"ImageId": list(image_ids)})
    positives = non_empty(frame)
    for class_id in CLASS_IDS:
        ids = set(positives.loc[positives["ClassId"] == class_id, "ImageId"])
        table[f"has_{class_id}"] = table["ImageId"].isin(ids).astype(int)
    return table


def masks_for(rles: dict[int, str], shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Stack an image's class masks.

    Args:
        rles: ``{ClassId: rle}``; missing classes are empty.
        shape: ``(height, width)``.

    Returns:
        ``(height, width, 4)`` uint8 array of 0/1.
    """
    masks = np.zeros((*shape, len(CLASS_IDS)), dtype=np.uint8)  # (256, 1600, 4)
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
