"""Validate a data directory (Kaggle's layout) before training and report every problem at once.

Checks every image (readable, complete JPEG, of the config's size: 256 x 1600 on Kaggle), byte-identical
duplicates, train.csv (columns, ClassIds, RLE, duplicate rows, rows naming missing images) and, when present,
test_images/, sample_submission.csv and test_labels.csv. Exit 0 and a one-line summary when
clean, 1 and the list of problems otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..core.checks import check_label_frame, find_duplicates
from ..core.labels import non_empty
from ..core.submission import check_submission
from ..infra.artifacts import SAMPLE_SUBMISSION, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import UserError, format_problems
from ..infra.images import image_names, scan_images
from ..infra.tables import CSV_ERRORS, read_csv_text, read_table


def _check_split(data_dir: Path, folder: str, workers: int | None, digests: dict[str, str],
                 shape: tuple[int, int]) -> tuple[list[str], list[str]]:
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
    problems, summary = check_data_directory(data_dir, args.workers, (config.data.height, config.data.width))
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
