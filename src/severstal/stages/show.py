"""Draw predicted masks (the submission, or the masks layout's label maps) and true masks on the images, as PNGs.

Each image becomes one PNG: the predicted masks as translucent fills in each class's colour on top,
and, when the truth is known (``test_labels.csv`` or ``test_masks/`` for test images, ``train.csv``
or ``train_masks/`` for training images), the true masks as contours on a second panel below,
with each class's Dice in the titles and a legend. ``--best-worst N`` draws the N best and N worst test images by Dice
(images where nothing is predicted and nothing is true are left out) as ``best-K-<id>.png`` and
``worst-K-<id>.png``. Output: ``reports/<experiment>/predictions/`` unless ``--out`` is given.

Where ``predict`` wrote ``predictions/<experiment>/defects.json`` (``--defects``; always for the masks
layout), the prediction panel also draws each defect's outline in its class's colour with the class
name beside it, as the inspection line would report it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..core.drawing import draw_defects, overlay_masks
from ..core.ensemble import best_and_worst, image_scores, rows_frame
from ..core.labels import masks_for, rle_lookup
from ..core.metric import dice, score_pairs
from ..infra import locks
from ..infra.artifacts import LOCKS, Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.data import locate_images, test_classes, truth_lookup
from ..infra.errors import UserError
from ..infra.figures import class_label, image_grid, prediction_figure, save_figure
from ..infra.images import image_names
from ..infra.label_maps import LABEL_MAP_SUFFIX, read_label_maps
from ..infra.tables import read_checked_submission, read_predicted_labels

PREDICTION_ALPHA = 0.45  # opacity of the predicted fill
TRUTH_OUTLINE = 2  # contour width of the true masks, pixels
DEFAULT_LIMIT = 50


def prediction_panel(image: np.ndarray, predicted: np.ndarray, defects: list[dict] | None = None,
                     class_ids: Sequence[int] = ()) -> np.ndarray:
    """(H, W, 3) RGB: the predicted masks as translucent fills (no outline) on the image and, given ``defects``
    (``defects.json`` objects), their outlines with the class names."""
    panel = overlay_masks(image, predicted, alpha=PREDICTION_ALPHA, outline=0)
    return panel if defects is None else draw_defects(panel, defects, list(class_ids))


def truth_panel(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: the true masks as contours (no fill) on the image."""
    return overlay_masks(image, truth, alpha=0.0, outline=TRUTH_OUTLINE)


def class_summary(masks: np.ndarray, other: np.ndarray | None = None, names: Sequence[str] | None = None) -> str:
    """``"class 1: 1,234 px (Dice 0.912), class 3: ..."`` for the non-empty classes of ``masks``.

    Args:
        masks: (H, W, classes) masks to describe.
        other: (H, W, classes) masks to compare with for the Dice, or None.
        names: the class names, in class-number order (``class 2 (dent): ...``).
    """
    parts = []
    for channel in range(masks.shape[-1]):
        class_id = channel + 1
        area = int(np.count_nonzero(masks[..., channel]))
        other_area = 0 if other is None else int(np.count_nonzero(other[..., channel]))
        if area == 0 and other_area == 0:
            continue
        text = f"{class_label(class_id, names)}: {area:,} px"
        if other is not None:
            text += f" (Dice {dice(masks[..., channel], other[..., channel]):.3f})"
        parts.append(text)
    return ", ".join(parts) or "no defect"


def draw_figure(image: np.ndarray, predicted: np.ndarray | None, truth: np.ndarray | None, title: str, path: Path,
                names: Sequence[str] | None = None, defects: list[dict] | None = None) -> None:
    """Write the PNG of one image: a prediction panel and/or a truth panel stacked, with a legend.

    Args:
        image: (H, W, 3) RGB uint8.
        predicted: (H, W, classes) predicted masks, or None (not in the submission).
        truth: (H, W, classes) true masks, or None (unknown).
        title: the figure's title (image id and score).
        path: the PNG to write (atomically).
        names: the class names, in class-number order (legend and captions).
        defects: the image's defects of ``defects.json``, outlined and named on the prediction, or None.
    """
    panels = []
    if predicted is not None:
        how = "filled" if defects is None else f"filled, {len(defects)} defect(s) outlined"
        panels.append((f"predicted ({how}): {class_summary(predicted, truth, names)}",
                       prediction_panel(image, predicted, defects, range(1, predicted.shape[-1] + 1))))
    if truth is not None:
        panels.append((f"true (contours): {class_summary(truth, names=names)}", truth_panel(image, truth)))
    if not panels:
        panels.append(("no prediction and no truth for this image", image))
    classes = next((masks.shape[-1] for masks in (predicted, truth) if masks is not None), len(names or ()) or 1)
    save_figure(prediction_figure(panels, title, list(range(1, classes + 1)), names), path)


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) RGB uint8; UserError when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # the pixels predict sees
    if image is None:
        raise UserError(f"cannot read the image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_defects(paths: Paths) -> dict[str, list[dict]]:
    """``{image: its defects}`` of ``predictions/<experiment>/defects.json`` ({} when there is none)."""
    if not paths.defects.is_file():
        return {}
    try:
        document = json.loads(paths.defects.read_text())
        return {record["image"]: record["defects"] for record in document["images"] if "defects" in record}
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{paths.defects} is not a readable defects file ({error}): run severstal predict "
                        "--defects --force to write it again") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal show", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--images", default=None, help="draw the images of this folder (default: <data>/test_images)")
    which.add_argument("--ids", nargs="+", default=None, metavar="ID",
                       help="draw these images (found in <data>/test_images or train_images)")
    which.add_argument("--best-worst", type=int, default=None, metavar="N",
                       help="draw the N best and N worst test images by Dice (needs test_labels.csv)")
    parser.add_argument("--submission", default=None, help="predictions to draw (default: the experiment's)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: reports/<experiment>/predictions)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"draw at most this many images of --images (default {DEFAULT_LIMIT}; 0: all)")
    return parser


def predicted_lookup(paths: Paths, submission: str | None) -> tuple[Path, dict[str, dict[int, str]], set[str]]:
    """``(where the predictions are, {ImageId: {ClassId: rle}}, the images predicted)``: the submission CSV, or
    the masks layout's predicted label maps."""
    class_ids = paths.config.data.class_ids
    if submission is None and paths.layout == "masks":
        folder = paths.prediction_masks
        if not folder.is_dir():
            raise UserError(f"{folder}/ does not exist: run `severstal predict --config {paths.config.source}` first")
        names = sorted(f"{entry.name}" for entry in folder.iterdir() if entry.name.endswith(LABEL_MAP_SUFFIX))
        frame = read_label_maps(folder, names, class_ids, "predicted label maps")
        return folder, {Path(name).stem: rles for name, rles in rle_lookup(frame, class_ids).items()}, \
            {Path(name).stem for name in names}
    path = Path(submission) if submission else paths.submission
    if not path.is_file():
        raise UserError(f"{path} does not exist: run `severstal predict --config {paths.config.source}` first "
                        "(or give --submission CSV)")
    frame = read_checked_submission(path)
    return path, rle_lookup(frame, class_ids), set(frame["ImageId"])


def show_labels(args: argparse.Namespace, paths: Paths) -> int:
    """The folders layout: the test images in grids captioned with the predicted class (its probability) and,
    for a labelled test set, the true one; ``--best-worst N``: the N most confident right and wrong ones."""
    names = list(paths.config.data.classes)
    frame = read_predicted_labels(paths.prediction_labels, names)
    truth = test_classes(paths) or {}
    frame["p"] = [float(row[f"p_{row['label']}"]) for _, row in frame.iterrows()]
    frame["true"] = [names[truth[image]] if image in truth else None for image in frame["image"]]
    out = Path(args.out) if args.out else paths.predictions
    if args.best_worst is not None:
        if args.best_worst < 1 or not truth:
            raise UserError("--best-worst needs a positive number and a labelled test set (test/<class name>/)")
        right = frame[frame["label"] == frame["true"]].sort_values("p", ascending=False).head(args.best_worst)
        wrong = frame[frame["label"] != frame["true"]].sort_values("p", ascending=False).head(args.best_worst)
        groups = {"best.png": (right, "the most confident right predictions"),
                  "worst.png": (wrong, "the most confident wrong predictions")}
    else:
        chosen = frame.head(args.limit) if args.limit > 0 else frame
        groups = {"labels.png": (chosen, f"{len(chosen)} predicted test images")}
    with locks.hold(out.parent / LOCKS, out.name, f"the figures in {out}"):
        for name, (rows, title) in groups.items():
            items = [(read_rgb(paths.test_images / row.image),
                      f"{Path(row.image).name}\npredicted {row.label} ({row.p:.2f})"
                      + (f", true {row.true}" if row.true else "")) for row in rows.itertuples()]
            save_figure(image_grid(items or [(np.zeros((8, 8, 3), np.uint8), "none")], title), out / name)
    print(f"drew {sum(len(rows) for rows, _ in groups.values())} image(s) into {out}/ ({', '.join(groups)})")
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    if paths.layout == "folders":
        return show_labels(args, paths)
    source, predicted, in_predictions = predicted_lookup(paths, args.submission)
    by_stem = source.is_dir()  # label maps are named by the image's stem
    out = Path(args.out) if args.out else paths.predictions
    class_ids, names = config.data.class_ids, config.data.classes

    jobs: list[tuple[str, Path, str]] = []  # (image id, folder, PNG name)
    if args.best_worst is not None:
        if args.best_worst < 1:
            raise UserError(f"--best-worst needs a positive number, got {args.best_worst}")
        truth = truth_lookup(paths, paths.test_images)
        if truth is None:
            raise UserError(f"--best-worst needs the test truth ({paths.test_labels} or {paths.test_masks}/), which "
                            "does not exist")
        test_ids = image_names(paths.test_images)
        key = (lambda image_id: Path(image_id).stem) if by_stem else (lambda image_id: image_id)
        rows = rows_frame((i, c, predicted.get(key(i), {}).get(c, "")) for i in test_ids if key(i) in in_predictions
                          for c in class_ids)
        truth_rows = rows_frame((i, c, rle) for i, by_class in truth.items() for c, rle in by_class.items())
        try:
            pairs = score_pairs(rows, truth_rows, int(np.prod(config.data.shape)), class_ids)
        except ValueError as error:
            raise UserError(f"cannot score {source} against the test truth: {error}") from None
        best, worst = best_and_worst(image_scores(pairs), args.best_worst)
        for prefix, ids in (("best", best), ("worst", worst)):
            jobs += [(i, paths.test_images, f"{prefix}-{rank}-{Path(i).stem}.png") for rank, i in enumerate(ids, 1)]
    elif args.ids:
        jobs = [(image_id, folder, f"{Path(image_id).stem}.png")
                for image_id, folder in locate_images(paths, args.ids).items()]
    else:
        folder = Path(args.images) if args.images else paths.test_images
        listed = image_names(folder)
        if not listed:
            raise UserError(f"{folder} is missing or holds no images")
        listed = listed[:args.limit] if args.limit > 0 else listed
        jobs = [(image_id, folder, f"{Path(image_id).stem}.png") for image_id in listed]

    defects = read_defects(paths) if args.submission is None else {}
    truths: dict[Path, dict | None] = {}
    with locks.hold(out.parent / LOCKS, out.name, f"the figures in {out}"):
        if args.best_worst is not None:
            for old in list(out.glob("best-*.png")) + list(out.glob("worst-*.png")):
                old.unlink()
        for image_id, folder, name in jobs:
            image = read_rgb(folder / image_id)
            shape = image.shape[:2]
            if folder not in truths:
                truths[folder] = truth_lookup(paths, folder)
            truth = None if truths[folder] is None else masks_for(truths[folder].get(image_id, {}), shape,
                                                                  len(class_ids))
            key = Path(image_id).stem if by_stem else image_id
            prediction = masks_for(predicted.get(key, {}), shape, len(class_ids)) if key in in_predictions else None
            title = image_id
            if prediction is not None and truth is not None:
                scores = [dice(prediction[..., c], truth[..., c]) for c in range(prediction.shape[-1])]
                title += f"   mean Dice over its {prediction.shape[-1]} classes {np.mean(scores):.4f}"
            elif prediction is None:
                title += f"   (not in {source})"
            draw_figure(image, prediction, truth, title, out / name, names,
                        defects.get(image_id) if prediction is not None else None)
    print(f"drew {len(jobs)} image(s) into {out}/" + (f" with the defects of {paths.defects}" if defects else ""))
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
