"""Pure ensemble logic: fold/TTA averaging, submission rows, shards and the post-processing ablation.

Nothing here reads or writes files or imports TensorFlow; ``predict``, ``merge`` and ``report``
wire these functions to files.

Ablation variants (cumulative steps, each scored per (image, class) pair):

- ``empty``: every mask empty (the all-empty submission);
- ``raw``: the ensembled segmenter at pixel threshold 0.5, no component or area removal, no gate;
- ``pixel_area``: the tuned pixel threshold, minimum component size and minimum area, no gate;
- ``gate``: the tuned thresholds with the tuned classifier gate (the post-processing of the submission);
- ``final``: the submission file as written, scored from its RLE strings (equals ``gate`` unless
  encoding or writing went wrong; ``report`` checks it against a fresh score of the file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .constants import CLASS_IDS, NUM_CLASSES
from .labels import NORMAL_COLUMNS, to_submission_layout
from .metric import dice_from_areas
from .postprocess import DEFAULT_THRESHOLDS, ClassThresholds, per_class_thresholds, postprocess_masks
from .rle import encode

MASK_VARIANTS = ("empty", "raw", "pixel_area", "gate")  # computed from probability maps
VARIANTS = (*MASK_VARIANTS, "final")  # + the submission as written
VARIANT_LABELS = {
    "empty": "all empty",
    "raw": "raw segmenter, pixel threshold 0.5",
    "pixel_area": "+ tuned pixel threshold, component and area minimums",
    "gate": "+ tuned classifier gate",
    "final": "final tuned (the submission)",
}
FLIPS = ("none", "hflip", "vflip", "both")
LAYOUTS = ("long", "legacy")


def mean_probabilities(predictions: Iterable[np.ndarray]) -> np.ndarray:
    """Arithmetic mean of probability maps (folds, flips), summed one at a time.

    Args:
        predictions: arrays of one shape, e.g. (batch, 256, 1600, 4) per fold model and flip; a
            generator keeps at most one prediction and the running sum in memory.

    Returns:
        float32 array of that shape.
    """
    total, count = None, 0
    for prediction in predictions:
        prediction = np.asarray(prediction, dtype=np.float32)
        if total is None:
            total = prediction.copy()
        elif prediction.shape != total.shape:
            raise ValueError(f"cannot average predictions of shapes {total.shape} and {prediction.shape}")
        else:
            total += prediction
        count += 1
    if total is None:
        raise ValueError("no predictions to average")
    return total / np.float32(count)


def flip(images: np.ndarray, name: str) -> np.ndarray:
    """Flip ``(batch, h, w, ...)`` arrays: ``hflip`` mirrors left-right, ``vflip`` top-bottom, ``both`` both.

    Every flip is its own inverse, so the same call maps predictions back.
    """
    if name == "none":
        return images
    if name == "hflip":
        return images[:, :, ::-1]
    if name == "vflip":
        return images[:, ::-1]
    if name == "both":
        return images[:, ::-1, ::-1]
    raise ValueError(f"unknown flip {name!r}; expected one of {', '.join(FLIPS)}")


def select_folds(spec, available: Sequence[int]) -> list[int]:
    """The folds to use, from ``all`` or a list of fold numbers.

    Args:
        spec: ``"all"`` or fold numbers (the config's normal form of ``inference.folds``; a list or
            a text such as ``"0,1"`` works too).
        available: the folds there are (e.g. those with a trained model).

    Returns:
        Sorted fold numbers.

    Raises:
        ValueError: a fold that is not available, or nothing to use.
    """
    available = sorted(int(fold) for fold in available)
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        folds = available
    else:
        parts = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, int) else list(spec)
        try:
            folds = sorted({int(str(part).strip()) for part in parts if str(part).strip()})
        except ValueError:
            raise ValueError(f"folds must be 'all' or fold numbers such as 0,1, got {spec!r}") from None
        missing = [fold for fold in folds if fold not in available]
        if missing:
            raise ValueError(f"fold(s) {missing} are not available; available: {available or 'none'}")
    if not folds:
        raise ValueError("no fold to use")
    return folds


def mask_rows(image_id: str, masks: np.ndarray) -> list[tuple[str, int, str]]:
    """The submission rows of one image in normal form.

    Args:
        image_id: the image's file name.
        masks: (H, W, classes) 0/1 masks, channel = class id - 1 (256 x 1600 x 4 on Kaggle).

    Returns:
        ``[(ImageId, ClassId, EncodedPixels)]`` for class 1..classes, ``""`` for an empty mask.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (H, W, classes), got shape {masks.shape}")
    return [(image_id, channel + 1, encode(masks[..., channel])) for channel in range(masks.shape[-1])]


def empty_rows(image_id: str, class_ids: Sequence[int] = CLASS_IDS) -> list[tuple[str, int, str]]:
    """The rows of an image predicted empty (e.g. an unreadable one skipped with --skip-bad)."""
    return [(image_id, class_id, "") for class_id in class_ids]


def rows_frame(rows: Iterable[tuple[str, int, str]]) -> pd.DataFrame:
    """Normal frame (``ImageId, ClassId, EncodedPixels``) of submission rows, sorted by image then class."""
    frame = pd.DataFrame(list(rows), columns=NORMAL_COLUMNS)
    frame["ClassId"] = frame["ClassId"].astype(int)
    return frame.sort_values(["ImageId", "ClassId"], kind="stable").reset_index(drop=True)


def submission_csv(frame: pd.DataFrame, layout: str = "long") -> str:
    """The text of a submission file from a normal frame.

    Args:
        frame: ``ImageId, ClassId, EncodedPixels``.
        layout: ``"long"`` (``ImageId,EncodedPixels,ClassId``, Kaggle's current sample) or
            ``"legacy"`` (``ImageId_ClassId,EncodedPixels``, the 2019 layout).

    Returns:
        CSV text with a header and ``\\n`` line ends.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return to_submission_layout(frame, layout).to_csv(index=False, lineterminator="\n")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``1 <= i <= n`` (shards are numbered from 1)."""
    try:
        index_text, count_text = str(text).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 2/4), got {text!r}") from None
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return index, count


def shard_ids(image_ids: Iterable[str], index: int, count: int) -> list[str]:
    """The images of shard ``index`` of ``count``: contiguous chunks of the sorted ids.

    Chunk sizes differ by at most one (the first chunks are the larger), so shards 1..n in
    order are exactly the sorted ids.
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard index must be in 1..{count}, got {index}")
    ordered = sorted(image_ids)
    base, extra = divmod(len(ordered), count)
    start = (index - 1) * base + min(index - 1, extra)
    return ordered[start:start + base + (1 if index <= extra else 0)]


def shard_file_name(index: int, count: int, suffix: str = ".csv") -> str:
    """``part-<index>-of-<count>.csv``."""
    return f"part-{index}-of-{count}{suffix}"


def merge_shards(parts: Mapping[int, pd.DataFrame], count: int) -> pd.DataFrame:
    """Join the normal frames of shards 1..count into one, in submission order.

    Raises:
        ValueError: a shard is missing or unexpected, or two shards hold the same image.
    """
    missing = [index for index in range(1, count + 1) if index not in parts]
    extra = sorted(index for index in parts if not 1 <= index <= count)
    if missing or extra:
        raise ValueError(f"shards of {count}: missing {missing or 'none'}, unexpected {extra or 'none'}")
    owner: dict[str, int] = {}
    for index in sorted(parts):
        for image_id in pd.unique(parts[index]["ImageId"]):
            if image_id in owner:
                raise ValueError(f"image {image_id} is in shard {owner[image_id]} and shard {index}: "
                                 "the shards overlap (made from different image lists?)")
            owner[image_id] = index
    return rows_frame(pd.concat([parts[index] for index in sorted(parts)], ignore_index=True)
                      .itertuples(index=False))


def without_gate(thresholds: Sequence[ClassThresholds]) -> list[ClassThresholds]:
    """The same thresholds with the classifier gate off (classifier threshold 0)."""
    return [dataclasses.replace(setting, classifier_threshold=0.0) for setting in thresholds]


def variant_masks(probabilities: np.ndarray, thresholds, classifier_probabilities: np.ndarray | None
                  ) -> dict[str, np.ndarray]:
    """The masks of every ablation variant of one image (see the module docstring).

    Args:
        probabilities: (256, 1600, 4) ensembled segmenter probabilities.
        thresholds: tuned thresholds (see ``postprocess.per_class_thresholds``).
        classifier_probabilities: (4,) ensembled classifier probabilities, or None (no classifier).

    Returns:
        ``{variant: (256, 1600, 4) uint8 masks}`` for :data:`MASK_VARIANTS`; ``"gate"`` is the
        submission's post-processing.
    """
    tuned = per_class_thresholds(thresholds, probabilities.shape[-1])
    return {
        "empty": np.zeros(probabilities.shape, dtype=np.uint8),
        "raw": postprocess_masks(probabilities, DEFAULT_THRESHOLDS),
        "pixel_area": postprocess_masks(probabilities, without_gate(tuned)),
        "gate": postprocess_masks(probabilities, tuned, classifier_probabilities),
    }


def class_planes(masks: np.ndarray) -> np.ndarray:
    """(H, W, 4) masks -> contiguous (4, H, W) bool planes (per-class counts on them are ~10x faster)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(masks), -1, 0)) != 0


class AblationAccumulator:
    """Per-(image, class) areas of the ablation variants, gathered image by image.

    Memory grows by a few numbers per image, never by masks.
    """

    def __init__(self, variants: Sequence[str] = MASK_VARIANTS):
        self.variants = tuple(variants)
        self.image_ids: list[str] = []
        self.true_area: list[np.ndarray] = []  # (4,) per image
        self.predicted_area: dict[str, list[np.ndarray]] = {name: [] for name in self.variants}
        self.intersection: dict[str, list[np.ndarray]] = {name: [] for name in self.variants}

    def add(self, image_id: str, truth: np.ndarray, masks: Mapping[str, np.ndarray]) -> None:
        """Record one image.

        Args:
            image_id: its file name.
            truth: (H, W, 4) true masks.
            masks: ``{variant: (H, W, 4) masks}`` with every variant of this accumulator.
        """
        missing = [name for name in self.variants if name not in masks]
        if missing:
            raise ValueError(f"masks of variants {missing} are missing for {image_id}")
        true_planes = class_planes(truth)  # (4, H, W) bool
        self.image_ids.append(image_id)
        self.true_area.append(np.array([np.count_nonzero(plane) for plane in true_planes]))
        for name in self.variants:
            planes = class_planes(masks[name])
            if planes.shape != true_planes.shape:
                raise ValueError(f"{name} masks of {image_id} have shape {np.shape(masks[name])}, "
                                 f"truth {np.shape(truth)}")
            self.predicted_area[name].append(np.array([np.count_nonzero(plane) for plane in planes]))
            self.intersection[name].append(np.array([
                np.count_nonzero(plane & true_plane) for plane, true_plane in zip(planes, true_planes, strict=True)]))

    def pairs(self) -> pd.DataFrame:
        """One row per (image, class): ``ImageId, ClassId, true_area`` and, per variant,
        ``<variant>_area``, ``<variant>_dice``; sorted by image, then class."""
        count = len(self.image_ids)
        classes = len(self.true_area[0]) if self.true_area else NUM_CLASSES
        frame = pd.DataFrame({
            "ImageId": np.repeat(np.array(self.image_ids, dtype=object), classes),
            "ClassId": np.tile(np.arange(1, classes + 1), count),
        })
        true_area = np.array(self.true_area, dtype=np.int64).reshape(-1)
        frame["true_area"] = true_area
        for name in self.variants:
            area = np.array(self.predicted_area[name], dtype=np.int64).reshape(-1)
            shared = np.array(self.intersection[name], dtype=np.int64).reshape(-1)
            frame[f"{name}_area"] = area
            frame[f"{name}_dice"] = dice_from_areas(area, true_area, shared)
        return frame.sort_values(["ImageId", "ClassId"], kind="stable").reset_index(drop=True)


def add_scored_variant(pairs: pd.DataFrame, scored: pd.DataFrame, name: str = "final") -> pd.DataFrame:
    """Add a variant scored elsewhere (``metric.score_pairs`` output) to an ablation pair frame.

    Raises:
        ValueError: when the two frames do not hold the same (image, class) pairs.
    """
    joined = pairs.merge(scored[["ImageId", "ClassId", "predicted_area", "dice"]], how="left",
                         on=["ImageId", "ClassId"], validate="one_to_one")
    if len(scored) != len(pairs) or joined["dice"].isna().any():
        raise ValueError(f"the scored {name} variant does not cover the same (image, class) pairs")
    joined[f"{name}_area"] = joined.pop("predicted_area").astype(np.int64)
    joined[f"{name}_dice"] = joined.pop("dice")
    return joined


def pair_variants(pairs: pd.DataFrame) -> list[str]:
    """The variants present in a pair frame, in :data:`VARIANTS` order."""
    return [name for name in VARIANTS if f"{name}_dice" in pairs.columns]


def ablation_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per variant: index = variants, columns ``mean, class_1..class_C, gain``.

    ``gain`` is the change of the mean from the row above (NaN for the first row).
    """
    rows = {}
    for name in pair_variants(pairs):
        row = {"mean": float(pairs[f"{name}_dice"].mean())}
        for class_id in sorted(pairs["ClassId"].unique()):
            row[f"class_{class_id}"] = float(pairs.loc[pairs["ClassId"] == class_id, f"{name}_dice"].mean())
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["gain"] = table["mean"].diff()
    return table


def image_scores(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per-image mean Dice from per-pair scores (``metric.score_pairs`` output).

    Returns:
        ``ImageId, dice, true_area, predicted_area, informative`` (informative: a true or a
        predicted mask is non-empty), sorted by ImageId.
    """
    grouped = pairs.groupby("ImageId", sort=True).agg(
        dice=("dice", "mean"), true_area=("true_area", "sum"), predicted_area=("predicted_area", "sum"))
    grouped["informative"] = (grouped["true_area"] > 0) | (grouped["predicted_area"] > 0)
    return grouped.reset_index()


def best_and_worst(scores: pd.DataFrame, count: int) -> tuple[list[str], list[str]]:
    """The ``count`` best and ``count`` worst informative images of :func:`image_scores` output.

    Images where nothing is predicted and nothing is true (Dice 1 for free) are left out. Ties go
    to the smaller ImageId; an image is never in both lists (the worst are chosen first).

    Returns:
        ``(best, best first; worst, worst first)``; shorter when there are too few images.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    informative = scores[scores["informative"]]
    worst = informative.sort_values(["dice", "ImageId"], kind="stable").head(count)
    rest = informative[~informative["ImageId"].isin(worst["ImageId"])]
    best = rest.assign(negative=-rest["dice"]).sort_values(["negative", "ImageId"], kind="stable").head(count)
    return best["ImageId"].tolist(), worst["ImageId"].tolist()


def variant_pairs(pairs: pd.DataFrame, variant: str) -> pd.DataFrame:
    """One variant of an ablation pair frame in ``metric.score_pairs`` form
    (``ImageId, ClassId, predicted_area, true_area, dice``)."""
    return pd.DataFrame({
        "ImageId": pairs["ImageId"], "ClassId": pairs["ClassId"],
        "predicted_area": pairs[f"{variant}_area"], "true_area": pairs["true_area"],
        "dice": pairs[f"{variant}_dice"],
    })


BEST_WORST_LISTED = 10  # images named in an ablation document's best and worst lists


def ablation_document(pairs: pd.DataFrame, experiment: str, submission: str, submission_sha256: str,
                      pairs_csv: str, created: str) -> dict:
    """The content of ``ablation.json`` from the per-pair frame (all variants including ``final``).

    Keys: ``experiment``, ``created``, ``submission`` and its ``submission_sha256`` (``report``
    refuses an ablation made for another file), ``images``, ``pairs``, ``variants`` (in step order:
    ``name``, ``label``, ``mean_dice``, ``gain`` over the previous step, ``class_dice`` by class id),
    ``best_images`` / ``worst_images`` (up to 10 informative images by the submission's per-image Dice)
    and ``pairs_csv`` (every (image, class) pair: true area and, per variant, predicted area and Dice).
    """
    table = ablation_table(pairs)
    scores = image_scores(variant_pairs(pairs, "final"))
    best, worst = best_and_worst(scores, BEST_WORST_LISTED)
    final_scores = scores.set_index("ImageId")["dice"]
    class_ids = sorted(int(c) for c in pairs["ClassId"].unique())

    def number(value) -> float | None:
        return None if pd.isna(value) else round(float(value), 8)

    return {
        "experiment": experiment,
        "created": created,
        "submission": submission,
        "submission_sha256": submission_sha256,
        "images": int(pairs["ImageId"].nunique()),
        "pairs": len(pairs),
        "variants": [
            {"name": name, "label": VARIANT_LABELS[name], "mean_dice": number(row["mean"]),
             "gain": number(row["gain"]), "class_dice": {str(c): number(row[f"class_{c}"]) for c in class_ids}}
            for name, row in table.iterrows()],
        "best_images": [{"ImageId": i, "dice": number(final_scores[i])} for i in best],
        "worst_images": [{"ImageId": i, "dice": number(final_scores[i])} for i in worst],
        "pairs_csv": pairs_csv,
    }


def ablation_text(pairs: pd.DataFrame) -> str:
    """A short text table of the variants' mean Dice for the terminal."""
    table = ablation_table(pairs)
    lines = [f"  {VARIANT_LABELS[name]:<55} {row['mean']:.6f}" for name, row in table.iterrows()]
    return "ablation (mean Dice):\n" + "\n".join(lines)
