"""Benchmark predict's host-side cost per image: everything but the networks.

The real ``severstal predict`` path runs on synthetic 256 x 1600 JPEG test images at the default
config's shapes (``configs/default.yaml``: 5 folds, segmenter and classifier gate), with every fold
model replaced by a near-free stand-in of the same input and output shapes: ``(batch, h, w, 3)``
uint8 in, a fixed probability map with a few defects ``(batch, h, w, 4)`` (segmenter) or fixed
probabilities ``(batch, 4)`` (classifier) out. What is timed is what is left: reading, decoding,
flipping, copying, averaging, resizing, post-processing and encoding (predict's own timer, models
loaded), per image at the margin: the time for ``--images`` images minus the time for one batch,
divided by the images between (each run traces the stand-ins' predict functions once, as a real
run traces its models once). Runs with the default flips and with all four; medians of
``--repeats`` runs.

    .venv/bin/python bench/bench_predict.py [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from severstal.core import synthetic
from severstal.core.constants import HEIGHT, WIDTH
from severstal.infra.artifacts import BEST_WEIGHTS, CONFIG_FILE, FINISHED, Paths
from severstal.infra.config import load_config
from severstal.infra.stamps import file_fingerprint

FLIP_SETS = (("none", "hflip"), ("none", "hflip", "vflip", "both"))
GATED_CLASS = "1"  # one class gates on the classifier, so predict runs the classifier folds too


def write_images(folder: Path, count: int) -> None:
    """``count`` synthetic Severstal-like test images as JPEG."""
    folder.mkdir(parents=True)
    for spec in synthetic.plan_dataset(0, count, seed=0)["test"]:
        image, _ = synthetic.render(spec)
        cv2.imwrite(str(folder / spec.image_id), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


def write_folds(config, folds: int) -> None:
    """Finished-looking fold folders (what predict checks before it loads a model) for both models."""
    paths = Paths(config)
    for kind in ("seg", "cls"):
        for fold in range(folds):
            folder = paths.fold_dir(kind, fold)
            folder.mkdir(parents=True)
            (folder / BEST_WEIGHTS).write_bytes(f"{kind} {fold}".encode())
            (folder / CONFIG_FILE).write_text(config.to_yaml())
            (folder / FINISHED).write_text("{}\n")


def write_thresholds(config, folds: int, tta) -> None:
    """Thresholds "tuned" on the stand-in folds with these flips, in float32."""
    paths = Paths(config)
    setting = {"pixel_threshold": 0.5, "min_component_size": 64, "min_area": 300, "classifier_threshold": 0.0}
    classes = {str(c): dict(setting) for c in range(1, 5)}
    classes[GATED_CLASS]["classifier_threshold"] = 0.5
    weights = {kind: {str(fold): file_fingerprint(paths.fold_dir(kind, fold) / BEST_WEIGHTS) for fold in range(folds)}
               for kind in ("seg", "cls")}
    document = {"format_version": 2, "classes": classes, "weights": weights,
                "tuned_on": {"tta": list(tta), "precision": "float32"}}
    paths.thresholds.write_text(json.dumps(document))


def stand_in_loader(keras, tf, spec_of):
    """A ``load_fold_model`` whose models cost nearly nothing and give outputs of the real shapes."""
    from severstal.nn.inference import FoldModel

    rng = np.random.default_rng(0)
    pattern = np.zeros((HEIGHT, WIDTH, 4), np.float32)  # a few defects above the thresholds
    for channel in range(4):
        for _ in range(3):
            top, left = int(rng.integers(0, HEIGHT - 40)), int(rng.integers(0, WIDTH - 200))
            pattern[top:top + 40, left:left + 200, channel] = 0.9
    maps = tf.constant(pattern)

    def segmenter_output(images):  # (batch, h, w, 3) uint8 -> (batch, h, w, 4) float32
        shape = tf.shape(images)
        return tf.broadcast_to(maps[:shape[1], :shape[2]], (shape[0], shape[1], shape[2], 4))

    def classifier_output(images):  # (batch, h, w, 3) uint8 -> (batch, 4) float32
        return tf.fill((tf.shape(images)[0], 4), 0.7)

    def load(paths, kind, fold, num_classes=4):
        images = keras.Input((None, None, 3), dtype="uint8")
        output = keras.layers.Lambda(segmenter_output if kind == "seg" else classifier_output)(images)
        head = "masks" if kind == "seg" else "multilabel"
        return FoldModel(kind, fold, keras.Model(images, output), spec_of(kind), head, paths.fold_dir(kind, fold),
                         num_classes)

    return load


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="test images (256 x 1600)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--defects", action="store_true", help="predict --defects: also the defects.json records")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import severstal.nn.inference as inference
    from severstal.nn.pipeline import input_spec
    from severstal.nn.tfsetup import keras, tf
    from severstal.stages import predict

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        overrides = [f"paths.models={root / 'models'}", f"paths.submissions={root / 'submissions'}",
                     f"paths.predictions={root / 'predictions'}",
                     f"paths.reports={root / 'reports'}", f"data.dir={root / 'data'}", "hardware.require_gpu=false"]
        config = load_config("configs/default.yaml", overrides)
        folds = config.folds.k
        batch = config.inference.batch_size
        if args.images <= batch:
            raise SystemExit(f"--images must be more than one batch ({batch})")
        write_images(root / "data" / "test_images", args.images)
        write_images(root / "one_batch", batch)
        write_folds(config, folds)
        inference.load_fold_model = stand_in_loader(
            keras, tf, lambda kind: input_spec(HEIGHT, WIDTH, config.model(kind).scale))
        timed = {}
        original_rows = predict.predict_rows

        def predict_rows(*arguments, **options):
            result = original_rows(*arguments, **options)  # (rows, accumulator, seconds, ...)
            timed["seconds"] = result[2]
            return result

        predict.predict_rows = predict_rows
        print(f"{args.images} images of {HEIGHT} x {WIDTH}, {folds} folds x (segmenter + classifier), batch "
              f"{config.inference.batch_size}, stand-in networks{', with defects.json' if args.defects else ''}; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        folders = {args.images: root / "data" / "test_images", batch: root / "one_batch"}
        for tta in FLIP_SETS:
            write_thresholds(config, folds, tta)
            medians = {}
            for count, folder in folders.items():
                seconds = []
                for _ in range(args.repeats):
                    argv = ["--config", "configs/default.yaml", "--force", "--tta", ",".join(tta), "--images",
                            str(folder), *(["--defects"] if args.defects else [])]
                    for override in overrides:
                        argv += ["--set", override]
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        code = predict.main(argv)
                    if code != 0:
                        raise SystemExit(f"predict failed (exit {code})")
                    seconds.append(timed["seconds"])
                medians[count] = statistics.median(seconds)
            margin = (medians[args.images] - medians[batch]) / (args.images - batch)
            print(f"flips {','.join(tta)}: host-side {1000 * margin:.1f} ms per image at the margin (medians of "
                  f"{args.repeats}: {medians[args.images]:.2f} s for {args.images} images, {medians[batch]:.2f} s "
                  f"for {batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
