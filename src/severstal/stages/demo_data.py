"""Write the embedded Severstal-like demo data set (synthetic, seeded) in Kaggle's layout.

The directory gets ``train.csv`` (``ImageId,ClassId,EncodedPixels``, non-empty masks only),
``train_images/*.jpg``, ``test_images/*.jpg``, ``sample_submission.csv`` like the official one,
``test_labels.csv`` (the test images' truth, same layout as train.csv, so a demo submission can be
scored) and ``.demo.json`` (what was generated). Everything is written into a temporary sibling
directory that is renamed into place at the end, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import pandas as pd
from tqdm import tqdm

from ..core import synthetic
from ..core.constants import LONG_COLUMNS
from ..core.rle import encode
from ..core.submission import sample_submission
from ..infra import locks
from ..infra.artifacts import (
    LOCKS,
    SAMPLE_SUBMISSION,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    replace_folder,
)
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import UserError
from ..infra.files import read_marker

MARKER = ".demo.json"
GENERATOR = "severstal demo-data"
VERSION = 2  # bump whenever the generator's output changes: old demo sets are then rebuilt
JPEG_QUALITY = 90
IMAGE_DIRS = {"train": TRAIN_IMAGES, "test": TEST_IMAGES}
LABEL_FILES = {"train": TRAIN_LABELS, "test": TEST_LABELS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal demo-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, data=False)
    parser.add_argument("--out", default=None, help="directory to write (default: the config's data.dir)")
    parser.add_argument("--train", type=int, default=None, help="training images (default: the config's demo.train)")
    parser.add_argument("--test", type=int, default=None, help="test images (default: the config's demo.test)")
    parser.add_argument("--seed", type=int, default=None, help="data set seed (default: the config's demo.seed)")
    return parser


def demo_settings(config) -> dict:
    """``{"train", "test", "seed"}`` of the demo set (the config's ``demo`` section, options applied)."""
    return {"train": config.demo.train, "test": config.demo.test, "seed": config.demo.seed}


def is_complete(directory: Path, marker: dict) -> bool:
    """Whether every file of the demo set ``marker`` describes is in ``directory``."""
    for split, folder in IMAGE_DIRS.items():
        images = directory / folder
        if not images.is_dir() or sum(1 for name in os.listdir(images) if name.endswith(".jpg")) != marker.get(split):
            return False
    return all((directory / name).is_file() for name in (*LABEL_FILES.values(), SAMPLE_SUBMISSION))


def write_demo_set(directory: Path, settings: dict) -> None:
    """Generate the demo set described by ``settings`` into ``directory`` (which must exist and be empty)."""
    plan = synthetic.plan_dataset(settings["train"], settings["test"], settings["seed"])
    progress = tqdm(total=settings["train"] + settings["test"], desc="demo images", unit="img")
    with progress:
        for split, specs in plan.items():
            folder = directory / IMAGE_DIRS[split]
            folder.mkdir()
            rows = []
            for spec in specs:
                image, masks = synthetic.render(spec)  # (256, 1600, 3), (256, 1600, 4)
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise RuntimeError(f"OpenCV could not encode {spec.image_id} as JPEG")
                (folder / spec.image_id).write_bytes(jpeg.tobytes())
                rows += [(spec.image_id, class_id, encode(masks[..., class_id - 1])) for class_id in spec.classes]
                progress.update()
            labels = pd.DataFrame(sorted(rows), columns=list(LONG_COLUMNS))
            labels.to_csv(directory / LABEL_FILES[split], index=False, lineterminator="\n")
    sample_submission([spec.image_id for spec in plan["test"]]).to_csv(directory / SAMPLE_SUBMISSION, index=False,
                                                                        lineterminator="\n")
    marker = {"generator": GENERATOR, "version": VERSION, **settings}
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def describe(settings: dict) -> str:
    return f"{settings['train']} train and {settings['test']} test images, seed {settings['seed']}"


def run(args: argparse.Namespace) -> int:
    options = {f"demo.{key}": (f"--{key}", getattr(args, key)) for key in ("train", "test", "seed")}
    config = config_from_args(args, options)  # checked like the demo.* keys
    out = Path(args.out) if args.out else Path(config.data.dir)
    settings = demo_settings(config)
    wanted = {"generator": GENERATOR, "version": VERSION, **settings}
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory: choose another --out")
    existing = read_marker(out / MARKER, GENERATOR) if out.is_dir() else None
    if existing is not None and not is_complete(out, existing):
        existing = None
    if existing == wanted:
        print(f"demo data in {out} is already complete ({describe(settings)}): nothing to do")
        return 0
    if out.is_dir() and existing is None and any(out.iterdir()):
        raise UserError(
            f"{out} is not empty and is not a complete demo data set (no valid {MARKER} or files missing), "
            "so nothing was written. Choose an empty or new directory with --out, or delete this one "
            "if it only holds an earlier, interrupted demo set."
        )
    with locks.hold(out.parent / LOCKS, out.name, f"the data directory {out}"):
        write_replacing(out, settings, existing)
    print(f"wrote the demo data set to {out} ({describe(settings)})")
    return 0


def write_replacing(out: Path, settings: dict, existing: dict | None) -> None:
    """Generate the demo set into a hidden sibling of ``out``, then rename it into place (replacing ``existing``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # from a run that was killed
    partial.mkdir()
    try:
        write_demo_set(partial, settings)
        if existing is not None:
            print(f"replacing the demo set in {out} ({describe(existing)}) with {describe(settings)}")
        elif out.is_dir():
            out.rmdir()  # empty
        replace_folder(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
