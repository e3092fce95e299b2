"""Mean Dice over (ImageId, ClassId) pairs, as Kaggle scores Severstal.

Each pair scores ``2|P∩T| / (|P| + |T|)``, and 1 when both masks are empty; the score is the
mean over all pairs (not a Dice of masks flattened over a batch). Scoring works on run lengths
directly, so a full test set scores in seconds without decoding masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .constants import CLASS_IDS, NUM_PIXELS
from .rle import parse_runs, validate


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape; 1.0 when both are empty."""
    if prediction.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {prediction.shape}, truth {truth.shape}")
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def dice_from_areas(predicted_area, true_area, intersection) -> np.ndarray:
    """Vectorised Dice from areas: ``2 I / (P + T)``, 1 where ``P + T == 0``."""
    predicted_area = np.asarray(predicted_area, dtype=np.float64)
    total = predicted_area + np.asarray(true_area, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        twice_shared = 2.0 * np.asarray(intersection, dtype=np.float64)
        return np.where(total == 0, 1.0, twice_shared / np.maximum(total, 1))


def run_intersection(starts_a, lengths_a, starts_b, lengths_b) -> int:
    """Pixels covered by both of two sorted, non-overlapping run lists (0-indexed starts)."""
    if len(starts_a) == 0 or len(starts_b) == 0:
        return 0
    cumulative = np.concatenate([[0], np.cumsum(lengths_b)])

    def covered_before(x):  # pixels of B strictly before position x
        index = np.searchsorted(starts_b, x, side="right") - 1
        safe = np.maximum(index, 0)
        inside = np.minimum(np.maximum(x - starts_b[safe], 0), lengths_b[safe])
        return np.where(index >= 0, cumulative[safe] + inside, 0)

    return int((covered_before(starts_a + lengths_a) - covered_before(starts_a)).sum())


def pair_areas(predicted_rle: str, true_rle: str, num_pixels: int = NUM_PIXELS) -> tuple[int, int, int]:
    """``(predicted area, true area, intersection)`` of two RLE strings."""
    starts_p, lengths_p = parse_runs(predicted_rle, num_pixels)
    starts_t, lengths_t = parse_runs(true_rle, num_pixels)
    shared = run_intersection(starts_p, lengths_p, starts_t, lengths_t)
    return int(lengths_p.sum()), int(lengths_t.sum()), shared


def _masks_by_pair(frame: pd.DataFrame, what: str, class_ids: Sequence[int]) -> pd.DataFrame:
    """The non-empty rows of a normal frame's classes; ``ValueError`` when a pair appears twice."""
    rows = frame[frame["ClassId"].isin(class_ids)]
    repeated = rows.duplicated(["ImageId", "ClassId"])
    if repeated.any():
        first = rows[repeated].iloc[0]
        raise ValueError(f"{what} has more than one row for {first.ImageId} class {first.ClassId}")
    return rows.loc[rows["EncodedPixels"] != "", ["ImageId", "ClassId", "EncodedPixels"]]


def score_pairs(submission: pd.DataFrame, truth: pd.DataFrame, num_pixels: int = NUM_PIXELS,
                class_ids: Sequence[int] = CLASS_IDS) -> pd.DataFrame:
    """Dice of every (image, class) pair of the images in ``submission``.

    Args:
        submission: normal frame (see ``labels.normalise``); rows with ClassId 0 are ignored,
            a missing pair counts as an empty prediction.
        truth: normal frame of true masks (rows for non-empty masks suffice).
        num_pixels: pixels per image.
        class_ids: the classes scored.

    Returns:
        Frame with ``ImageId, ClassId, predicted_area, true_area, intersection, dice``,
        one row per image in ``submission`` and class.

    Raises:
        ValueError: a pair listed twice in either frame, or a malformed RLE (naming the pair).
    """
    images = pd.unique(submission["ImageId"])
    pairs = pd.DataFrame({
        "ImageId": np.repeat(images, len(class_ids)),
        "ClassId": np.tile(np.array(class_ids), len(images)),
    })
    predicted = _masks_by_pair(submission, "submission", class_ids)
    true = _masks_by_pair(truth, "truth", class_ids)
    merged = pairs.merge(predicted.rename(columns={"EncodedPixels": "predicted"}), how="left",
                         on=["ImageId", "ClassId"])
    merged = merged.merge(true.rename(columns={"EncodedPixels": "true"}), how="left",
                          on=["ImageId", "ClassId"])
    areas = np.zeros((len(merged), 3), dtype=np.int64)  # predicted area, true area, intersection
    for row, (image_id, class_id, predicted_rle, true_rle) in enumerate(merged.itertuples(index=False)):
        predicted_rle = predicted_rle if isinstance(predicted_rle, str) else ""
        true_rle = true_rle if isinstance(true_rle, str) else ""
        if predicted_rle or true_rle:
            try:
                areas[row] = pair_areas(predicted_rle, true_rle, num_pixels)
            except ValueError as error:
                side = "submission" if validate(predicted_rle, num_pixels) else "truth"
                raise ValueError(f"{side} mask of {image_id} class {class_id}: {error}") from None
    result = pairs.copy()
    result["predicted_area"], result["true_area"], result["intersection"] = areas.T
    result["dice"] = dice_from_areas(areas[:, 0], areas[:, 1], areas[:, 2])
    return result


def class_table(pairs: pd.DataFrame, class_ids: Sequence[int] = CLASS_IDS) -> pd.DataFrame:
    """Per-class summary of ``score_pairs`` output plus an ``all`` row.

    Columns: ``dice`` (mean), ``pairs``, ``positives`` (true mask non-empty), ``false_positive``
    (predicted on an empty truth), ``false_negative`` (nothing predicted on a non-empty truth).
    """
    def summarise(group: pd.DataFrame) -> dict:
        predicted, true = group["predicted_area"] > 0, group["true_area"] > 0
        return {
            "dice": group["dice"].mean() if len(group) else float("nan"),
            "pairs": len(group),
            "positives": int(true.sum()),
            "false_positive": int((predicted & ~true).sum()),
            "false_negative": int((~predicted & true).sum()),
        }

    rows = {f"class {c}": summarise(pairs[pairs["ClassId"] == c]) for c in class_ids}
    rows["all"] = summarise(pairs)
    return pd.DataFrame.from_dict(rows, orient="index")


def class_table_text(pairs: pd.DataFrame, class_ids: Sequence[int] = CLASS_IDS) -> str:
    """:func:`class_table` as aligned text, Dice to 6 decimals (what ``score`` and ``report`` print)."""
    return class_table(pairs, class_ids).to_string(formatters={"dice": "{:.6f}".format})


def mean_dice(pairs: pd.DataFrame) -> float:
    """The competition score of ``score_pairs`` output."""
    return float(pairs["dice"].mean()) if len(pairs) else float("nan")


# ----------------------------------------------------------------------------- out-of-fold summaries

THRESHOLD = 0.5  # the untuned pixel and classifier threshold of the summaries


def raw_dice(probabilities: np.ndarray, truth: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Dice of each (image, class) at a pixel threshold, no post-processing: ``(N, H, W, C)`` -> ``(N, C)``."""
    count, channels = probabilities.shape[0], probabilities.shape[-1]

    def areas(mask):  # (N, H, W, C) bool -> (N, C); counting along contiguous rows is much faster
        return np.count_nonzero(np.ascontiguousarray(np.moveaxis(mask, -1, 1)).reshape(count * channels, -1),
                                axis=1).reshape(count, channels)

    predicted, truth = probabilities > threshold, truth.astype(bool)
    return dice_from_areas(areas(predicted), areas(truth), areas(predicted & truth))


def segmentation_summary(scores: np.ndarray, true_area: np.ndarray) -> dict:
    """Mean Dice over all pairs, per class, and per class over the images that have the class.

    Args:
        scores: (N, classes) Dice per (image, class), e.g. :func:`raw_dice`.
        true_area: (N, classes) true mask areas.
    """
    present = true_area > 0  # (N, classes)
    class_ids = range(1, scores.shape[1] + 1)
    return {
        "dice_at_0.5": float(scores.mean()),
        "dice_per_class_at_0.5": {str(c): float(scores[:, c - 1].mean()) for c in class_ids},
        "dice_on_images_with_class": {
            str(c): float(scores[present[:, c - 1], c - 1].mean()) if present[:, c - 1].any() else None
            for c in class_ids},
        "images_with_class": {str(c): int(present[:, c - 1].sum()) for c in class_ids},
    }


def classification_groups(num_classes: int) -> tuple[str, ...]:
    """``("class 1", ..., "class C", "any defect")``: the groups of :func:`classification_summary`."""
    return (*(f"class {c}" for c in range(1, num_classes + 1)), "any defect")


def classification_summary(probabilities: np.ndarray, truth: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Precision, recall, F1 and confusion counts per class and for any defect (max over classes).

    Args:
        probabilities: ``(N, classes)`` predicted class presence.
        truth: ``(N, classes)`` 0/1 true presence.

    Returns:
        ``{group: {"precision", "recall", "f1", "true_positive", "false_positive", "false_negative",
        "true_negative", "positives"}}`` for :func:`classification_groups`.
    """
    predicted = np.column_stack([probabilities > threshold, probabilities.max(axis=1) > threshold])  # (N, C + 1)
    actual = np.column_stack([truth > 0, truth.max(axis=1) > 0])
    summary = {}
    for index, group in enumerate(classification_groups(probabilities.shape[1])):
        p, t = predicted[:, index], actual[:, index]
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        summary[group] = {"precision": precision, "recall": recall, "f1": f1, "true_positive": tp,
                          "false_positive": fp, "false_negative": fn, "true_negative": int((~p & ~t).sum()),
                          "positives": int(t.sum())}
    return summary
