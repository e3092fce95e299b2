"""Benchmark severstal.core.rle against the RLE functions most Severstal Kaggle kernels copy.

Decodes the 2,845 real masks of ``$SEVERSTAL_SAMPLE_DIR/train_subset_rle.csv`` (synthetic masks
when the variable is unset) with ``severstal.core.rle.decode`` and the kernels' ``rle2mask``, and
encodes them back with ``severstal.core.rle.encode`` and the kernels' ``mask2rle``, all in one process,
interleaved and repeated; the memory floor is allocating and scanning one 409,600-byte mask.

    .venv/bin/python bench/bench_rle.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from severstal.core.constants import HEIGHT, NUM_PIXELS, WIDTH
from severstal.core.rle import decode, encode

CHUNK = 256  # masks decoded at a time for the encode timing (256 x 409,600 bytes)


# ---- the functions as the public kernels write them -------------------------------------

def rle2mask(mask_rle, shape=(HEIGHT, WIDTH)):
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):  # noqa: B905 (as the kernels write it)
        img[lo:hi] = 1
    return img.reshape(shape, order="F")


def mask2rle(img):
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def memory_floor(_):
    """Allocate one mask and read every byte of it: no decoder or encoder can beat this."""
    return np.count_nonzero(np.zeros(NUM_PIXELS, dtype=np.uint8))


# ---- inputs ---------------------------------------------------------------------------------

def synthetic_rles(count: int, seed: int = 0) -> list[str]:
    """Severstal-like masks without the real data: a few filled ellipses each, kernel-encoded."""
    import cv2

    rng = np.random.default_rng(seed)
    rles = []
    for _ in range(count):
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            centre = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
            axes = (int(rng.integers(5, 150)), int(rng.integers(5, 120)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        rles.append(mask2rle(mask))
    return rles


def benchmark_rles() -> tuple[list[str], str]:
    """The real masks when ``$SEVERSTAL_SAMPLE_DIR`` is set, else 2,845 synthetic ones."""
    sample = os.environ.get("SEVERSTAL_SAMPLE_DIR")
    if sample and (Path(sample) / "train_subset_rle.csv").is_file():
        path = Path(sample) / "train_subset_rle.csv"
        return pd.read_csv(path)["EncodedPixels"].tolist(), f"{path} (real)"
    return synthetic_rles(2845), "synthetic ellipses (SEVERSTAL_SAMPLE_DIR unset)"


# ---- timing ---------------------------------------------------------------------------------

def time_each(functions: dict[str, Callable], inputs: list, rotation: int) -> dict[str, float]:
    """Seconds each function takes over ``inputs``, run one after another in a rotated order."""
    names = list(functions)
    names = names[rotation % len(names):] + names[:rotation % len(names)]
    seconds = {}
    for name in names:
        function = functions[name]
        start = time.perf_counter()
        for item in inputs:
            function(item)
        seconds[name] = time.perf_counter() - start
    return seconds


def check_agreement(rles: list[str]) -> None:
    """Ours and the kernels' functions must give identical masks and strings."""
    for rle in rles:
        mask = decode(rle)
        if not np.array_equal(mask, rle2mask(rle).astype(bool)):
            raise AssertionError(f"decoders disagree on {rle[:40]}...")
        if encode(mask) != mask2rle(rle2mask(rle)) or encode(mask) != rle:
            raise AssertionError(f"encoders disagree on {rle[:40]}...")


def run(repeats: int) -> str:
    rles, source = benchmark_rles()
    check_agreement(rles)
    decoders = {"decode ours": decode, "decode kernel rle2mask": rle2mask, "memory floor": memory_floor}
    encoders = {"encode ours": encode, "encode kernel mask2rle": mask2rle}
    totals: dict[str, list[float]] = {name: [] for name in [*decoders, *encoders]}
    for repeat in range(repeats):
        for name, seconds in time_each(decoders, rles, repeat).items():
            totals[name].append(seconds)
        encode_seconds = dict.fromkeys(encoders, 0.0)
        for first in range(0, len(rles), CHUNK):
            masks = [np.ascontiguousarray(decode(rle), dtype=np.uint8) for rle in rles[first:first + CHUNK]]
            for name, seconds in time_each(encoders, masks, repeat).items():
                encode_seconds[name] += seconds
        for name, seconds in encode_seconds.items():
            totals[name].append(seconds)
    rate = {name: len(rles) / statistics.median(seconds) for name, seconds in totals.items()}
    lines = [
        f"RLE benchmark: {len(rles):,} masks from {source}",
        f"median of {repeats} interleaved repeats; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, NumPy {np.__version__}",
        "",
        f"{'':<26}{'masks/s':>10}{'ours/kernel':>13}",
        f"{'decode ours':<26}{rate['decode ours']:>10,.0f}"
        f"{rate['decode ours'] / rate['decode kernel rle2mask']:>12.1f}x",
        f"{'decode kernel rle2mask':<26}{rate['decode kernel rle2mask']:>10,.0f}",
        f"{'encode ours':<26}{rate['encode ours']:>10,.0f}"
        f"{rate['encode ours'] / rate['encode kernel mask2rle']:>12.1f}x",
        f"{'encode kernel mask2rle':<26}{rate['encode kernel mask2rle']:>10,.0f}",
        f"{'memory floor':<26}{rate['memory floor']:>10,.0f}   (allocate + scan one 409,600-byte mask)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (default 5)")
    print(run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
