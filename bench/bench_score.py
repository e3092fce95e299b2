"""Benchmark scoring a full-size test set: 5,506 images x 4 classes with realistic masks.

The truth and the submission are made by resampling real RLE strings
(``$SEVERSTAL_SAMPLE_DIR/train_subset_rle.csv``, synthetic ellipses when unset): each test image
takes the masks of a random training image (defect-free ones included, as often as in the data);
the submission keeps a true mask (60%), swaps it for another mask of the class (15%) or drops it,
and adds a false positive on 4% of the empty pairs. Times ``metric.score_pairs`` + ``class_table``
in-process and the whole ``severstal score`` command (Python start-up and CSV reading included).

    .venv/bin/python bench/bench_score.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from severstal.core.constants import CLASS_IDS, NUM_TEST_IMAGES
from severstal.core.metric import class_table, mean_dice, score_pairs
from severstal.infra.tables import read_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rle import benchmark_rles  # noqa: E402  (the bench folder is not a package)

DEFECT_FREE_SHARE = 5902 / 12568  # official training set


def make_test_set(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``(submission, truth, source)`` normal frames for ``NUM_TEST_IMAGES`` images."""
    rng = np.random.default_rng(seed)
    sample = os.environ.get("SEVERSTAL_SAMPLE_DIR")
    if sample and (Path(sample) / "train_subset_rle.csv").is_file():
        source = read_table(Path(sample) / "train_subset_rle.csv")
        description = f"{Path(sample) / 'train_subset_rle.csv'} (real)"
    else:
        rles, description = benchmark_rles()
        source = pd.DataFrame({"ImageId": [f"s{i // 2}.jpg" for i in range(len(rles))],
                               "ClassId": rng.choice(CLASS_IDS, len(rles)), "EncodedPixels": rles})
        source = source.drop_duplicates(["ImageId", "ClassId"])
    by_image = {image: dict(zip(group["ClassId"], group["EncodedPixels"], strict=True))
                for image, group in source.groupby("ImageId")}
    by_class = {c: source.loc[source["ClassId"] == c, "EncodedPixels"].tolist() for c in CLASS_IDS}
    donors = list(by_image)
    truth_rows, submission_rows = [], []
    for index in range(NUM_TEST_IMAGES):
        image_id = f"{index:09x}.jpg"
        masks = {} if rng.random() < DEFECT_FREE_SHARE else by_image[donors[rng.integers(len(donors))]]
        for class_id in CLASS_IDS:
            true = masks.get(class_id, "")
            if true:
                truth_rows.append((image_id, class_id, true))
            draw, other = rng.random(), by_class[class_id][rng.integers(len(by_class[class_id]))]
            if true:
                predicted = true if draw < 0.6 else other if draw < 0.75 else ""
            else:
                predicted = other if draw < 0.04 else ""
            submission_rows.append((image_id, class_id, predicted))
    columns = ["ImageId", "ClassId", "EncodedPixels"]
    return pd.DataFrame(submission_rows, columns=columns), pd.DataFrame(truth_rows, columns=columns), description


def run(repeats: int) -> str:
    submission, truth, source = make_test_set()
    in_process, command = [], []
    with tempfile.TemporaryDirectory() as directory:
        submission_path, truth_path = Path(directory) / "submission.csv", Path(directory) / "truth.csv"
        submission[["ImageId", "EncodedPixels", "ClassId"]].to_csv(submission_path, index=False)
        truth.to_csv(truth_path, index=False)
        severstal = Path(sys.executable).with_name("severstal")
        for _ in range(repeats):
            start = time.perf_counter()
            pairs = score_pairs(submission, truth)
            class_table(pairs)
            in_process.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = subprocess.run([str(severstal), "score", str(submission_path), "--truth", str(truth_path)],
                                    capture_output=True, text=True, check=True)
            command.append(time.perf_counter() - start)
    printed = result.stdout.strip().splitlines()[-1]
    masks = int((submission["EncodedPixels"] != "").sum())
    return "\n".join([
        f"score benchmark: {NUM_TEST_IMAGES:,} images x 4 classes = {len(pairs):,} pairs; "
        f"{len(truth):,} true masks, {masks:,} predicted masks, resampled from {source}",
        f"median of {repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
        f"  score_pairs + class_table (in-process): {statistics.median(in_process):.2f} s",
        f"  severstal score SUBMISSION --truth TRUTH (whole command): {statistics.median(command):.2f} s",
        f"  {printed} (in-process mean_dice {mean_dice(pairs):.6f})",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    print(run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
