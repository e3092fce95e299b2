"""Copy a small subset of a data directory in Kaggle's layout, for the smoke run (``bash run_all.sh --smoke``).

From ``--source`` (``train.csv`` in either Kaggle layout, ``train_images/``, optionally ``test_images/``
and ``test_labels.csv``) it chooses N training images that show every class, about half of them
defect-free (by name, deterministically), and the first N test images by name. A source without
test images (your own training data, the real sample) lends N more of its training images as the
test set, with their masks as ``test_labels.csv``, so the smoke run predicts and scores them. The output directory gets
``train.csv`` (``ImageId,ClassId,EncodedPixels``, non-empty masks only), ``train_images/`` and
``test_images/`` (byte-identical copies), ``sample_submission.csv`` like the official one,
``test_labels.csv`` when the source has one, and ``.smoke.json`` (the source, the counts and the
chosen names). Only the image folders are listed and the label files read: no image is decoded.
Everything is written into a temporary sibling directory that is renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.constants import CLASS_IDS
from ..core.submission import sample_submission
from ..core.subset import choose_training_images, images_per_class, labels_of
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
from ..infra.stamps import file_fingerprint
from ..infra.tables import read_labels

MARKER = ".smoke.json"
GENERATOR = "severstal smoke-data"
VERSION = 2  # bump whenever the output's format changes: old subsets are then rebuilt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal smoke-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, data=True)
    parser.add_argument("--source", required=True, help="the full data directory in Kaggle's layout to copy from")
    parser.add_argument("--out", default=None, help="directory to write (default: the config's data.dir, or --data)")
    parser.add_argument("--train", type=int, default=None,
                        help="training images (default: the config's smoke.train_images)")
    parser.add_argument("--test", type=int, default=None, help="test images (default: the config's smoke.test_images)")
    return parser


@dataclass(frozen=True)
class Subset:
    """The chosen images of a source directory and their labels (normal frames, non-empty masks only)."""

    source: Path
    train_images: list[str]
    test_images: list[str]
    train_labels: pd.DataFrame
    test_labels: pd.DataFrame | None  # None when the source has no test_labels.csv
    marker: dict  # what .smoke.json records
    test_folder: str = TEST_IMAGES  # the source folder the test images come from (train_images/ when lent)


def read_source(source: Path, train_count: int, test_count: int) -> Subset:
    """List the source's image folders, read its label files and choose the subset.

    Args:
        source: a data directory in Kaggle's layout.
        train_count: training images wanted (all when the source has fewer).
        test_count: test images wanted (all when the source has fewer).

    Returns:
        The subset.

    Raises:
        UserError: when the source is missing, lacks train.csv, train_images/ or test_images/, or a label
            file cannot be read.
    """
    if not source.is_dir():
        raise UserError(f"the source directory {source} does not exist: pass --source DIR, a data directory in "
                        f"Kaggle's layout ({TRAIN_LABELS}, {TRAIN_IMAGES}/, {TEST_IMAGES}/), e.g. the one "
                        "`severstal download` or `severstal demo-data` wrote")
    train_names = image_names(source / TRAIN_IMAGES)
    test_names = image_names(source / TEST_IMAGES)
    missing = [what for what, absent in ((TRAIN_LABELS, not (source / TRAIN_LABELS).is_file()),
                                         (f"{TRAIN_IMAGES}/ with images", not train_names)) if absent]
    if missing:
        raise UserError(f"the source directory {source} is not in Kaggle's layout: it has no "
                        f"{' and no '.join(missing)}. Pass --source the full data directory (`severstal download` "
                        "writes one, `severstal demo-data` a synthetic one); nothing was written")
    labels = read_labels(source / TRAIN_LABELS, "training labels")
    chosen_train = choose_training_images(labels, train_names, train_count)
    lent = not test_names  # no test images: training images the subset does not train on become the test set
    if lent:
        test_names = [name for name in train_names if name not in set(chosen_train)]
        if not test_names:
            raise UserError(f"the source directory {source} has no {TEST_IMAGES}/ and no training images beyond the "
                            f"{len(chosen_train)} chosen for training, so there is nothing to predict: lower "
                            "--train (smoke.train_images) or add test images; nothing was written")
    chosen_test = test_names[:test_count]
    if lent:
        test_labels = labels_of(labels, chosen_test)
    elif (source / TEST_LABELS).is_file():
        test_labels = labels_of(read_labels(source / TEST_LABELS, "test labels"), chosen_test)
    else:
        test_labels = None
    marker = {"generator": GENERATOR, "version": VERSION, "source": str(source.resolve()),
              "train": train_count, "test": test_count, "test_from": TRAIN_IMAGES if lent else TEST_IMAGES,
              "labels": {name: file_fingerprint(source / name) for name in (TRAIN_LABELS, TEST_LABELS)},
              "chosen": {"train": chosen_train, "test": chosen_test}}
    return Subset(source, chosen_train, chosen_test, labels_of(labels, chosen_train), test_labels, marker,
                  TRAIN_IMAGES if lent else TEST_IMAGES)


def check_places(source: Path, out: Path) -> None:
    """UserError when the output directory is the source, holds it or lies inside it (or is a file)."""
    source, target = source.resolve(), out.resolve()
    if target == source or target in source.parents or source in target.parents:
        raise UserError(f"the output directory {out} is {'the source directory' if target == source else 'nested with'}"
                        f" {source}: the subset must go to a directory of its own (--out DIR or --data DIR, e.g. "
                        f"data/smoke/{source.name}); nothing was written")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory: choose another --out")


def is_complete(directory: Path, marker: dict) -> bool:
    """Whether ``directory`` holds every file of the subset ``marker`` describes."""
    labelled = marker["labels"][TEST_LABELS] != "missing" or marker["test_from"] == TRAIN_IMAGES
    files = [TRAIN_LABELS, SAMPLE_SUBMISSION] + ([TEST_LABELS] if labelled else [])
    return (image_names(directory / TRAIN_IMAGES) == marker["chosen"]["train"]
            and image_names(directory / TEST_IMAGES) == marker["chosen"]["test"]
            and all((directory / name).is_file() for name in files))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")


def write_subset(directory: Path, subset: Subset) -> None:
    """Copy the subset's images and write its label files and marker into ``directory`` (existing, empty)."""
    for folder, source_folder, names in ((TRAIN_IMAGES, TRAIN_IMAGES, subset.train_images),
                                         (TEST_IMAGES, subset.test_folder, subset.test_images)):
        (directory / folder).mkdir()
        for name in names:
            shutil.copyfile(subset.source / source_folder / name, directory / folder / name)
    write_csv(subset.train_labels, directory / TRAIN_LABELS)
    if subset.test_labels is not None:
        write_csv(subset.test_labels, directory / TEST_LABELS)
    write_csv(sample_submission(subset.test_images), directory / SAMPLE_SUBMISSION)
    (directory / MARKER).write_text(json.dumps(subset.marker, indent=2) + "\n")


def write_replacing(out: Path, subset: Subset) -> None:
    """Write the subset into a hidden sibling of ``out``, then rename it into place (replacing what is there)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # from a run that was killed
    partial.mkdir()
    try:
        write_subset(partial, subset)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        replace_folder(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def describe(subset: Subset) -> str:
    """``"8 training images (class 1: 1, ...; 4 defect-free) and 8 test images"``, noting a short source."""
    per_class = images_per_class(subset.train_labels, subset.train_images)
    defect_free = len(set(subset.train_images) - set(subset.train_labels["ImageId"]))
    classes = ", ".join(f"class {class_id}: {per_class[class_id]}" for class_id in CLASS_IDS)
    text = f"{len(subset.train_images)} training images ({classes}; {defect_free} defect-free)"
    if len(subset.train_images) < subset.marker["train"]:
        text += f" (all the source has, {subset.marker['train']} asked)"
    text += f" and {len(subset.test_images)} test images"
    if subset.test_folder == TRAIN_IMAGES:
        text += f" (other training images with their masks: the source has no {TEST_IMAGES}/)"
    if len(subset.test_images) < subset.marker["test"]:
        text += f" (all the source has, {subset.marker['test']} asked)"
    return text


def run(args: argparse.Namespace) -> int:
    options = {"smoke.train_images": ("--train", args.train), "smoke.test_images": ("--test", args.test)}
    config = config_from_args(args, options, announce=False)  # checked like the smoke.* keys; writes the data
    source = Path(args.source)
    out = Path(args.out) if args.out else Path(config.data.dir)
    subset = read_source(source, config.smoke.train_images, config.smoke.test_images)
    check_places(source, out)
    existing = read_marker(out / MARKER, GENERATOR) if out.is_dir() else None
    if existing == subset.marker and is_complete(out, existing):
        print(f"smoke data in {out} is up to date ({describe(subset)} from {source}): nothing to do")
        return 0
    if out.is_dir() and existing is None and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no smoke data subset (no valid {MARKER}), so nothing was "
                        "written. Choose an empty or new directory with --out or --data, or delete this one")
    with locks.hold(out.parent / LOCKS, out.name, f"the data directory {out}"):
        write_replacing(out, subset)
    print(f"wrote {describe(subset)} from {source} to {out}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
