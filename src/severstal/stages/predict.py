"""Ensemble the fold models (with flip TTA) over the test images into a validated submission.csv.

For each image the probabilities of every selected fold's segmenter (and classifier, when the
tuned thresholds gate on it) are averaged (arithmetic mean over folds and flips), then the tuned
post-processing of ``models/<experiment>/thresholds.json`` is applied. The thresholds must have
been tuned on the OOF statistics of the very weights used (``--folds`` may choose a subset of the
tuned folds), predicted with the same flips and precision; otherwise predict names what differs
and what to re-run. Images stream through in
batches, so memory does not grow with their number. The file is written atomically and checked
with the submission validator before it replaces the old one; a sidecar ``*.meta.json`` records
what it was made from, so an up-to-date submission is not made twice (``--force`` redoes it).

When the data directory has ``test_labels.csv`` (and the default test images are predicted), the
same pass scores the post-processing ablation (see ``core.ensemble``) into
``reports/<experiment>/ablation.json`` and ``ablation_pairs.csv``; ``severstal report`` prints it.

``--shard i/n`` predicts the i-th of n contiguous chunks of the sorted image names into
``submissions/<experiment>/shards/part-i-of-n.csv``; ``severstal merge`` joins the parts.

Own data (``infra.layouts``): in the masks layout the output is ``predictions/<experiment>/masks/``,
one label map per image (overlapping classes go to the most probable one), written into a
temporary folder that replaces the old one at the end; an image larger than the training images is
predicted by tiles (``inference.tile_size``, ``inference.tile_overlap``), a smaller one is refused;
``test_masks/`` gives the ablation. In the folders layout the classifier folds alone predict
``predictions/<experiment>/labels.csv`` (``image, label, p_<class>...``).

``predictions/<experiment>/defects.json`` (docs/defects-format.md) lists every image's decision and each
defect as an object (class, area, bounding box, outline, probabilities): always for the masks and folders
layouts, with ``--defects`` for Kaggle data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.classification import class_flags, thresholded_classes
from ..core.defects import defects_document, image_record, label_record, unusable_record
from ..core.ensemble import (
    FLIPS,
    LAYOUTS,
    MASK_VARIANTS,
    AblationAccumulator,
    ablation_text,
    add_scored_variant,
    empty_rows,
    mask_rows,
    parse_shard,
    rows_frame,
    shard_ids,
    variant_masks,
)
from ..core.labels import label_map_rows, masks_for
from ..core.metric import score_pairs
from ..core.postprocess import ClassThresholds, final_masks, postprocess_masks
from ..infra import locks
from ..infra.artifacts import (
    LOCKS,
    PREDICT_KEYS,
    Ensemble,
    Paths,
    check_predicted_like,
    classifier_ensemble,
    ensemble_folds,
    ensemble_inputs,
    model_records,
    read_classification_thresholds,
    read_thresholds,
    replace_folder,
    sidecar_path,
)
from ..infra.commands import add_config_arguments, add_inference_options, config_from_args, inference_options, run_main
from ..infra.config import Config
from ..infra.data import split_images, truth_lookup
from ..infra.errors import UserError, format_problems
from ..infra.files import write_atomically, write_json
from ..infra.images import bad_images, image_names, image_sizes
from ..infra.label_maps import label_map_path, write_label_map
from ..infra.stamps import Action, Decision, Stamp, decide, file_fingerprint, images_fingerprint, read_sidecar
from ..infra.tables import labels_csv, write_ablation, write_submission


def predict_stamp(config: Config, paths: Paths, ensemble: Ensemble, layout: str, skip_bad: bool,
                  all_ids: Sequence[str], images_dir: Path) -> Stamp:
    """What a submission depends on: flips, folds, layout, thresholds, weights, the test image names.

    The batch size is left out: predictions depend on it only through float32 rounding (other batch
    sizes run other kernels), so shards may use any.
    """
    inputs = {**ensemble_inputs(paths, ensemble), "images": images_fingerprint(images_dir, all_ids)}
    settings = {"predict.folds": list(ensemble.folds), "predict.format": layout, "predict.skip_bad": skip_bad}
    return Stamp.of(config, PREDICT_KEYS, inputs, settings)


def postprocess_image(image_id: str, probabilities: np.ndarray, thresholds: list[ClassThresholds],
                      classifier_probabilities: np.ndarray | None, ablation: bool, label_maps: Path | None,
                      class_names: Sequence[str] | None = None):
    """The rows of one image, its masks (``"gate"``: the submission's; with ``ablation`` the other variants too)
    and, given ``class_names``, its ``defects.json`` record (else None).

    With ``label_maps`` (the masks layout) the image's label map is written there (overlapping classes go to
    the most probable one) and the rows and defects are the label map's.
    """
    if ablation:
        masks = variant_masks(probabilities, thresholds, classifier_probabilities)
    else:
        masks = {"gate": postprocess_masks(probabilities, thresholds, classifier_probabilities)}
    class_ids = range(1, probabilities.shape[-1] + 1)
    final, label_map = final_masks(masks["gate"], probabilities, label_maps is not None)
    if label_map is None:
        rows = mask_rows(image_id, final)
    else:
        write_label_map(label_map_path(label_maps, image_id), label_map)
        rows = label_map_rows(image_id, label_map, class_ids)
    record = None if class_names is None else image_record(image_id, final, probabilities, classifier_probabilities,
                                                            list(class_ids), class_names)
    return rows, masks, record


def predict_rows(config: Config, paths: Paths, images_dir: Path, image_ids: Sequence[str], bad: dict[str, str],
                 kinds: Sequence[str], folds: Sequence[int], thresholds: list[ClassThresholds],
                 truth: dict[str, dict[int, str]] | None, label_maps: Path | None = None,
                 tiled: frozenset[str] = frozenset(), defects: bool = False):
    """Predict every image: fold/TTA ensemble, tuned post-processing, RLE rows (and ablation areas).

    Args:
        label_maps: write each image's label map into this folder (the masks layout).
        tiled: the images larger than the data set's, predicted by tiles (``inference.tile_*``).
        defects: make each image's ``defects.json`` record.

    Returns:
        ``(rows, accumulator, seconds, records)``: normal-form rows of every image (bad ones empty), the
        ablation accumulator (None without truth), the time spent predicting (models loaded) and the
        ``defects.json`` records in the order of ``image_ids`` (empty without ``defects``).
    """
    accumulator = AblationAccumulator() if truth is not None else None
    rows, records = [], {}
    class_ids = config.data.class_ids
    class_names = list(config.data.classes) if defects else None
    for image_id in sorted(bad):
        rows += empty_rows(image_id, class_ids)
        if defects:
            records[image_id] = unusable_record(image_id, bad[image_id])
        if accumulator is not None:
            truth_masks = masks_for(truth.get(image_id, {}), config.data.shape, len(class_ids))
            accumulator.add(image_id, truth_masks, dict.fromkeys(MASK_VARIANTS, np.zeros_like(truth_masks)))
    whole = [image_id for image_id in image_ids if image_id not in bad and image_id not in tiled]
    large = [image_id for image_id in image_ids if image_id in tiled]

    def ordered() -> list[dict]:
        return [records[image_id] for image_id in image_ids if image_id in records]

    if not whole and not large:
        return rows, accumulator, 0.0, ordered()
    from ..nn.hardware import configure_hardware
    from ..nn.inference import ensembled_batches, ensembled_tiles, load_fold_model

    started = time.perf_counter()
    configure_hardware(config.hardware)
    fold_models = {kind: [load_fold_model(paths, kind, fold) for fold in folds] for kind in kinds}
    count = sum(len(models) for models in fold_models.values())
    print(f"loaded {count} fold model(s) ({', '.join(fold_models)}; folds {list(folds)}) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    batch_size, tta = config.inference.batch_size, list(config.inference.tta)
    workers = max(1, min(os.cpu_count() or 1, batch_size))

    def finish(item):  # in a worker thread: post-processing and the label map of one image
        image_id, probabilities, gate = item
        return postprocess_image(image_id, probabilities, thresholds, gate, accumulator is not None, label_maps,
                                 class_names)

    def record(batch_ids, segmentation, results):
        nonlocal rows
        for image_id, probabilities, (image_rows, masks, defect_record) in zip(batch_ids, segmentation, results,
                                                                               strict=True):
            rows += image_rows
            if defect_record is not None:
                records[image_id] = defect_record
            if accumulator is not None:
                accumulator.add(image_id, masks_for(truth.get(image_id, {}), probabilities.shape[:2],
                                                    len(class_ids)), masks)
        progress.update(len(batch_ids))

    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(whole) + len(large), desc="predict",
                                                               unit="img") as progress:
        batches = ensembled_batches(fold_models, [images_dir / image_id for image_id in whole], tta, batch_size) \
            if whole else ()
        for start, outputs in batches:
            segmentation, classification = outputs["seg"], outputs.get("cls")
            batch_ids = whole[start:start + len(segmentation)]
            gates = classification if classification is not None else [None] * len(batch_ids)
            record(batch_ids, segmentation, list(pool.map(finish, zip(batch_ids, segmentation, gates, strict=True))))
        tiles = ensembled_tiles(fold_models, [images_dir / image_id for image_id in large], tta,
                                config.inference.tile_overlap, batch_size, config.inference.tile_size) \
            if large else ()
        for index, outputs in tiles:
            segmentation = outputs["seg"]
            record([large[index]], [segmentation], [finish((large[index], segmentation, outputs.get("cls")))])
    return rows, accumulator, time.perf_counter() - started, ordered()


def skip_or_say(decision: Decision, defects: Path, wanted: bool) -> bool:
    """Whether the predictions are up to date and skipped (with ``decision``'s line); else print why they are made,
    which is also the case for up-to-date predictions whose wanted ``defects.json`` is missing."""
    if decision.action is Action.SKIP and wanted and not defects.is_file():
        print(f"{defects} is missing: predicting again to write it")
        return False
    if decision.note:
        print(decision.note)
    return decision.action is Action.SKIP


def write_defects(config: Config, paths: Paths, records: list[dict], weights: dict[tuple[str, int], str]) -> Path:
    """``predictions/<experiment>/defects.json`` of one run's records (atomically)."""
    document = defects_document(
        records, experiment=config.experiment_name, layout=paths.layout, class_ids=config.data.class_ids,
        class_names=list(config.data.classes), created=datetime.now(UTC).isoformat(timespec="seconds"),
        thresholds={"file": str(paths.thresholds), "sha256": file_fingerprint(paths.thresholds)},
        models=model_records(paths, weights))
    return write_json(paths.defects, document)


def image_plan(images_dir: Path, image_ids: Sequence[str], shape: tuple[int, int],
               tile_shape: Sequence[int] | None) -> frozenset[str]:
    """The images of a masks-layout prediction that are predicted by tiles (larger than the data set's ``shape``).

    Raises:
        UserError: an image is smaller than the data set's images (or than a tile) in either direction.
    """
    tile = tuple(tile_shape or shape)
    sizes = image_sizes(images_dir, image_ids)
    small = [f"{name}: {size[0]} x {size[1]}" for name, size in sorted(sizes.items())
             if size is not None and size != tuple(shape) and (size[0] < tile[0] or size[1] < tile[1])]
    if small:
        raise UserError(f"{len(small):,} image(s) in {images_dir} are smaller than the "
                        f"{'tiles' if tile_shape else 'images the models were trained on'} ({tile[0]} x {tile[1]}, "
                        f"height x width); predict images of at least that size (larger ones are predicted by "
                        f"tiles):\n{format_problems(small)}")
    return frozenset(name for name, size in sizes.items() if size is not None and size != tuple(shape))


def unusable_images(images_dir: Path, image_ids: Sequence[str], shape: tuple[int, int] | None, skip_bad: bool,
                    fate: tuple[str, str]) -> dict[str, str]:
    """The images that cannot be used (``infra.images.bad_images``): a UserError listing them, or with ``skip_bad``
    a warning for each.

    Args:
        fate: what ``--skip-bad`` does with them, as advice and as the warning's end, e.g.
            ``("leave them out (listed in the log)", "left out")``.

    Returns:
        ``{file name: reason}``.
    """
    bad = bad_images(images_dir, image_ids, shape=shape)
    if bad and not skip_bad:
        listing = format_problems([f"{name}: {reason}" for name, reason in sorted(bad.items())])
        raise UserError(f"{len(bad):,} image(s) in {images_dir} cannot be used:\n{listing}\n"
                        f"Replace them, or pass --skip-bad to {fate[0]}.")
    for name, reason in sorted(bad.items()):
        print(f"warning: {name} cannot be used ({reason}): {fate[1]} (--skip-bad)", file=sys.stderr)
    return bad


def speed(images: int, seconds: float) -> str:
    """``12.3 images/s``, or ``39.5 s/image`` below one image a second (large tiled images)."""
    rate = images / max(seconds, 1e-9)
    return f"{rate:.1f} images/s" if rate >= 1 or not images else f"{seconds / images:.1f} s/image"


def predict_labels(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """The folders layout: each image's class by the tuned decision (the most probable class, or the most probable
    class flagged by per-class thresholds) from the fold- and flip-mean classifier probabilities, into
    ``predictions/<experiment>/labels.csv`` (``image, label, p_<class>...``) and defects.json."""
    if args.shard:
        raise UserError("--shard splits a Kaggle submission; predict a folders data set whole")
    images_dir = Path(args.images) if args.images else paths.test_images
    image_ids = split_images(paths, images_dir)
    if not image_ids:
        raise UserError(f"{images_dir} is missing or holds no images: give --images DIR or --data DIR")
    target, names = paths.prediction_labels, list(config.data.classes)
    with locks.hold(paths.prediction_dir / LOCKS, "labels", f"the predictions {target}"):
        document = read_classification_thresholds(paths)
        ensemble = classifier_ensemble(paths, document, config.inference.folds)
        folds = ensemble.folds
        inputs = {**ensemble_inputs(paths, ensemble),
                  "images": images_fingerprint(images_dir, image_ids)}
        settings = {"predict.folds": list(folds), "predict.skip_bad": args.skip_bad}
        stamp = Stamp.of(config, PREDICT_KEYS, inputs, settings)
        saved = read_sidecar(sidecar_path(target))
        decision = decide(str(target), saved["stamp"] if saved and target.is_file() else None, stamp, args.force)
        if skip_or_say(decision, paths.defects, True):
            return 0
        bad = unusable_images(images_dir, image_ids, None, args.skip_bad,
                              ("leave them out (listed in the log)", "left out"))
        good = [image_id for image_id in image_ids if image_id not in bad]
        from ..nn.hardware import announce_devices, configure_hardware, precision_name
        from ..nn.inference import ensembled_batches, load_fold_model

        announce_devices(config.hardware)
        check_predicted_like(document, paths, config.inference.tta, precision_name(config.hardware))
        configure_hardware(config.hardware)
        started = time.perf_counter()
        models = {"cls": [load_fold_model(paths, "cls", fold) for fold in folds]}
        probabilities = []
        with tqdm(total=len(good), desc="predict", unit="img") as progress:
            for _, outputs in ensembled_batches(models, [images_dir / image_id for image_id in good],
                                                list(config.inference.tta), config.inference.batch_size):
                probabilities.append(outputs["cls"])
                progress.update(len(outputs["cls"]))
        probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, len(names)), np.float32)
        elapsed = time.perf_counter() - started
        thresholds = document["decision_thresholds"]  # None: the most probable class
        labels = [names[index] for index in thresholded_classes(probabilities, thresholds)]
        write_atomically(target, labels_csv(good, labels, probabilities, names))
        flags = class_flags(probabilities, thresholds)  # (images, classes) bool
        records = {image_id: label_record(image_id, label, row, names, flag)
                   for image_id, label, row, flag in zip(good, labels, probabilities, flags, strict=True)}
        records |= {image_id: unusable_record(image_id, reason) for image_id, reason in bad.items()}
        write_defects(config, paths, [records[image_id] for image_id in image_ids], ensemble.weights)
        write_json(sidecar_path(target), {"stamp": stamp.to_dict(), "images": len(good), "skipped_bad": sorted(bad),
                                          "created": datetime.now(UTC).isoformat(timespec="seconds")})
    counts = ", ".join(f"{name} {labels.count(name):,}" for name in names)
    print(f"wrote {target} and {paths.defects.name}: {len(good):,} images ({counts}); {speed(len(good), elapsed)} with "
          f"{len(folds)} fold(s), flips {','.join(config.inference.tta)}")
    return 0


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
    parser.add_argument("--defects", action="store_true",
                        help="also write predictions/<experiment>/defects.json (each defect as an object) for Kaggle "
                             "data; the masks and folders layouts always write it")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="predict only part I of N (contiguous chunks of the sorted names); join with merge")
    add_inference_options(parser, FLIPS)
    parser.add_argument("--force", action="store_true", help="predict again even when the submission is up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, inference_options(args))
    paths = Paths(config)
    if paths.layout == "folders":
        return predict_labels(args, config, paths)
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as error:
        raise UserError(str(error)) from None
    images_dir = Path(args.images) if args.images else paths.test_images
    all_ids = image_names(images_dir)
    if not all_ids:
        raise UserError(f"{images_dir} is missing or holds no images (.jpg/.png): give --images DIR or --data DIR")
    masks_layout = paths.layout == "masks"
    if masks_layout and shard:
        raise UserError("--shard splits a Kaggle submission; the masks layout writes one label map per image: "
                        "predict without --shard (or give each part its own --images folder)")
    defects = masks_layout or args.defects
    if defects and shard:
        raise UserError("--defects writes one defects.json for the whole test set: predict without --shard")
    image_ids = shard_ids(all_ids, *shard) if shard else all_ids
    target = paths.prediction_masks if masks_layout else paths.shard(*shard) if shard else paths.submission
    shard_text = f"{shard[0]}/{shard[1]}" if shard else None
    output = "label maps" if masks_layout else args.layout
    lock_dir = (paths.prediction_dir if masks_layout else paths.submissions) / LOCKS

    with locks.hold(lock_dir, "submission" if shard is None else f"shard-{shard[0]}-of-{shard[1]}",
                    f"the predictions {target}"):
        document = read_thresholds(paths)
        thresholds = document["settings"]
        ensemble = ensemble_folds(paths, document, config.inference.folds)
        folds, kinds = ensemble.folds, ensemble.kinds
        stamp = predict_stamp(config, paths, ensemble, output, args.skip_bad, all_ids, images_dir)
        saved = read_sidecar(sidecar_path(target))
        previous = saved["stamp"] if saved and saved.get("shard") == shard_text and target.exists() else None
        decision = decide(str(target), previous, stamp, args.force)
        if skip_or_say(decision, paths.defects, defects):
            return 0

        bad = unusable_images(images_dir, image_ids, None if masks_layout else config.data.shape, args.skip_bad,
                              ("predict them as empty (every image keeps its rows)", "predicted empty"))
        from ..nn.hardware import announce_devices, precision_name

        announce_devices(config.hardware)  # stops here when a required GPU is missing: nothing written yet
        check_predicted_like(document, paths, config.inference.tta, precision_name(config.hardware))
        tiled = image_plan(images_dir, [i for i in image_ids if i not in bad], config.data.shape,
                           config.inference.tile_size) if masks_layout else frozenset()
        is_test = os.path.normpath(str(images_dir)) == os.path.normpath(str(paths.test_images))
        truth = truth_lookup(paths, images_dir) if is_test else None

        sidecar_path(target).unlink(missing_ok=True)
        paths.defects.unlink(missing_ok=True)  # made again below, or left out (it would not match the predictions)
        if masks_layout:
            partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            try:
                rows, accumulator, elapsed, records = predict_rows(config, paths, images_dir, image_ids, bad, kinds,
                                                                   folds, thresholds, truth, partial, tiled, True)
                replace_folder(partial, target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            frame = rows_frame(rows)
        else:
            rows, accumulator, elapsed, records = predict_rows(config, paths, images_dir, image_ids, bad, kinds, folds,
                                                               thresholds, truth, defects=defects)
            frame = rows_frame(rows)
            write_submission(target, frame, args.layout, image_ids)
        if defects:
            write_defects(config, paths, records, ensemble.weights)
        if truth is not None:
            truth_frame = rows_frame((i, c, rle) for i, by_class in truth.items() for c, rle in by_class.items())
            pairs = add_scored_variant(accumulator.pairs(), score_pairs(
                frame, truth_frame, int(np.prod(config.data.shape)), config.data.class_ids))
            if shard:
                write_atomically(paths.shard_ablation(*shard),
                                 pairs.to_csv(index=False, float_format="%.8f", lineterminator="\n"))
            else:
                print(ablation_text(pairs) + f"\n  written to {write_ablation(paths, pairs, target)}")
        write_json(sidecar_path(target), {
            "stamp": stamp.to_dict(), "shard": shard_text, "images": len(image_ids), "skipped_bad": sorted(bad),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        })
    masks = int((frame["EncodedPixels"] != "").sum())
    if masks_layout:
        print(f"wrote {target}/: {len(image_ids) - len(bad):,} label maps ({len(tiled):,} predicted by tiles), "
              f"{masks:,} (image, class) pairs with a defect")
    else:
        print(f"wrote {target}: {len(image_ids):,} images, {len(frame):,} rows, {masks:,} non-empty masks; valid")
    if defects:
        print(f"wrote {paths.defects}: {sum(len(r['defects']) for r in records):,} defects on "
              f"{sum(1 for r in records if r['defective']):,} of {len(records):,} images")
    predicted = len(image_ids) - len(bad)
    print(f"{speed(predicted, elapsed)} ({predicted:,} images predicted in {elapsed:.1f} s, "
          f"{len(folds)} fold(s), flips {','.join(config.inference.tta)})")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
