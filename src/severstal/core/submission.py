"""Submission-format checks (pure): what Kaggle would reject, found before uploading.

Accepted layouts: ``ImageId,EncodedPixels,ClassId`` (the official sample's, columns in any order)
and the 2019 ``ImageId_ClassId,EncodedPixels``. ClassId is 0..4; 0, as in the official sample,
means nothing predicted for the image. Line numbers count the header as line 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .constants import CLASS_IDS, LEGACY_COLUMNS, NUM_PIXELS, SUBMISSION_COLUMNS
from .labels import layout_of
from .rle import validate


def sample_submission(image_ids: Iterable[str]) -> pd.DataFrame:
    """A submission like Kaggle's ``sample_submission.csv``: every image's row ``1 409600`` with class 0."""
    frame = pd.DataFrame({"ImageId": list(image_ids), "EncodedPixels": f"1 {NUM_PIXELS}", "ClassId": 0})
    return frame[list(SUBMISSION_COLUMNS)]


def _examples(names: Iterable[str], count: int = 5) -> str:
    names = sorted(names)
    more = f", ... ({len(names) - count:,} more)" if len(names) > count else ""
    return ", ".join(names[:count]) + more


def check_submission(frame_raw: pd.DataFrame, expected_image_ids: Iterable[str] | None,
                     class_ids: Iterable[int] = CLASS_IDS, num_pixels: int = NUM_PIXELS) -> list[str]:
    """Check a submission frame as Kaggle would, reporting every problem.

    Args:
        frame_raw: the CSV read as text (``infra.tables.read_csv_text``).
        expected_image_ids: the test image file names; every one must appear and no other may.
            None skips these two checks (e.g. for one shard of a split prediction).
        class_ids: the classes (ClassId 0 is also accepted: nothing predicted for the image).
        num_pixels: pixels per image, the largest valid RLE end.

    Returns:
        Problems (empty when valid): header, missing or unknown images, ClassIds outside 0..4,
        duplicate (image, class) pairs, invalid RLE (unsorted, overlapping, non-positive or
        beyond 409,600 pixels).
    """
    columns = [str(c).strip() for c in frame_raw.columns]
    layout = layout_of(columns, exact=True)
    if layout is None:
        return [f"header is {','.join(columns)}: expected {','.join(SUBMISSION_COLUMNS)} "
                f"(or the 2019 layout {','.join(LEGACY_COLUMNS)})"]
    frame = frame_raw.set_axis(columns, axis=1).fillna("").astype(str)
    lines = pd.RangeIndex(2, len(frame) + 2)  # CSV line of each row
    problems: list[str] = []
    if layout == "long":
        image_ids = frame["ImageId"].str.strip()
        class_text = frame["ClassId"].str.strip()
        malformed = pd.Series(False, index=frame.index)
    else:
        pair = frame["ImageId_ClassId"].str.strip()
        split = pair.str.rpartition("_")
        image_ids, class_text, malformed = split[0], split[2], split[1] == ""
        for line, text in zip(lines[malformed.to_numpy()], pair[malformed], strict=True):
            problems.append(f"line {line}: ImageId_ClassId {text!r} is not of the form <image>_<class>")
    for line in lines[((image_ids == "") & ~malformed).to_numpy()]:
        problems.append(f"line {line}: ImageId is empty")
    numbers = pd.to_numeric(class_text, errors="coerce")
    allowed = (0, *class_ids)
    valid_class = numbers.isin(allowed)
    bad_class = (~valid_class & ~malformed).to_numpy()
    for line, text in zip(lines[bad_class], class_text[bad_class], strict=True):
        problems.append(f"line {line}: ClassId {text!r} is not one of {min(allowed)}-{max(allowed)}")
    pairs = pd.DataFrame({"image": image_ids, "class": numbers})
    duplicated = (pairs.duplicated(keep="first") & valid_class & (image_ids != "")).to_numpy()
    for line, image_id, number in zip(lines[duplicated], image_ids[duplicated], numbers[duplicated],
                                      strict=True):
        problems.append(f"line {line}: duplicate row for ({image_id}, class {number:g})")
    encoded = frame["EncodedPixels"].str.strip()
    errors = {rle: validate(rle, num_pixels) for rle in encoded[encoded != ""].unique()}
    for line, image_id, rle in zip(lines, image_ids, encoded, strict=True):
        if rle and errors[rle]:
            problems.append(f"line {line}: invalid EncodedPixels for {image_id}: {errors[rle]}")
    if frame.empty:
        problems.insert(0, "the submission has no rows")
    if expected_image_ids is not None:
        expected = set(expected_image_ids)
        present = set(image_ids) - {""}
        missing, unknown = expected - present, present - expected
        if missing:
            problems.insert(0, f"{len(missing):,} of {len(expected):,} test images have no row: "
                               f"{_examples(missing)}")
        if unknown:
            problems.insert(0, f"{len(unknown):,} images are not in the test set: {_examples(unknown)}")
    return problems
