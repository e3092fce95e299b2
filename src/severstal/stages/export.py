"""Export the fold ensemble for an inspection line: one TensorFlow SavedModel and export.json.

``severstal export [--config ...] [--out DIR]`` (default ``exports/<experiment>/``) writes a SavedModel
whose ``serving_default`` signature takes ``images``, uint8 ``(batch, height, width, 3)`` RGB at the data
set's size, and returns ``segmentation`` (float32 ``(batch, height, width, classes)``, the fold- and
flip-averaged probabilities of every selected fold) and ``classification`` (float32 ``(batch, classes)``)
where the thresholds gate on a classifier; a classification data set (folders layout) exports its
classifier folds alone. ``export.json`` beside it names the classes, the input size and channel order,
the tuned thresholds and what the export was made from (docs/export-format.md). The SavedModel loads
with ``tf.saved_model.load(DIR)`` in a plain TensorFlow environment; ``severstal.Predictor.load(DIR)``
adds the post-processing and the defect list. The folds, flips and precision are those the thresholds
were tuned with (``predict``'s checks); the export is written beside its target and swapped in whole.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from ..core.ensemble import FLIPS
from ..core.exports import (
    CLASSIFICATION,
    MANIFEST,
    ONNX_FILE,
    ONNX_OPSET,
    ONNX_TOLERANCE,
    SEGMENTATION,
    export_manifest,
)
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
)
from ..infra.commands import add_config_arguments, add_inference_options, config_from_args, inference_options, run_main
from ..infra.config import Config
from ..infra.errors import UserError
from ..infra.files import write_json
from ..infra.images import IMAGE_SUFFIXES
from ..infra.stamps import Action, Stamp, decide, file_fingerprint

FORMATS = ("savedmodel", "onnx")


def export_plan(config: Config, paths: Paths) -> tuple[dict, Ensemble]:
    """The thresholds document and the folds to export (checked as predict checks them: finished folds whose OOF
    statistics the thresholds were tuned on)."""
    if paths.layout == "folders":
        document = read_classification_thresholds(paths)
        return document, classifier_ensemble(paths, document, config.inference.folds)
    document = read_thresholds(paths)
    return document, ensemble_folds(paths, document, config.inference.folds)


def manifest(config: Config, paths: Paths, document: dict, ensemble: Ensemble, precision: str, stamp: Stamp,
             tensorflow: str, onnx: dict | None) -> dict:
    """``export.json`` of this export (``core.exports.export_manifest``) with the stamp that decides whether it is
    up to date."""
    segmentation = "seg" in ensemble.kinds
    outputs = ([SEGMENTATION] if segmentation else []) + ([CLASSIFICATION] if "cls" in ensemble.kinds else [])
    decision = None
    if not segmentation:  # read_classification_thresholds checked it
        thresholds = document["decision_thresholds"]
        decision = {"rule": "argmax"} if thresholds is None else {
            "rule": "thresholded", "thresholds": dict(zip(config.data.classes, map(float, thresholds), strict=True))}
    value = export_manifest(
        experiment=config.experiment_name, layout=paths.layout, class_ids=config.data.class_ids,
        class_names=list(config.data.classes), shape=config.data.shape, outputs=outputs,
        postprocessing=[setting.to_dict() for setting in document["settings"]] if segmentation else None,
        decision=decision, tile_overlap=config.inference.tile_overlap if paths.layout == "masks" else None,
        tta=config.inference.tta, folds=ensemble.folds, precision=precision, tensorflow=tensorflow, onnx=onnx,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        made_from={"thresholds": {"file": str(paths.thresholds), "sha256": file_fingerprint(paths.thresholds)},
                   "models": model_records(paths, ensemble.weights), "config": config.raw})
    return {**value, "stamp": stamp.to_dict()}


def check_images(paths: Paths, count: int = 2) -> np.ndarray:
    """Images to compare a converted model with the SavedModel on: up to ``count`` test images of the data set's size
    (RGB), topped up with seeded noise; ``(count, height, width, 3)`` uint8."""
    shape = paths.config.data.shape
    images = []
    for path in sorted(paths.test_images.rglob("*")) if paths.test_images.is_dir() else []:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) \
            if path.suffix.lower() in IMAGE_SUFFIXES else None
        if image is not None and image.shape[:2] == tuple(shape):
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if len(images) == count:
            break
    noise = np.random.default_rng(0).integers(0, 256, (count - len(images), *shape, 3), dtype=np.uint8)
    return np.concatenate([np.stack(images).reshape(-1, *shape, 3), noise]) if images else noise


def convert_to_onnx(module, shape, path: Path, images: np.ndarray) -> dict:
    """Write ``model.onnx`` (``nn.export.save_onnx``) and check it against the SavedModel's graph on ``images``.

    Returns:
        ``export.json``'s ``onnx`` entry.

    Raises:
        UserError: the converter is not installed, or the converted model differs by more than ONNX_TOLERANCE.
    """
    from ..nn.export import onnx_difference, save_onnx

    missing = [name for name in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--format onnx needs {' and '.join(missing)}: pip install tf2onnx onnx onnxruntime (the "
                        "versions requirements.txt pins), or export the SavedModel alone")
    import tf2onnx

    save_onnx(module, shape, path, ONNX_OPSET)
    difference = onnx_difference(module, path, images)
    if not difference <= ONNX_TOLERANCE:
        raise UserError(f"the ONNX conversion differs from the SavedModel by up to {difference:.3g} (more than "
                        f"{ONNX_TOLERANCE:g}) on {len(images)} image(s): it is not written; use the SavedModel")
    return {"file": path.name, "opset": ONNX_OPSET, "converter": f"tf2onnx {tf2onnx.__version__}",
            "max_abs_difference": difference, "checked_on": f"{len(images)} image(s), onnxruntime on the CPU"}


def saved_stamp(target: Path) -> Stamp | None:
    """The stamp in an existing export's ``export.json`` (None when there is none)."""
    try:
        return Stamp.from_dict(json.loads((target / MANIFEST).read_text()).get("stamp"))
    except (OSError, ValueError, AttributeError):
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="the export folder (default: exports/<experiment>/)")
    parser.add_argument("--format", dest="export_format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (default): a TensorFlow SavedModel; onnx: also model.onnx (tf2onnx, checked "
                             "with onnxruntime against the SavedModel)")
    add_inference_options(parser, FLIPS, batch_size=False)  # the SavedModel takes any batch
    parser.add_argument("--force", action="store_true", help="export again even when the export is up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, inference_options(args))
    paths = Paths(config)
    target = Path(args.out) if args.out else paths.exports
    if not target.resolve().name:
        raise UserError(f"--out {args.out}: name a folder for the export (it is replaced whole)")
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not (target / MANIFEST).is_file():
        raise UserError(f"{target} exists and is not an export (no {MANIFEST}): the export replaces its folder whole, "
                        "so give a new or empty folder with --out")
    with locks.hold(target.parent / LOCKS, target.name, f"the export {target}"):
        document, ensemble = export_plan(config, paths)
        folds = ensemble.folds
        tile = config.inference.tile_size
        if paths.layout == "masks" and tile is not None and tuple(tile) != tuple(config.data.shape):
            raise UserError(f"inference.tile_size {tile[0]} x {tile[1]}: the export tiles larger images at its input "
                            f"size ({config.data.height} x {config.data.width}), so it would not predict as predict "
                            "does; export with inference.tile_size null")
        stamp = Stamp.of(config, PREDICT_KEYS, ensemble_inputs(paths, ensemble),
                         {"export.folds": folds, "export.format": args.export_format})
        decision = decide(str(target), saved_stamp(target), stamp, args.force)
        if decision.action is Action.SKIP:
            print(decision.note)
            return 0
        if decision.note:
            print(decision.note)
        from ..nn.export import onnx_problem, save_serving_model, serving_module
        from ..nn.hardware import announce_devices, configure_hardware, precision_name
        from ..nn.inference import FoldEnsemble, load_fold_model
        from ..nn.tfsetup import tf

        announce_devices(config.hardware)
        precision = precision_name(config.hardware)
        check_predicted_like(document, paths, config.inference.tta, precision)
        configure_hardware(config.hardware)
        started = time.perf_counter()
        kinds = ensemble.kinds
        ensembles = {kind: FoldEnsemble([load_fold_model(paths, kind, fold) for fold in folds],
                                        config.inference.tta) for kind in kinds}
        problem = onnx_problem(ensembles, config.data.shape) if args.export_format == "onnx" else None
        if problem:
            raise UserError(f"--format onnx: {problem}")
        module = serving_module(ensembles, config.data.shape)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            save_serving_model(module, partial)
            onnx = convert_to_onnx(module, config.data.shape, partial / ONNX_FILE, check_images(paths)) \
                if args.export_format == "onnx" else None
            write_json(partial / MANIFEST, manifest(config, paths, document, ensemble, precision, stamp,
                                                    tf.__version__, onnx))
            replace_folder(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    print(f"wrote {target}/ in {time.perf_counter() - started:.1f} s ({size / 2**20:.1f} MiB): a SavedModel "
          f"(serving_default: images uint8 (batch, {config.data.height}, {config.data.width}, 3) RGB -> "
          f"{', '.join(kinds)} fold(s) {folds}, flips {','.join(config.inference.tta)}) and {MANIFEST}")
    if onnx:
        print(f"and {target / ONNX_FILE} (opset {ONNX_OPSET}): onnxruntime's outputs differ from the SavedModel's "
              f"by at most {onnx['max_abs_difference']:.2g} on {onnx['checked_on']}")
    print(f"load it with tf.saved_model.load('{target}') or severstal.Predictor.load('{target}')")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
