"""Validate a data directory before training and report every problem at once.

The first line names the directory's layout (``infra.layouts``). Kaggle's: every image (readable,
complete JPEG, of the config's size: 256 x 1600 on Kaggle), byte-identical duplicates, train.csv
(columns, ClassIds, RLE, duplicate rows, rows naming missing images) and, when present,
test_images/, sample_submission.csv and test_labels.csv. The masks layout: classes.txt, every image
(readable, complete, all of one size), every label map (single-channel, of its image's size, pixel
values 0..C, an image for each), classes that no mask holds, duplicates, and test_images/ and
test_masks/ alike. The folders layout: at least two class folders, each holding images, every
image readable and complete (any size), no file outside a class folder, no image in two classes,
and test/ either labelled by the training classes' folders or a plain folder of images. Exit 0
and a one-line summary when clean, 1 and the list of problems otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from ..core.checks import check_label_frame, check_label_map, find_duplicates
from ..core.labels import non_empty
from ..core.submission import check_submission
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import UserError, format_problems
from ..infra.images import default_workers, image_names, image_sizes, scan_images
from ..infra.layouts import (
    CLASSES_FILE,
    FOLDERS_TEST,
    FOLDERS_TRAIN,
    SAMPLE_SUBMISSION,
    TEST_IMAGES,
    TEST_LABELS,
    TEST_MASKS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    TRAIN_MASKS,
    class_names_problems,
    detect_layout,
)
from ..infra.tables import CSV_ERRORS, read_csv_text, read_table


def _check_split(data_dir: Path, folder: str, workers: int | None, digests: dict[str, str],
                 shape: tuple[int, int] | None) -> tuple[list[str], list[str]]:
    """Problems of an image folder and its image names; fills ``digests``."""
    names = image_names(data_dir / folder)
    if not names:
        return [f"{folder}/ is missing or holds no images"], names
    problems = []
    for name, (image_problems, content) in scan_images(data_dir / folder, names, workers, shape, True).items():
        problems += [f"{folder}/{name}: {problem}" for problem in image_problems]
        if content is not None:
            digests[f"{folder}/{name}"] = content
    return problems, names


def _check_labels(path: Path, image_ids: list[str], shape: tuple[int, int]) -> tuple[list[str], pd.DataFrame | None]:
    try:
        frame = read_table(path)
    except CSV_ERRORS as error:
        return [f"{path.name}: {error}"], None
    return check_label_frame(frame, image_ids, source=path.name, shape=shape), frame


def check_data_directory(data_dir: Path, workers: int | None = None, shape: tuple[int, int] = (256, 1600)
                         ) -> tuple[list[str], str]:
    """Check a data directory in Kaggle's layout.

    Args:
        data_dir: holds ``train.csv`` and ``train_images/``; ``test_images/``,
            ``sample_submission.csv`` and ``test_labels.csv`` are checked when present.
        workers: threads for image checks.
        shape: the images' expected ``(height, width)`` (the config's ``data.height`` and ``data.width``).

    Returns:
        ``(problems, summary)``: every problem as ``"<file>: <what is wrong>"``, and a one-line
        summary of the counts.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory {data_dir} does not exist: run `severstal download` (real data) or "
                        "`severstal demo-data` (demo data), or pass --data DIR")
    digests: dict[str, str] = {}
    problems, train_names = _check_split(data_dir, TRAIN_IMAGES, workers, digests, shape)
    summary = [f"{len(train_names):,} train images"]
    if (data_dir / TRAIN_LABELS).is_file():
        label_problems, labels = _check_labels(data_dir / TRAIN_LABELS, train_names, shape)
        problems += label_problems
        if labels is not None:
            defects = non_empty(labels)
            summary.append(f"{defects['ImageId'].nunique():,} with defects ({len(defects):,} masks)")
    else:
        problems.append(f"{TRAIN_LABELS} is missing")
    test_names = None
    if (data_dir / TEST_IMAGES).exists():
        test_problems, test_names = _check_split(data_dir, TEST_IMAGES, workers, digests, shape)
        problems += test_problems
        summary.append(f"{len(test_names):,} test images")
    if (data_dir / TEST_LABELS).is_file():
        problems += _check_labels(data_dir / TEST_LABELS, test_names or [], shape)[0]
        summary.append(TEST_LABELS)
    if (data_dir / SAMPLE_SUBMISSION).is_file():
        try:
            sample = read_csv_text(data_dir / SAMPLE_SUBMISSION)
            submission_problems = check_submission(sample, test_names, num_pixels=shape[0] * shape[1])
        except ValueError as error:
            submission_problems = [str(error)]
        problems += [f"{SAMPLE_SUBMISSION}{'' if problem.startswith('line') else ':'} {problem}"
                     for problem in submission_problems]
        summary.append(SAMPLE_SUBMISSION)
    problems += find_duplicates(digests)
    return problems, f"{data_dir}: " + ", ".join(summary)


def _check_label_maps(data_dir: Path, folder: str, image_folder: str, images: list[str],
                      shape: tuple[int, int] | None, num_classes: int, workers: int | None
                      ) -> tuple[list[str], Counter, int]:
    """Problems of a label-map folder against its images; how many maps hold each class; how many maps."""
    stems: dict[str, str] = {}
    problems = []
    for name in images:
        stem = Path(name).stem
        if stem in stems:
            problems.append(f"{image_folder}/{name} and {stems[stem]}: two images of one stem would share the "
                            f"label map {folder}/{stem}.png; rename one")
        stems.setdefault(stem, name)
    maps = sorted(entry.name for entry in (data_dir / folder).iterdir()) if (data_dir / folder).is_dir() else []
    checkable = []
    for name in maps:
        if not name.lower().endswith(".png"):
            problems.append(f"{folder}/{name}: not a PNG (label maps are single-channel PNGs named <image stem>.png)")
        elif Path(name).stem not in stems:
            problems.append(f"{folder}/{name}: a label map without an image (no {image_folder}/{Path(name).stem}.*)")
        else:
            checkable.append(name)

    def check(name: str):
        return check_label_map((data_dir / folder / name).read_bytes(), shape, num_classes)

    counts: Counter = Counter()
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for name, (map_problems, classes) in zip(checkable, pool.map(check, checkable), strict=True):
            problems += [f"{folder}/{name}: {problem}" for problem in map_problems]
            counts.update(classes)
    return problems, counts, len(checkable)


def check_masks_directory(data_dir: Path, workers: int | None = None) -> tuple[list[str], str]:
    """Check a data directory in the masks layout (``infra.layouts``).

    The images' size is the most common one of the training images; an image of another size is a
    problem, as is a label map of another size than its image's.

    Returns:
        ``(problems, summary)`` as :func:`check_data_directory`.
    """
    data_dir = Path(data_dir)
    problems: list[str] = []
    if (data_dir / CLASSES_FILE).is_file():
        class_names, class_problems = class_names_problems((data_dir / CLASSES_FILE).read_text(errors="replace"))
        problems += class_problems
    else:
        class_names = []
        problems.append(f"{CLASSES_FILE} is missing: write the class names, one a line, class 1 first")
    train_names = image_names(data_dir / TRAIN_IMAGES)
    sizes = Counter(size for size in image_sizes(data_dir / TRAIN_IMAGES, train_names, workers).values() if size)
    shape = sizes.most_common(1)[0][0] if sizes else None
    digests: dict[str, str] = {}
    split_problems, _ = _check_split(data_dir, TRAIN_IMAGES, workers, digests, shape)
    problems += split_problems
    map_problems, counts, map_count = _check_label_maps(data_dir, TRAIN_MASKS, TRAIN_IMAGES, train_names, shape,
                                                        len(class_names), workers)
    problems += map_problems
    for number, name in enumerate(class_names, start=1):
        if train_names and counts[number] == 0:
            problems.append(f"class {number} ({name}) is in no label map of {TRAIN_MASKS}/: no model can learn it; "
                            f"give it examples or remove it from {CLASSES_FILE} (renumbering the masks)")
    summary = [f"layout masks, {len(class_names)} classes ({', '.join(class_names)})",
               f"{len(train_names):,} train images" + (f" of {shape[0]} x {shape[1]}" if shape else ""),
               f"{map_count:,} label maps"]
    if (data_dir / TEST_IMAGES).exists():
        test_problems, test_names = _check_split(data_dir, TEST_IMAGES, workers, digests, shape)
        problems += test_problems
        summary.append(f"{len(test_names):,} test images")
        if (data_dir / TEST_MASKS).is_dir():
            problems += _check_label_maps(data_dir, TEST_MASKS, TEST_IMAGES, test_names, shape, len(class_names),
                                          workers)[0]
            summary.append(f"{TEST_MASKS}/")
    problems += find_duplicates(digests)
    return problems, f"{data_dir}: " + ", ".join(summary)


def _check_class_folders(data_dir: Path, folder: str, workers: int | None, digests: dict[str, str]
                         ) -> tuple[list[str], dict[str, int]]:
    """Problems of ``folder/<class name>/<images>`` and the image count of each class folder."""
    problems, counts = [], {}
    for entry in sorted((data_dir / folder).iterdir(), key=lambda entry: entry.name):
        if not entry.is_dir():
            problems.append(f"{folder}/{entry.name}: a file outside the class folders (put each image in "
                            f"{folder}/<class name>/)")
            continue
        split_problems, names = _check_split(data_dir, f"{folder}/{entry.name}", workers, digests, None)
        problems += split_problems
        counts[entry.name] = len(names)
    return problems, counts


def check_folders_directory(data_dir: Path, workers: int | None = None) -> tuple[list[str], str]:
    """Check a data directory in the folders layout (``infra.layouts``): classification data, one folder per class.

    Returns:
        ``(problems, summary)`` as :func:`check_data_directory`.
    """
    data_dir = Path(data_dir)
    digests: dict[str, str] = {}
    problems, counts = _check_class_folders(data_dir, FOLDERS_TRAIN, workers, digests)
    if len(counts) < 2:
        problems.append(f"{FOLDERS_TRAIN}/ holds {len(counts)} class folder(s): a classifier needs at least two "
                        f"(for example {FOLDERS_TRAIN}/healthy/ and {FOLDERS_TRAIN}/defective/)")
    per_class = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    summary = [f"layout folders, {len(counts)} classes ({per_class} training images)"]
    test = data_dir / FOLDERS_TEST
    if test.is_dir():
        subfolders = [entry.name for entry in test.iterdir() if entry.is_dir()]
        if subfolders:
            test_problems, test_counts = _check_class_folders(data_dir, FOLDERS_TEST, workers, digests)
            problems += test_problems
            problems += [f"{FOLDERS_TEST}/{name}/: not a training class ({', '.join(counts)})"
                         for name in test_counts if name not in counts]
            summary.append(f"{sum(test_counts.values()):,} labelled test images")
        else:
            test_problems, test_names = _check_split(data_dir, FOLDERS_TEST, workers, digests, None)
            problems += test_problems
            summary.append(f"{len(test_names):,} unlabelled test images")
    problems += find_duplicates(digests)
    return problems, f"{data_dir}: " + ", ".join(summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal check-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, help="threads for image checks (default: cores)")
    parser.add_argument("--all", action="store_true", help="list every problem (default: the first 20 and a count)")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    data_dir = Path(config.data.dir)
    layout = detect_layout(data_dir)  # named in the first line (config_from_args), or an error naming the layouts
    if layout == "kaggle":
        problems, summary = check_data_directory(data_dir, args.workers, config.data.shape)
    elif layout == "masks":
        problems, summary = check_masks_directory(data_dir, args.workers)
    else:
        problems, summary = check_folders_directory(data_dir, args.workers)
    if not problems:
        print(f"data OK: {summary}")
        return 0
    print(f"check-data found {len(problems):,} problems in {data_dir}:", file=sys.stderr)
    print(format_problems(problems, None if args.all else 20, " (--all lists them)"), file=sys.stderr)
    print(f"checked {summary}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
