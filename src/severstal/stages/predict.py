"""Ensemble the fold models (with flip TTA) over the test images into a validated submission.csv.

For each image the probabilities of every selected fold's segmenter (and classifier, when the
tuned thresholds gate on it) are averaged (arithmetic mean over folds and flips), then the tuned
post-processing of ``models/<experiment>/thresholds.json`` is applied. Images stream through in
batches, so memory does not grow with their number. The file is written atomically and checked
with the submission validator before it replaces the old one; a sidecar ``*.meta.json`` records
the config, thresholds, weights and images it was made from, so an up-to-date submission is not
made twice (--force redoes it).

When the data directory has ``test_labels.csv`` (and the default test images are predicted), the
same pass scores the post-processing ablation (see ``severstal.ensemble``) into
``reports/<experiment>/ablation.json`` and ``ablation_pairs.csv``; ``severstal report`` prints it.

``--shard i/n`` predicts the i-th of n contiguous chunks of the sorted image names into
``submissions/<experiment>/shards/part-i-of-n.csv``; ``severstal merge`` joins the parts.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.checks import image_names
from ..core.constants import BEST_WEIGHTS, CLASS_IDS, FINISHED, HEIGHT, NUM_CLASSES, WIDTH
from ..core.ensemble import (
    FLIPS,
    LAYOUTS,
    MASK_VARIANTS,
    VARIANT_LABELS,
    AblationAccumulator,
    ablation_table,
    add_scored_variant,
    best_and_worst,
    empty_rows,
    image_scores,
    mask_rows,
    mean_probabilities,
    parse_choice_list,
    parse_shard,
    rows_frame,
    select_folds,
    shard_file_name,
    shard_ids,
    submission_csv,
    variant_masks,
    variant_pairs,
)
from ..core.labels import masks_for, rle_lookup
from ..core.metric import score_pairs
from ..core.postprocess import ClassThresholds, postprocess_masks
from ..core.submission import check_submission, read_submission
from ..core.thresholds import thresholds_from_document
from ..infra.config import Config
from .check_data import scan_images

SHOWN_BAD_IMAGES = 20
BEST_WORST_LISTED = 10  # images named in ablation.json's best and worst lists


# ----------------------------------------------------------------------------- paths and small files

def shards_dir(config: Config) -> Path:
    """``submissions/<experiment>/shards``."""
    return config.submission_path.parent / "shards"


def output_path(config: Config, shard: tuple[int, int] | None) -> Path:
    """The submission file (or shard part) a run writes."""
    return config.submission_path if shard is None else shards_dir(config) / shard_file_name(*shard)


def sidecar_path(path: Path) -> Path:
    """``submission.csv`` -> ``submission.meta.json``: what the submission was made from."""
    return path.with_suffix(".meta.json")


def ablation_paths(config: Config) -> tuple[Path, Path]:
    """``reports/<experiment>/ablation.json`` and ``ablation_pairs.csv``."""
    return config.reports_dir / "ablation.json", config.reports_dir / "ablation_pairs.csv"


def shard_ablation_path(config: Config, shard: tuple[int, int]) -> Path:
    """``reports/<experiment>/shards/ablation-part-i-of-n.csv``: one shard's ablation pairs."""
    return config.reports_dir / "shards" / f"ablation-{shard_file_name(*shard)}"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- inputs

def load_thresholds(config: Config) -> list[ClassThresholds]:
    """The tuned per-class thresholds; UserError when thresholds.json is missing or malformed."""
    path = config.thresholds_path
    if not path.is_file():
        raise UserError(f"{path} does not exist: run severstal tune first (after training every fold), "
                        f"e.g. `severstal tune --config {config.source}`")
    try:
        return thresholds_from_document(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise UserError(f"{path} is not a valid thresholds file ({error}): run severstal tune --force") from None


def is_trained(fold_dir: Path) -> bool:
    """Whether a fold's training finished (its best weights and the train stage's ``training.json``)."""
    return (fold_dir / BEST_WEIGHTS).is_file() and (fold_dir / FINISHED).is_file()


def trained_folds(config: Config, model: str) -> list[int]:
    """Folds of ``model`` (cls or seg) whose training finished."""
    root = config.models_dir / model
    if not root.is_dir():
        return []
    return sorted(int(entry.name[4:]) for entry in root.iterdir()
                  if entry.name.startswith("fold") and entry.name[4:].isdigit() and is_trained(entry))


def weight_files(config: Config, folds: Sequence[int], gated: bool) -> dict[str, list[Path]]:
    """``{"seg": [...], "cls": [...]}`` weights of the folds to ensemble (no classifier when not gated)."""
    files = {"seg": [config.fold_dir("seg", fold) / BEST_WEIGHTS for fold in folds]}
    if gated:
        missing = [fold for fold in folds if not is_trained(config.fold_dir("cls", fold))]
        if missing:
            raise UserError(f"the tuned thresholds gate on the classifier, but classifier fold(s) {missing} have not "
                            "finished training: train them (severstal train --model cls --fold K) or choose folds "
                            "with --folds")
        files["cls"] = [config.fold_dir("cls", fold) / BEST_WEIGHTS for fold in folds]
    return files


def run_fingerprint(config: Config, images_dir: Path, image_ids: Sequence[str], weights: dict[str, list[Path]],
                    settings: dict) -> dict:
    """What a submission depends on: config, thresholds, weights (size, mtime), image names, settings.

    The batch size is left out: predictions do not depend on it (the segmenter's are bitwise equal
    for batch sizes 1, 3, 4 and 6 on CPU, the classifier's within 1e-22), so shards may use any.
    """
    raw = copy.deepcopy(config.raw)
    raw.get("inference", {}).pop("batch_size", None)  # batches do not change the probabilities
    return {
        "config_sha256": text_sha256(json.dumps(raw, sort_keys=True, default=str)),
        "thresholds_sha256": file_sha256(config.thresholds_path),
        "weights": {model: [[str(path), path.stat().st_size, path.stat().st_mtime_ns] for path in paths]
                    for model, paths in weights.items()},
        "images": {"dir": os.path.normpath(str(images_dir)), "count": len(image_ids),
                   "names_sha256": text_sha256("\n".join(sorted(image_ids)))},
        "settings": settings,
    }


def up_to_date(target: Path, fingerprint: dict, shard: str | None) -> bool:
    """Whether ``target`` exists and its sidecar records the same fingerprint and shard."""
    sidecar = sidecar_path(target)
    if not (target.is_file() and sidecar.is_file()):
        return False
    try:
        saved = json.loads(sidecar.read_text())
    except ValueError:
        return False
    return saved.get("fingerprint") == fingerprint and saved.get("shard") == shard


def find_bad_images(images_dir: Path, image_ids: Sequence[str]) -> dict[str, str]:
    """``{name: reason}`` of the images that cannot be used (unreadable, truncated, wrong size)."""
    scanned = scan_images(images_dir, image_ids, progress=len(image_ids) > 500)
    return {name: "; ".join(problems) for name, (problems, _) in scanned.items() if problems}


def bad_images_message(bad: dict[str, str], images_dir: Path) -> str:
    listing = "\n  ".join(f"{name}: {reason}" for name, reason in sorted(bad.items())[:SHOWN_BAD_IMAGES])
    more = f"\n  ... and {len(bad) - SHOWN_BAD_IMAGES:,} more" if len(bad) > SHOWN_BAD_IMAGES else ""
    return (f"{len(bad):,} image(s) in {images_dir} cannot be used:\n  {listing}{more}\n"
            "Replace them, or pass --skip-bad to predict them as empty (every image keeps its rows).")


def truth_lookup(config: Config, images_dir: Path) -> dict[str, dict[int, str]] | None:
    """The test truth ``{ImageId: {ClassId: rle}}`` when test_labels.csv exists for the default test images."""
    from .score import read_truth

    path = config.data_dir / "test_labels.csv"
    default_images = os.path.normpath(str(config.data_dir / "test_images"))
    if not path.is_file() or os.path.normpath(str(images_dir)) != default_images:
        return None
    return rle_lookup(read_truth(path))


# ----------------------------------------------------------------------------- outputs

def write_submission(path: Path, frame: pd.DataFrame, layout: str, expected_ids: Sequence[str] | None) -> None:
    """Write a normal frame as a submission: temporary file, validator, then rename (never half-written).

    Raises:
        UserError: when the validator finds problems (the old file, if any, is left as it was).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(submission_csv(frame, layout))
    problems = check_submission(read_submission(temporary), expected_ids)
    if problems:
        temporary.unlink()
        listing = "\n  ".join(problems[:SHOWN_BAD_IMAGES])
        raise UserError(f"the submission made for {path} failed validation ({len(problems):,} problems); "
                        f"nothing was written:\n  {listing}")
    os.replace(temporary, path)


def ablation_document(pairs: pd.DataFrame, submission: Path, pairs_path: Path, experiment: str) -> dict:
    """The content of ablation.json from the per-pair frame (all variants including ``final``).

    Keys: ``experiment``, ``created``, ``submission`` and its ``submission_sha256`` (``report``
    refuses an ablation made for another file), ``images``, ``pairs``, ``variants`` (in step order:
    ``name``, ``label``, ``mean_dice``, ``gain`` over the previous step, ``class_dice`` by class id),
    ``best_images`` / ``worst_images`` (up to 10 informative images by the submission's per-image Dice)
    and ``pairs_csv`` (every (image, class) pair: true area and, per variant, predicted area and Dice).
    """
    table = ablation_table(pairs)
    best, worst = best_and_worst(image_scores(variant_pairs(pairs, "final")), BEST_WORST_LISTED)
    final_scores = image_scores(variant_pairs(pairs, "final")).set_index("ImageId")["dice"]

    def number(value) -> float | None:
        return None if pd.isna(value) else round(float(value), 8)

    return {
        "experiment": experiment,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "submission": str(submission),
        "submission_sha256": file_sha256(submission),
        "images": int(pairs["ImageId"].nunique()),
        "pairs": len(pairs),
        "variants": [
            {"name": name, "label": VARIANT_LABELS[name], "mean_dice": number(row["mean"]),
             "gain": number(row["gain"]),
             "class_dice": {str(c): number(row[f"class_{c}"]) for c in CLASS_IDS}}
            for name, row in table.iterrows()],
        "best_images": [{"ImageId": i, "dice": number(final_scores[i])} for i in best],
        "worst_images": [{"ImageId": i, "dice": number(final_scores[i])} for i in worst],
        "pairs_csv": str(pairs_path),
    }


def write_ablation(config: Config, pairs: pd.DataFrame, submission: Path) -> Path:
    """Write ablation_pairs.csv and ablation.json for a whole submission; returns the json's path."""
    document_path, pairs_path = ablation_paths(config)
    write_atomically(pairs_path, pairs.to_csv(index=False, float_format="%.8f", lineterminator="\n"))
    document = ablation_document(pairs, submission, pairs_path, config.experiment)
    write_atomically(document_path, json.dumps(document, indent=2) + "\n")
    return document_path


def format_ablation(pairs: pd.DataFrame) -> str:
    """A short text table of the variants' mean Dice for the terminal."""
    table = ablation_table(pairs)
    lines = [f"  {VARIANT_LABELS[name]:<55} {row['mean']:.6f}" for name, row in table.iterrows()]
    return "ablation (mean Dice):\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- model work

def ensembled_batches(fold_models: dict[str, list], paths: Sequence[Path], tta: Sequence[str], batch_size: int
                      ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Stream the fold-mean probabilities of the images, batch by batch.

    Args:
        fold_models: ``{"seg": [FoldModel, ...], "cls": [...]}`` (``"cls"`` optional).
        paths: image files.
        tta: flips averaged inside each model's prediction.
        batch_size: images per batch.

    Yields:
        ``(start, segmentation (batch, H, W, 4) float32, classification (batch, 4) float32 or None)``.
    """
    from ..nn.inference import predict_images

    streams = {kind: [predict_images(model, paths, tta, batch_size) for model in models]
               for kind, models in fold_models.items() if models}
    kinds = list(streams)
    for outputs in zip(*(stream for kind in kinds for stream in streams[kind]), strict=True):
        starts = {start for start, _ in outputs}
        if len(starts) != 1:
            raise RuntimeError(f"fold models went out of step: batches start at {sorted(starts)}")
        by_kind, position = {}, 0
        for kind in kinds:
            count = len(streams[kind])
            by_kind[kind] = mean_probabilities(output for _, output in outputs[position:position + count])
            position += count
        yield starts.pop(), by_kind["seg"], by_kind.get("cls")


def postprocess_image(image_id: str, probabilities: np.ndarray, thresholds: list[ClassThresholds],
                      classifier_probabilities: np.ndarray | None, ablation: bool
                      ) -> tuple[list[tuple[str, int, str]], dict[str, np.ndarray]]:
    """The submission rows of one image and its masks: ``"gate"`` (the submission's) and, when
    ``ablation``, the other variants."""
    if ablation:
        masks = variant_masks(probabilities, thresholds, classifier_probabilities)
    else:
        masks = {"gate": postprocess_masks(probabilities, thresholds, classifier_probabilities)}
    return mask_rows(image_id, masks["gate"]), masks


def predict_rows(config: Config, images_dir: Path, image_ids: Sequence[str], bad: dict[str, str],
                 weights: dict[str, list[Path]], folds: Sequence[int], thresholds: list[ClassThresholds],
                 settings: dict, truth: dict[str, dict[int, str]] | None
                 ) -> tuple[list[tuple[str, int, str]], AblationAccumulator | None, float]:
    """Predict every image: fold/TTA ensemble, tuned post-processing, RLE rows (and ablation areas).

    Returns:
        ``(rows, accumulator, seconds)``: normal-form rows of every image (bad ones empty), the
        ablation accumulator (None without truth) and the time spent predicting (models loaded).
    """
    from ..nn.inference import load_fold_model

    accumulator = AblationAccumulator() if truth is not None else None
    rows = []
    for image_id in sorted(bad):
        rows += empty_rows(image_id)
        if accumulator is not None:
            empty = np.zeros((HEIGHT, WIDTH, NUM_CLASSES), dtype=np.uint8)
            accumulator.add(image_id, masks_for(truth.get(image_id, {})), dict.fromkeys(MASK_VARIANTS, empty))
    good = [image_id for image_id in image_ids if image_id not in bad]
    if not good:
        return rows, accumulator, 0.0
    started = time.perf_counter()
    fold_models = {kind: [load_fold_model(config, kind, fold) for fold in folds] for kind in weights}
    count = sum(len(models) for models in fold_models.values())
    print(f"loaded {count} fold model(s) ({', '.join(fold_models)}; folds {folds}) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    paths = [images_dir / image_id for image_id in good]
    workers = max(1, min(os.cpu_count() or 1, settings["batch_size"]))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(good), desc="predict", unit="img") as progress:
        for start, segmentation, classification in ensembled_batches(fold_models, paths, settings["tta"],
                                                                     settings["batch_size"]):
            batch_ids = good[start:start + len(segmentation)]
            gates = classification if classification is not None else [None] * len(batch_ids)
            results = pool.map(lambda item: postprocess_image(item[0], item[1], thresholds, item[2],
                                                              accumulator is not None),
                               zip(batch_ids, segmentation, gates, strict=True))
            for image_id, (image_rows, masks) in zip(batch_ids, results, strict=True):
                rows += image_rows
                if accumulator is not None:
                    accumulator.add(image_id, masks_for(truth.get(image_id, {})), masks)
            progress.update(len(batch_ids))
    return rows, accumulator, time.perf_counter() - started


# ----------------------------------------------------------------------------- the run

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--images", default=None, help="folder of images to predict (default: <data>/test_images)")
    parser.add_argument("--format", dest="layout", choices=LAYOUTS, default="long",
                        help="long: ImageId,EncodedPixels,ClassId (Kaggle's current layout, default); "
                             "legacy: the 2019 ImageId_ClassId,EncodedPixels")
    parser.add_argument("--skip-bad", action="store_true",
                        help="predict unreadable images as empty (listed in the log) instead of stopping")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="predict only part I of N (contiguous chunks of the sorted names); join with merge")
    parser.add_argument("--folds", default=None, help="folds to ensemble: all or e.g. 0,1 (default: inference.folds)")
    parser.add_argument("--tta", default=None,
                        help=f"flips to average, from {','.join(FLIPS)} (default: inference.tta)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: inference.batch_size)")
    parser.add_argument("--force", action="store_true", help="predict again even when the submission is up to date")
    return parser


def resolve_settings(args: argparse.Namespace, config: Config) -> dict:
    """The effective folds spec, flips, batch size and layout from the options and the config."""
    try:
        tta = parse_choice_list(args.tta if args.tta is not None else config.get("inference.tta", ["none"]),
                                FLIPS, "--tta / inference.tta")
    except ValueError as error:
        raise UserError(str(error)) from None
    batch_size = args.batch_size if args.batch_size is not None else config.get("inference.batch_size", 8)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"the batch size must be a positive integer, got {batch_size!r}")
    folds = args.folds if args.folds is not None else config.get("inference.folds", "all")
    return {"folds": folds, "tta": list(tta), "batch_size": batch_size, "layout": args.layout,
            "skip_bad": bool(args.skip_bad)}


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    settings = resolve_settings(args, config)
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as error:
        raise UserError(str(error)) from None
    images_dir = Path(args.images) if args.images else config.data_dir / "test_images"
    all_ids = image_names(images_dir)
    if not all_ids:
        raise UserError(f"{images_dir} is missing or holds no images (.jpg/.png): give --images DIR or --data DIR")
    image_ids = shard_ids(all_ids, *shard) if shard else all_ids
    target = output_path(config, shard)
    shard_text = f"{shard[0]}/{shard[1]}" if shard else None

    thresholds = load_thresholds(config)
    gated = any(setting.classifier_threshold > 0 for setting in thresholds)
    try:
        folds = select_folds(settings["folds"], trained_folds(config, "seg"))
    except ValueError as error:
        raise UserError(f"{error} (segmenters under {config.models_dir / 'seg'}): train them first with "
                        "`severstal train --model seg --fold all`") from None
    weights = weight_files(config, folds, gated)
    fingerprint = run_fingerprint(config, images_dir, all_ids, weights,
                                  {**settings, "folds": folds, "batch_size": None})
    if not args.force and up_to_date(target, fingerprint, shard_text):
        print(f"{target} is up to date (same config, thresholds, weights and images); --force redoes it")
        return 0

    bad = find_bad_images(images_dir, image_ids)
    if bad and not args.skip_bad:
        raise UserError(bad_images_message(bad, images_dir))
    for name, reason in sorted(bad.items()):
        print(f"warning: {name} cannot be used ({reason}): predicted empty (--skip-bad)", file=sys.stderr)
    truth = truth_lookup(config, images_dir)

    sidecar_path(target).unlink(missing_ok=True)
    rows, accumulator, elapsed = predict_rows(config, images_dir, image_ids, bad, weights, folds, thresholds,
                                              settings, truth)
    frame = rows_frame(rows)
    write_submission(target, frame, settings["layout"], image_ids)

    if truth is not None:
        truth_frame = rows_frame((i, c, rle) for i, by_class in truth.items() for c, rle in by_class.items())
        pairs = add_scored_variant(accumulator.pairs(), score_pairs(frame, truth_frame))
        if shard:
            write_atomically(shard_ablation_path(config, shard),
                             pairs.to_csv(index=False, float_format="%.8f", lineterminator="\n"))
        else:
            document = write_ablation(config, pairs, target)
            print(format_ablation(pairs) + f"\n  written to {document}")
    write_atomically(sidecar_path(target), json.dumps({
        "fingerprint": fingerprint, "shard": shard_text, "images": len(image_ids),
        "skipped_bad": sorted(bad), "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }, indent=2) + "\n")
    masks = int((frame["EncodedPixels"] != "").sum())
    print(f"wrote {target}: {len(image_ids):,} images, {len(frame):,} rows, {masks:,} non-empty masks; valid")
    predicted = len(image_ids) - len(bad)
    print(f"{predicted / max(elapsed, 1e-9):.1f} images/s ({predicted:,} images predicted in {elapsed:.1f} s, "
          f"{len(folds)} fold(s), flips {','.join(settings['tta'])})")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
