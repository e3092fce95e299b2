"""Write an embedded demo data set (synthetic, seeded): Severstal-like in Kaggle's layout, or of the other layouts.

``--layout kaggle`` (the default): ``train.csv`` (``ImageId,ClassId,EncodedPixels``, non-empty masks
only), ``train_images/*.jpg``, ``test_images/*.jpg``, ``sample_submission.csv`` like the official
one, ``test_labels.csv`` (the test images' truth, same layout as train.csv, so a demo submission
can be scored). ``--layout masks``: metal plates of another size with three classes
(``core.synthetic_layouts``): ``train_images/*.jpg``, ``train_masks/*.png`` (label maps of the
defective plates), ``classes.txt``, ``test_images/`` and ``test_masks/`` (the truth).
``--layout folders``: photos of parts, ``train/healthy/``, ``train/defective/`` and the same under
``test/``. Every set also gets ``.demo.json`` (what was generated). Everything is written into a
temporary sibling directory that is renamed into place at the end, so an interrupted run leaves
nothing half-written.
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

from ..core import synthetic, synthetic_layouts
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
from ..infra.images import image_names
from ..infra.layouts import CLASSES_FILE, FOLDERS_TEST, FOLDERS_TRAIN, LAYOUTS, TEST_MASKS, TRAIN_MASKS

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
    parser.add_argument("--layout", choices=LAYOUTS, default="kaggle",
                        help="kaggle: Severstal-like strips (default); masks: plates with label maps and classes.txt; "
                             "folders: healthy and defective parts, a folder per class (default --out for these: "
                             "data/demo-<layout>)")
    return parser


def demo_settings(config) -> dict:
    """``{"train", "test", "seed"}`` of the demo set (the config's ``demo`` section, options applied)."""
    return {"train": config.demo.train, "test": config.demo.test, "seed": config.demo.seed}


def is_complete(directory: Path, marker: dict) -> bool:
    """Whether every file of the demo set ``marker`` describes is in ``directory``."""
    layout = marker.get("layout", "kaggle")
    if layout == "masks":
        return (directory / CLASSES_FILE).is_file() and all(
            len(image_names(directory / IMAGE_DIRS[split])) == marker.get(split) for split in IMAGE_DIRS)
    if layout == "folders":
        return all(sum(len(image_names(directory / folder / label)) for label in synthetic_layouts.PART_CLASSES)
                   == marker.get(split) for split, folder in (("train", FOLDERS_TRAIN), ("test", FOLDERS_TEST)))
    for split, folder in IMAGE_DIRS.items():
        images = directory / folder
        if not images.is_dir() or sum(1 for name in os.listdir(images) if name.endswith(".jpg")) != marker.get(split):
            return False
    return all((directory / name).is_file() for name in (*LABEL_FILES.values(), SAMPLE_SUBMISSION))


def encoded(image, suffix: str, name: str, rgb: bool = True) -> bytes:
    """An image encoded as ``suffix`` (``.jpg`` at the demo's quality, or ``.png``): RGB ``(h, w, 3)`` when
    ``rgb`` (else in OpenCV's BGR order), or grey ``(h, w)``."""
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(suffix, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix == ".jpg" else [])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {name} as {suffix}")
    return data.tobytes()


def write_masks_set(directory: Path, settings: dict, progress) -> None:
    """The plates of the masks layout: images, label maps of the defective ones, classes.txt."""
    (directory / CLASSES_FILE).write_text("\n".join(synthetic_layouts.PLATE_CLASSES) + "\n")
    for split_index, (split, masks) in enumerate((("train", TRAIN_MASKS), ("test", TEST_MASKS))):
        (directory / IMAGE_DIRS[split]).mkdir()
        (directory / masks).mkdir()
        for index, classes in enumerate(synthetic_layouts.plan_plates(settings[split], settings["seed"], split_index)):
            stem = f"plate-{split}-{index:04d}"
            image, label_map = synthetic_layouts.plate(settings["seed"], split_index, index, classes)
            (directory / IMAGE_DIRS[split] / f"{stem}.jpg").write_bytes(encoded(image, ".jpg", stem))
            if label_map.any():
                (directory / masks / f"{stem}.png").write_bytes(encoded(label_map, ".png", stem))
            progress.update()


def write_folders_set(directory: Path, settings: dict, progress) -> None:
    """The parts of the folders layout: ``<split>/<healthy|defective>/*.png``."""
    for split_index, (split, folder) in enumerate((("train", FOLDERS_TRAIN), ("test", FOLDERS_TEST))):
        for label in synthetic_layouts.PART_CLASSES:
            (directory / folder / label).mkdir(parents=True)
        for index, label in enumerate(synthetic_layouts.plan_parts(settings[split], settings["seed"], split_index)):
            name = f"part-{split}-{index:04d}.png"
            image = synthetic_layouts.part(settings["seed"], split_index, index, label)
            (directory / folder / label / name).write_bytes(encoded(image, ".png", name))
            progress.update()


def write_kaggle_set(directory: Path, settings: dict, progress) -> None:
    """The Severstal-like strips of Kaggle's layout: images, label CSVs and the sample submission."""
    plan = synthetic.plan_dataset(settings["train"], settings["test"], settings["seed"])
    for split, specs in plan.items():
        folder = directory / IMAGE_DIRS[split]
        folder.mkdir()
        rows = []
        for spec in specs:
            image, masks = synthetic.render(spec)  # (256, 1600, 3), (256, 1600, 4)
            (folder / spec.image_id).write_bytes(encoded(image, ".jpg", spec.image_id, rgb=False))
            rows += [(spec.image_id, class_id, encode(masks[..., class_id - 1])) for class_id in spec.classes]
            progress.update()
        labels = pd.DataFrame(sorted(rows), columns=list(LONG_COLUMNS))
        labels.to_csv(directory / LABEL_FILES[split], index=False, lineterminator="\n")
    sample_submission([spec.image_id for spec in plan["test"]]).to_csv(directory / SAMPLE_SUBMISSION, index=False,
                                                                        lineterminator="\n")


WRITERS = {"kaggle": write_kaggle_set, "masks": write_masks_set, "folders": write_folders_set}


def write_demo_set(directory: Path, settings: dict) -> None:
    """Generate the demo set described by ``settings`` into ``directory`` (which must exist and be empty)."""
    layout = settings.get("layout", "kaggle")
    description = "demo images" if layout == "kaggle" else f"demo images ({layout})"
    with tqdm(total=settings["train"] + settings["test"], desc=description, unit="img") as progress:
        WRITERS[layout](directory, settings, progress)
    marker = {"generator": GENERATOR, "version": VERSION, **settings}
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def describe(settings: dict) -> str:
    layout = f", layout {settings['layout']}" if "layout" in settings else ""
    return f"{settings['train']} train and {settings['test']} test images, seed {settings['seed']}{layout}"


def run(args: argparse.Namespace) -> int:
    options = {f"demo.{key}": (f"--{key}", getattr(args, key)) for key in ("train", "test", "seed")}
    config = config_from_args(args, options, announce=False)  # checked like the demo.* keys; writes the data
    settings = demo_settings(config)
    if args.layout != "kaggle":
        settings["layout"] = args.layout
    if args.out:
        out = Path(args.out)
    else:
        out = Path(config.data.dir) if args.layout == "kaggle" else Path(config.data.dir).parent / f"demo-{args.layout}"
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
