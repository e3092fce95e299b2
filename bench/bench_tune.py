"""Benchmark the threshold search (and the OOF statistics) at full competition scale.

Synthetic OOF statistics of the full training set (12,568 images x 4 classes, the default
grid: 11 pixel thresholds x 4 component sizes x 30 minimum areas x 10 classifier thresholds,
5 folds) with Severstal-like class frequencies and mask areas. Measures the search (including
the held-out-fold check) in time and peak memory for the ``kaggle`` objective, the search by
image-level objectives (``--objectives``, default ``recall:0.95`` and ``f1``) in time, the size of
the OOF files, and the time ``segmentation_statistics`` takes per 256 x 1600 image.

    .venv/bin/python bench/bench_tune.py [--images 12568] [--folds 5] [--repeat 3] [--objectives recall:0.95,f1]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

from severstal.core.classification import Objective, pooled_points
from severstal.core.constants import HEIGHT, WIDTH
from severstal.core.oofstats import STATISTIC_KEYS, OOFStatistics, combine_folds, segmentation_statistics
from severstal.core.thresholds import SearchGrid, search_thresholds
from severstal.infra.config import load_config
from severstal.infra.oof_files import (
    load_classifier_oof,
    load_segmentation_oof,
    save_classifier_oof,
    save_segmentation_oof,
)

PRESENCE = np.array([897, 247, 5150, 801]) / 12568  # images per class in the real training set
MEDIAN_AREA = np.array([3326, 2944, 11954, 25357])  # median true mask area per class


def synthetic_statistics(
    images: int, folds: int, grid: SearchGrid, rng: np.random.Generator
) -> OOFStatistics:
    """OOF statistics shaped like a decent model's: areas shrink with the threshold and component size."""
    present = rng.random((images, 4)) < PRESENCE  # (N, 4)
    true_area = np.where(present, rng.lognormal(np.log(MEDIAN_AREA), 0.9, (images, 4)), 0).astype(np.int64)
    pixels = np.asarray(grid.pixel_thresholds)[None, None, :, None]  # (1, 1, P, 1)
    sizes = np.asarray(grid.min_component_sizes)[None, None, None, :]  # (1, 1, 1, C)
    skill = rng.uniform(0.3, 1.6, (images, 4))[..., None, None]  # how much of the defect the model finds
    false_area = np.where(rng.random((images, 4)) < 0.15, rng.lognormal(6.5, 1.5, (images, 4)), 0)
    false_area = false_area[..., None, None]
    found = true_area[..., None, None] * skill * (1.4 - pixels)
    spurious = false_area * (1.1 - pixels) ** 2 * np.exp(-sizes / 200)
    predicted = np.floor(found * (1 - sizes / 4000) + spurious).astype(np.int64)  # (N, 4, P, C)
    overlap = rng.uniform(0.5, 0.95, (images, 4))[..., None, None]
    intersection = np.minimum(np.floor(found * overlap), np.minimum(predicted, true_area[..., None, None]))
    scores = np.clip(0.7 * present + rng.normal(0.15, 0.2, (images, 4)), 0, 1).astype(np.float32)
    return OOFStatistics(
        image_ids=np.array([f"{i:08x}.jpg" for i in range(images)]), folds=np.arange(images) % folds,
        pixel_thresholds=np.asarray(grid.pixel_thresholds),
        min_component_sizes=np.asarray(grid.min_component_sizes),
        predicted_area=predicted.astype(np.int32), intersection=intersection.astype(np.int32),
        true_area=true_area.astype(np.int32), classifier_probabilities=scores,
    )


def smooth_maps(count: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """(count, 256, 1600, 4) probability maps: a few soft blobs on a blurred noise floor."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    maps = np.zeros((count, HEIGHT, WIDTH, 4), dtype=np.float32)
    for image in range(count):
        for channel in range(4):
            for _ in range(rng.integers(0, 3)):
                centre_y, centre_x = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
                spread_y, spread_x = rng.uniform(10, 80), rng.uniform(10, 300)
                blob = np.exp(-((rows - centre_y) / spread_y) ** 2 - ((columns - centre_x) / spread_x) ** 2)
                maps[image, ..., channel] = np.maximum(maps[image, ..., channel], blob * rng.uniform(0.5, 1))
            floor = cv2.GaussianBlur(rng.random((HEIGHT, WIDTH)).astype(np.float32), (0, 0), 2)
            maps[image, ..., channel] += noise * (floor - 0.5)
    return np.clip(maps, 0, 1)


def save_folds(stats: OOFStatistics, grid: SearchGrid, directory: Path) -> tuple[list[Path], list[Path]]:
    """Write each fold's segmentation and classifier OOF files; return their paths."""
    seg_paths, cls_paths = [], []
    for fold in np.unique(stats.folds):
        rows = stats.folds == fold
        seg_paths.append(save_segmentation_oof(
            directory / f"seg{fold}.npz", stats.image_ids[rows], fold,
            {key: getattr(stats, key)[rows] for key in STATISTIC_KEYS},
            grid.pixel_thresholds, grid.min_component_sizes))
        cls_paths.append(save_classifier_oof(
            directory / f"cls{fold}.npz", stats.image_ids[rows], fold, stats.classifier_probabilities[rows]))
    return seg_paths, cls_paths


def timed(function, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12568)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--map-images", type=int, default=8, help="images for the statistics timing")
    parser.add_argument("--objectives", default="recall:0.95,f1",
                        help="image-level objectives to time besides kaggle, comma-separated")
    args = parser.parse_args(argv)
    grid = SearchGrid.from_dict(load_config("configs/default.yaml").raw["tune"])
    rng = np.random.default_rng(0)
    stats = synthetic_statistics(args.images, args.folds, grid, rng)
    print(f"grid {grid.shape} (pixel thresholds, component sizes, min areas, classifier thresholds), "
          f"{args.images} images, {args.folds} folds")

    seconds, result = timed(lambda: search_thresholds(stats, grid), args.repeat)
    tracemalloc.start()
    search_thresholds(stats, grid)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    statistics_size = sum(getattr(stats, key).nbytes for key in STATISTIC_KEYS) / 2**20
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"search + held-out check: {seconds:.3f} s (best of {args.repeat}); peak memory allocated by the "
          f"search {peak:.0f} MiB (tracemalloc), on top of the statistics ({statistics_size:.0f} MiB); "
          f"process max RSS {max_rss:.0f} MiB")
    print(f"  tuned {result.tuned_mean:.6f}, default {result.default_mean:.6f}, "
          f"held-out {result.heldout_mean:.6f}")
    for text in filter(None, args.objectives.split(",")):
        objective = Objective.parse(text)
        seconds, result = timed(lambda objective=objective: search_thresholds(stats, grid, objective), args.repeat)
        recalls = " ".join(f"{point.recall:.4f}" for point in result.operating)
        pooled = " ".join(f"{point.recall:.4f}" for point in pooled_points(result.heldout_operating))
        print(f"search {objective} + held-out check: {seconds:.3f} s (best of {args.repeat}); image-level recall per "
              f"class {recalls}, held-out {pooled}")

    with tempfile.TemporaryDirectory() as directory:
        seg_paths, cls_paths = save_folds(stats, grid, Path(directory))
        size = sum(path.stat().st_size for path in seg_paths + cls_paths) / 2**20

        def load():
            return combine_folds([load_segmentation_oof(path) for path in seg_paths],
                                 [load_classifier_oof(path) for path in cls_paths])

        load_seconds, _ = timed(load, args.repeat)
    print(f"OOF files of all folds: {size:.1f} MiB on disk (compressed .npz); "
          f"loading and joining them {load_seconds:.3f} s")

    truth = (smooth_maps(args.map_images, rng, 0.0) > 0.6).astype(np.uint8)
    cases = {
        "sparse maps": smooth_maps(args.map_images, rng, 0.0),
        "maps on a noisy floor": smooth_maps(args.map_images, rng, 0.5),
        "worst case, every pixel above every threshold": np.full(truth.shape, 0.9, dtype=np.float32),
    }
    for label, maps in cases.items():
        seconds, _ = timed(lambda maps=maps: segmentation_statistics(
            maps, truth, grid.pixel_thresholds, grid.min_component_sizes), 2)
        print(f"segmentation_statistics, {label}: {1000 * seconds / len(maps):.1f} ms per 256x1600 image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
