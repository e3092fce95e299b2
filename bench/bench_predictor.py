"""Benchmark an exported model on the line: ``severstal.Predictor``'s latency per image by batch size.

For each batch size, the images of a folder (at the export's size) are predicted batch by batch with
``Predictor.predict`` (the SavedModel, then the post-processing and the defect list), and the median
latency per image over the batches is reported, with the share the SavedModel alone takes
(``Predictor.probabilities`` on the same batch). Run it on the line computer to size it.

    .venv/bin/python bench/bench_predictor.py exports/demo data/demo/test_images [--batch-sizes 1,4,8] [--images 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", help="the export folder (severstal export)")
    parser.add_argument("images", help="a folder of images at the export's size")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated batch sizes (default 1,4,8)")
    parser.add_argument("--images", type=int, default=32, dest="count", help="images per batch size (default 32)")
    args = parser.parse_args(argv)
    from severstal import Predictor

    started = time.perf_counter()
    predictor = Predictor.load(args.export)
    loaded = time.perf_counter() - started
    names = sorted(name for name in os.listdir(args.images) if not name.startswith("."))[:args.count]
    images = np.stack([predictor.read_image(Path(args.images) / name) for name in names])  # (n, h, w, 3)
    predictor.predict(images[:1])  # the first call traces the graph
    rows = []
    for batch_size in (int(size) for size in args.batch_sizes.split(",")):
        total, model = [], []
        for start in range(0, len(images) - batch_size + 1, batch_size):
            batch = images[start:start + batch_size]
            begin = time.perf_counter()
            predictor.probabilities(batch)
            model.append((time.perf_counter() - begin) * 1000 / batch_size)
            results = predictor.predict(batch)
            total.append(results[0].latency_ms)
        rows.append({"batch_size": batch_size, "batches": len(total), "latency_ms": statistics.median(total),
                     "model_ms": statistics.median(model)})
    manifest = predictor.manifest
    print(f"{args.export}: {', '.join(manifest['outputs'])} of folds {manifest['folds']}, flips "
          f"{','.join(manifest['tta'])}, images {'x'.join(map(str, predictor.shape))}; loaded in {loaded:.1f} s; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)")
    print(f"{'batch':>5} {'batches':>7} {'ms/image':>9} {'model ms/image':>15}")
    for row in rows:
        print(f"{row['batch_size']:>5} {row['batches']:>7} {row['latency_ms']:>9.1f} {row['model_ms']:>15.1f}")
    print(json.dumps({"export": args.export, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
