"""Out-of-fold statistics of a trained fold: predict its validation images (full size, flip TTA) and score them.

Segmenter: ``oof.npz`` holds the statistics the threshold search needs (see ``oofstats``), computed
batch by batch against the true masks at full resolution, and ``metrics.json`` the raw Dice at
threshold 0.5, per class and over the images that have each class. Classifier: ``oof.npz`` holds the
probabilities; ``metrics.json`` precision, recall and F1 per class and for "any defect" at 0.5, and
``confusion.png`` the confusion matrices. The train stage runs this at the end of every fold.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core import oofstats
from ..core.constants import CLASS_IDS, NUM_CLASSES
from ..core.labels import masks_for
from ..core.metric import dice_from_areas
from ..infra.config import Config, check_saved_config
from .train import (
    METRICS,
    fold_numbers,
    oof_settings,
    read_folds,
    split_ids,
    trained_with,
    training_labels,
    unusable_images,
)

THRESHOLD = 0.5
GROUPS = (*(f"class {c}" for c in CLASS_IDS), "any defect")


def raw_dice(probabilities: np.ndarray, truth: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Dice of each (image, class) at a pixel threshold, no post-processing: ``(N, H, W, 4)`` -> ``(N, 4)``."""
    count, channels = probabilities.shape[0], probabilities.shape[-1]

    def areas(mask):  # (N, H, W, C) bool -> (N, C); counting along contiguous rows is much faster
        return np.count_nonzero(np.ascontiguousarray(np.moveaxis(mask, -1, 1)).reshape(count * channels, -1),
                                axis=1).reshape(count, channels)

    predicted, truth = probabilities > threshold, truth.astype(bool)
    return dice_from_areas(areas(predicted), areas(truth), areas(predicted & truth))


def segmentation_summary(dice: np.ndarray, true_area: np.ndarray) -> dict:
    """Mean Dice over all pairs, per class, and per class over the images that have the class."""
    present = true_area > 0  # (N, 4)
    return {
        "dice_at_0.5": float(dice.mean()),
        "dice_per_class_at_0.5": {str(c): float(dice[:, c - 1].mean()) for c in CLASS_IDS},
        "dice_on_images_with_class": {
            str(c): float(dice[present[:, c - 1], c - 1].mean()) if present[:, c - 1].any() else None
            for c in CLASS_IDS},
        "images_with_class": {str(c): int(present[:, c - 1].sum()) for c in CLASS_IDS},
    }


def classification_summary(probabilities: np.ndarray, truth: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Precision, recall, F1 and confusion counts per class and for any defect (max over classes).

    Args:
        probabilities: ``(N, 4)`` predicted class presence.
        truth: ``(N, 4)`` 0/1 true presence.

    Returns:
        ``{group: {"precision", "recall", "f1", "true_positive", "false_positive", "false_negative",
        "true_negative", "positives"}}`` for ``class 1..4`` and ``any defect``.
    """
    predicted = np.column_stack([probabilities > threshold, probabilities.max(axis=1) > threshold])  # (N, 5)
    actual = np.column_stack([truth > 0, truth.max(axis=1) > 0])
    summary = {}
    for index, group in enumerate(GROUPS):
        p, t = predicted[:, index], actual[:, index]
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        summary[group] = {"precision": precision, "recall": recall, "f1": f1, "true_positive": tp,
                          "false_positive": fp, "false_negative": fn, "true_negative": int((~p & ~t).sum()),
                          "positives": int(t.sum())}
    return summary


def plot_confusion(summary: dict, path: Path, title: str) -> None:
    """``confusion.png``: one 2 x 2 confusion matrix per class and for any defect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(GROUPS), figsize=(3.2 * len(GROUPS), 3.4))
    for axis, group in zip(axes, GROUPS, strict=True):
        counts = summary[group]
        matrix = np.array([[counts["true_negative"], counts["false_positive"]],
                           [counts["false_negative"], counts["true_positive"]]])
        axis.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > matrix.max() / 2 else "black")
        axis.set_xticks([0, 1], ["no", "yes"])
        axis.set_yticks([0, 1], ["no", "yes"])
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{group}\nF1 {counts['f1']:.2f}")
    figure.suptitle(title)
    figure.tight_layout()
    temporary = path.with_name(f".tmp-{path.name}")
    figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)
    os.replace(temporary, path)


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_metrics(metrics: dict, path: Path) -> None:
    """Write ``metrics.json`` atomically (NaN as null)."""
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_text(json.dumps(_json_ready(metrics), indent=2) + "\n")
    os.replace(temporary, path)


def compute_oof(config: Config, kind: str, fold: int, exclude=frozenset()) -> dict:
    """Predict a trained fold's validation images and write ``oof.npz`` and ``metrics.json``.

    Args:
        config: the experiment's config (``inference.tta``, ``inference.batch_size``, the ``tune`` grid).
        kind: ``cls`` or ``seg``.
        fold: the fold number.
        exclude: image ids to leave out (images check-data rejects, with ``--skip-bad``).

    Returns:
        The metrics written.
    """
    from ..nn.inference import check_tta, load_fold_model, predict_images
    from ..nn.models import configure_hardware

    fold_dir = config.fold_dir(kind, fold)
    check_saved_config(fold_dir, config, trained_with(kind), f"{kind} fold {fold}")
    _, val_ids = split_ids(read_folds(config), fold)
    val_ids = [name for name in val_ids if name not in set(exclude or ())]
    lookup = training_labels(config)
    try:
        tta = check_tta(config.get("inference.tta"))
        configure_hardware(config["hardware"])
        fold_model = load_fold_model(config, kind, fold)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    batch_size = int(config.get("inference.batch_size", 8))
    paths = [config.data_dir / "train_images" / name for name in val_ids]
    batches = predict_images(fold_model, paths, tta, batch_size)
    progress = tqdm(batches, total=math.ceil(len(paths) / batch_size), unit="batch",
                    desc=f"OOF {kind} fold {fold} ({len(paths)} images, TTA {'+'.join(tta)})")
    settings = oof_settings(config)
    metrics = {"kind": kind, "fold": fold, "images": len(val_ids), "settings": settings}
    if kind == "seg":
        statistics, dice = [], []
        for start, probabilities in progress:  # (batch, H, W, 4)
            ids = val_ids[start:start + len(probabilities)]
            truth = np.stack([masks_for(lookup.get(i, {}), probabilities.shape[1:3]) for i in ids])
            statistics.append(oofstats.segmentation_statistics(
                probabilities, truth, settings["pixel_thresholds"], settings["min_component_sizes"]))
            dice.append(raw_dice(probabilities, truth))
        joined = oofstats.concatenate_statistics(statistics)
        oofstats.save_segmentation_oof(fold_dir / "oof.npz", val_ids, fold, joined, settings["pixel_thresholds"],
                                       settings["min_component_sizes"])
        metrics |= segmentation_summary(np.concatenate(dice), joined["true_area"])
        shown = " ".join(f"{c}: {'n/a' if v is None else f'{v:.3f}'}"
                         for c, v in metrics["dice_on_images_with_class"].items())
        print(f"seg fold {fold} OOF at threshold 0.5, no post-processing: Dice {metrics['dice_at_0.5']:.4f}; "
              f"Dice on the images that have the class: {shown}", flush=True)
    else:
        probabilities = np.concatenate([p for _, p in progress]) if val_ids else np.zeros((0, NUM_CLASSES))
        truth = np.array([[c in lookup.get(i, {}) for c in CLASS_IDS] for i in val_ids], dtype=np.float32)
        oofstats.save_classifier_oof(fold_dir / "oof.npz", val_ids, fold, probabilities)
        summary = classification_summary(probabilities, truth.reshape(-1, NUM_CLASSES))
        metrics["at_0.5"] = summary
        plot_confusion(summary, fold_dir / "confusion.png", f"classifier fold {fold}, threshold 0.5")
        table = pd.DataFrame(summary).T[["precision", "recall", "f1", "positives"]]
        print(f"cls fold {fold} OOF at threshold 0.5 ({len(val_ids)} images):\n{table.to_string(float_format='%.3f')}",
              flush=True)
    write_metrics(metrics, fold_dir / METRICS)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal oof", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--model", choices=("cls", "seg"), required=True, help="classifier or segmenter")
    parser.add_argument("--fold", required=True, help="fold number or 'all'")
    parser.add_argument("--skip-bad", action="store_true", help="leave out images that check-data rejects")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    folds = read_folds(config)
    exclude = unusable_images(config, folds["ImageId"].tolist(), True) if args.skip_bad else set()
    for fold in fold_numbers(args.fold, folds):
        compute_oof(config, args.model, fold, exclude)
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
