"""Validate a data directory (Kaggle's layout) before training and report every problem at once.

Checks every image (readable, complete JPEG, 256 x 1600), byte-identical duplicates, train.csv
(columns, ClassIds, RLE, duplicate rows, rows naming missing images) and, when present,
test_images/, sample_submission.csv and test_labels.csv. Exit 0 and a one-line summary when
clean, 1 and the list of problems otherwise. :func:`bad_images` is the reusable part for stages
that skip unreadable images.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.checks import check_image_bytes, check_label_frame, digest, find_duplicates, image_names
from ..core.constants import HEIGHT, WIDTH
from ..core.labels import non_empty, read_table
from ..core.submission import check_submission, read_submission

SHOWN_PROBLEMS = 50


def default_workers() -> int:
    """Threads for image checks: decoding and reading release the GIL, so one per core."""
    return max(1, os.cpu_count() or 1)


def _scan_one(path: Path, shape: tuple[int, int]) -> tuple[list[str], str | None]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return [f"cannot be read: {error.strerror or error}"], None
    return check_image_bytes(data, shape), digest(data)


def scan_images(directory: str | os.PathLike, names: list[str] | None = None, workers: int | None = None,
                shape: tuple[int, int] = (HEIGHT, WIDTH), progress: bool = True
                ) -> dict[str, tuple[list[str], str | None]]:
    """Read and check images in a thread pool.

    Args:
        directory: the image folder.
        names: file names to check (default: every image in ``directory``).
        workers: threads (default: one per core).
        shape: expected ``(height, width)``.
        progress: show a tqdm bar.

    Returns:
        ``{name: (problems, content digest or None when unreadable)}``.
    """
    directory = Path(directory)
    names = image_names(directory) if names is None else list(names)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = pool.map(lambda name: _scan_one(directory / name, shape), names)
        return dict(zip(names, tqdm(results, total=len(names), desc=f"check {directory.name}",
                                    unit="img", disable=not progress), strict=True))


def bad_images(data_dir: str | os.PathLike, split: str = "train", workers: int | None = None,
               shape: tuple[int, int] = (HEIGHT, WIDTH), progress: bool = True) -> dict[str, str]:
    """Images of a split that cannot be used: unreadable, truncated, undecodable or the wrong size.

    Args:
        data_dir: a data directory in Kaggle's layout.
        split: ``"train"`` or ``"test"`` (the folder ``<split>_images``).
        workers: threads (default: one per core).
        shape: expected ``(height, width)``.
        progress: show a tqdm bar.

    Returns:
        ``{file name: reason}``; empty when every image is fine. About 1 s per 1,000 images on 2 cores.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    scanned = scan_images(Path(data_dir) / f"{split}_images", workers=workers, shape=shape, progress=progress)
    return {name: "; ".join(problems) for name, (problems, _) in scanned.items() if problems}


def _check_split(data_dir: Path, split: str, workers: int | None, digests: dict[str, str]
                 ) -> tuple[list[str], list[str]]:
    """Problems of ``<split>_images/`` and its image names; fills ``digests``."""
    folder = f"{split}_images"
    names = image_names(data_dir / folder)
    if not names:
        return [f"{folder}/ is missing or holds no images"], names
    problems = []
    for name, (image_problems, content) in scan_images(data_dir / folder, names, workers).items():
        problems += [f"{folder}/{name}: {problem}" for problem in image_problems]
        if content is not None:
            digests[f"{folder}/{name}"] = content
    return problems, names


def _check_labels(path: Path, image_ids: list[str]) -> tuple[list[str], pd.DataFrame | None]:
    try:
        frame = read_table(path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        return [f"{path.name}: {error}"], None
    return check_label_frame(frame, image_ids, source=path.name), frame


def check_data_directory(data_dir: str | os.PathLike, workers: int | None = None) -> tuple[list[str], str]:
    """Check a data directory in Kaggle's layout.

    Args:
        data_dir: holds ``train.csv`` and ``train_images/``; ``test_images/``,
            ``sample_submission.csv`` and ``test_labels.csv`` are checked when present.
        workers: threads for image checks.

    Returns:
        ``(problems, summary)``: every problem as ``"<file>: <what is wrong>"``, and a one-line
        summary of the counts.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory {data_dir} does not exist: run `severstal download` (real data) or "
                        "`severstal demo-data` (demo data), or pass --data DIR")
    digests: dict[str, str] = {}
    problems, train_names = _check_split(data_dir, "train", workers, digests)
    summary = [f"{len(train_names):,} train images"]
    if (data_dir / "train.csv").is_file():
        label_problems, labels = _check_labels(data_dir / "train.csv", train_names)
        problems += label_problems
        if labels is not None:
            defects = non_empty(labels)
            summary.append(f"{defects['ImageId'].nunique():,} with defects ({len(defects):,} masks)")
    else:
        problems.append("train.csv is missing")
    test_names = None
    if (data_dir / "test_images").exists():
        test_problems, test_names = _check_split(data_dir, "test", workers, digests)
        problems += test_problems
        summary.append(f"{len(test_names):,} test images")
    if (data_dir / "test_labels.csv").is_file():
        problems += _check_labels(data_dir / "test_labels.csv", test_names or [])[0]
        summary.append("test_labels.csv")
    if (data_dir / "sample_submission.csv").is_file():
        try:
            sample = read_submission(data_dir / "sample_submission.csv")
            submission_problems = check_submission(sample, test_names)
        except ValueError as error:
            submission_problems = [str(error)]
        problems += [f"sample_submission.csv{'' if problem.startswith('line') else ':'} {problem}"
                     for problem in submission_problems]
        summary.append("sample_submission.csv")
    problems += find_duplicates(digests)
    return problems, f"{data_dir}: " + ", ".join(summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal check-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, help="threads for image checks (default: cores)")
    parser.add_argument("--all", action="store_true", help=f"list every problem (default: the first "
                                                            f"{SHOWN_PROBLEMS} and a count)")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    problems, summary = check_data_directory(config.data_dir, args.workers)
    if not problems:
        print(f"data OK: {summary}")
        return 0
    shown = problems if args.all else problems[:SHOWN_PROBLEMS]
    print(f"check-data found {len(problems):,} problems in {config.data_dir}:", file=sys.stderr)
    for problem in shown:
        print(f"  {problem}", file=sys.stderr)
    if len(shown) < len(problems):
        print(f"  ... and {len(problems) - len(shown):,} more (--all lists them)", file=sys.stderr)
    print(f"checked {summary}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
