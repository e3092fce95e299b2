"""Check a submission file's format as Kaggle would, before uploading it.

The test images come from the file names in ``--images DIR`` (never opened) or the ImageIds of
``--sample-submission CSV``; by default from the config's data directory (``test_images/``, else
``sample_submission.csv``). The submission defaults to the config's ``submission.csv``.
Exit 0 with a summary line when valid, 1 listing the problems otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.checks import image_names
from ..core.constants import CLASS_IDS
from ..core.labels import normalise
from ..core.submission import check_submission, read_submission

SHOWN_PROBLEMS = 20


def sample_submission_ids(path: str | os.PathLike) -> list[str]:
    """The distinct ImageIds of a sample submission (either layout), in file order."""
    try:
        frame = normalise(read_submission(path))
    except ValueError as error:
        raise UserError(f"cannot read the test image list from {path}: {error}") from None
    return list(dict.fromkeys(frame["ImageId"]))


def expected_test_ids(images: str | os.PathLike | None = None,
                      sample_submission: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """The test image names a submission must cover, and where they came from.

    Args:
        images: a folder of test images (names only are read).
        sample_submission: a sample submission CSV.
        data_dir: used when neither is given: its ``test_images/``, else its ``sample_submission.csv``.

    Returns:
        ``(image names, description of the source)``.

    Raises:
        UserError: when the source is missing or empty.
    """
    if images is None and sample_submission is None:
        if data_dir is None:
            raise UserError("give --images DIR or --sample-submission CSV to say which test images to expect")
        data_dir = Path(data_dir)
        if image_names(data_dir / "test_images"):
            images = data_dir / "test_images"
        elif (data_dir / "sample_submission.csv").is_file():
            sample_submission = data_dir / "sample_submission.csv"
        else:
            raise UserError(f"{data_dir} has neither test_images/ nor sample_submission.csv: pass "
                            "--images DIR or --sample-submission CSV (or --data DIR)")
    if images is not None:
        names = image_names(images)
        if not names:
            raise UserError(f"{images} is missing or holds no images")
        return names, f"{images}/"
    names = sample_submission_ids(sample_submission)
    if not names:
        raise UserError(f"{sample_submission} lists no images")
    return names, str(sample_submission)


def submission_summary(frame_raw: pd.DataFrame) -> str:
    """``"22,024 rows, 5,506 images, 1,234 masks (class 1: 10, ...)"`` for a valid submission."""
    frame = normalise(frame_raw)
    masks = frame[(frame["EncodedPixels"] != "") & frame["ClassId"].isin(CLASS_IDS)]
    counts = masks["ClassId"].value_counts()
    per_class = ", ".join(f"{class_id}: {int(counts.get(class_id, 0)):,}" for class_id in CLASS_IDS)
    return (f"{len(frame):,} rows, {frame['ImageId'].nunique():,} images, "
            f"{len(masks):,} non-empty masks (class {per_class})")


def validate_submission(path: str | os.PathLike, expected_ids: list[str]) -> tuple[list[str], str | None]:
    """Read and check a submission file.

    Returns:
        ``(problems, summary)``; the summary is None when there are problems.

    Raises:
        UserError: when the file does not exist.
    """
    if not Path(path).is_file():
        raise UserError(f"submission {path} does not exist: run `severstal predict` first or give its path")
    try:
        frame = read_submission(path)
    except ValueError as error:
        return [str(error)], None
    problems = check_submission(frame, expected_ids)
    return problems, None if problems else submission_summary(frame)


def report_problems(path: str | os.PathLike, problems: list[str], limit: int = SHOWN_PROBLEMS) -> None:
    """Print the first ``limit`` problems and a count of the rest to stderr."""
    print(f"{path} is not a valid submission ({len(problems):,} problems):", file=sys.stderr)
    for problem in problems[:limit]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit:,} more", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", nargs="?", default=None,
                        help="the CSV to check (default: submissions/<experiment>/submission.csv)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", default=None, help="folder of test images (only the names are read)")
    source.add_argument("--sample-submission", default=None, help="sample submission listing the test images")
    add_config_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    needs_config = args.submission is None or (args.images is None and args.sample_submission is None)
    config = config_from_args(args) if needs_config else None
    path = Path(args.submission) if args.submission else config.submission_path
    expected, source = expected_test_ids(args.images, args.sample_submission,
                                         config.data_dir if config else None)
    problems, summary = validate_submission(path, expected)
    if problems:
        report_problems(path, problems)
        return 1
    print(f"{path} is valid: {summary}; covers all {len(expected):,} test images of {source}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
