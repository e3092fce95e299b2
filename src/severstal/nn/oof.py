"""Out-of-fold statistics of a trained fold: predict its validation images (full size, flip TTA) and score them.

Segmenter: ``oof.npz`` holds the statistics the threshold search needs (``core.oofstats``), computed
batch by batch against the true masks at full resolution, and ``metrics.json`` the raw Dice at
threshold 0.5, per class and over the images that have each class. Classifier: ``oof.npz`` holds the
probabilities; ``metrics.json`` precision, recall and F1 per class and for "any defect" at 0.5, and
``confusion.png`` the confusion matrices. Both ``train`` (at the end of every fold) and ``oof`` run it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..core import oofstats
from ..core.labels import masks_for
from ..core.metric import classification_groups, classification_summary, raw_dice, segmentation_summary
from ..infra.artifacts import CONFUSION, METRICS, OOF, Paths
from ..infra.config import Config
from ..infra.figures import confusion_matrices, save_figure
from ..infra.files import write_json
from ..infra.oof_files import save_classifier_oof, save_segmentation_oof
from ..infra.stamps import Stamp
from .hardware import configure_hardware
from .inference import ensembled_batches, load_fold_model
from .tfsetup import keras


def compute_oof(config: Config, kind: str, fold: int, val_ids: list[str], lookup: dict[str, dict[int, str]],
                image_dir: Path, stamp: Stamp) -> dict:
    """Predict a trained fold's validation images and write ``oof.npz`` (with ``stamp``) and ``metrics.json``.

    Args:
        config: the experiment's config (``inference.tta``, ``inference.batch_size``, the ``tune`` grid).
        kind: ``cls`` or ``seg``.
        fold: the fold number.
        val_ids: the fold's validation images.
        lookup: ``{ImageId: {ClassId: rle}}`` of the training labels.
        image_dir: the training images.
        stamp: what the statistics are made from (the TTA, the grid, the weights' fingerprint).

    Returns:
        The metrics written.
    """
    paths = Paths(config)
    fold_dir = paths.fold_dir(kind, fold)
    tta = list(config.inference.tta)
    configure_hardware(config.hardware)
    precision = keras.mixed_precision.global_policy().name  # recorded: predict must compute in the same
    fold_model = load_fold_model(paths, kind, fold)
    batch_size = config.inference.batch_size
    images = [image_dir / name for name in val_ids]
    batches = ((start, outputs[kind]) for start, outputs in ensembled_batches({kind: [fold_model]}, images, tta,
                                                                               batch_size))
    progress = tqdm(batches, total=math.ceil(len(images) / batch_size), unit="batch",
                    desc=f"OOF {kind} fold {fold} ({len(images)} images, TTA {'+'.join(tta)})")
    pixel_thresholds, component_sizes = config.tune.pixel_thresholds, config.tune.min_component_sizes
    metrics = {"kind": kind, "fold": fold, "images": len(val_ids), "stamp": stamp.to_dict(), "precision": precision}
    if kind == "seg":
        statistics, dice = [], []
        for start, probabilities in progress:  # (batch, H, W, classes)
            ids = val_ids[start:start + len(probabilities)]
            truth = np.stack([masks_for(lookup.get(i, {}), probabilities.shape[1:3], probabilities.shape[-1])
                              for i in ids])
            statistics.append(oofstats.segmentation_statistics(probabilities, truth, pixel_thresholds,
                                                               component_sizes))
            dice.append(raw_dice(probabilities, truth))
        joined = oofstats.concatenate_statistics(statistics)
        save_segmentation_oof(fold_dir / OOF, val_ids, fold, joined, pixel_thresholds, component_sizes, stamp,
                              precision)
        metrics |= segmentation_summary(np.concatenate(dice), joined["true_area"])
        shown = " ".join(f"{c}: {'n/a' if v is None else f'{v:.3f}'}"
                         for c, v in metrics["dice_on_images_with_class"].items())
        print(f"seg fold {fold} OOF at threshold 0.5, no post-processing: Dice {metrics['dice_at_0.5']:.4f}; "
              f"Dice on the images that have the class: {shown}", flush=True)
    else:
        class_ids = config.data.class_ids
        probabilities = np.concatenate([p for _, p in progress]) if val_ids else np.zeros((0, len(class_ids)))
        truth = np.array([[c in lookup.get(i, {}) for c in class_ids] for i in val_ids], dtype=np.float32)
        save_classifier_oof(fold_dir / OOF, val_ids, fold, probabilities, stamp, precision)
        summary = classification_summary(probabilities, truth.reshape(-1, len(class_ids)))
        metrics["at_0.5"] = summary
        groups = classification_groups(probabilities.shape[1])
        save_figure(confusion_matrices(summary, groups, f"classifier fold {fold}, threshold 0.5"),
                    fold_dir / CONFUSION, dpi=90)
        table = pd.DataFrame(summary).T[["precision", "recall", "f1", "positives"]]
        print(f"cls fold {fold} OOF at threshold 0.5 ({len(val_ids)} images):\n{table.to_string(float_format='%.3f')}",
              flush=True)
    write_json(fold_dir / METRICS, metrics)
    return metrics
