"""Score a submission against true labels: the competition's mean Dice, per class and overall.

Both files may be in either Kaggle layout. The images scored are those in the submission; a
missing (image, class) row is an empty prediction, rows with ClassId 0 are ignored, and an
image without rows in the truth file is defect-free (as in train.csv). The last line printed is
``mean_dice 0.xxxxxx``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..cli import UserError, run_main
from ..core.labels import normalise, read_table
from ..core.metric import class_table, mean_dice, score_pairs
from ..core.submission import check_submission, read_submission

SHOWN_PROBLEMS = 10


def read_scored_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a submission (either layout) into the normal frame, or raise ``UserError``."""
    if not Path(path).is_file():
        raise UserError(f"submission {path} does not exist")
    try:
        raw = read_submission(path)
    except ValueError as error:
        raise UserError(f"cannot read the submission: {error}") from None
    problems = check_submission(raw, None)
    if problems:
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS:,} more" if len(problems) > SHOWN_PROBLEMS else ""
        listing = "\n  ".join(problems[:SHOWN_PROBLEMS])
        count = f"{len(problems):,} problem{'s' if len(problems) > 1 else ''}"
        raise UserError(f"submission {path} is malformed ({count}; severstal validate checks it fully):"
                        f"\n  {listing}{more}")
    return normalise(raw)


def read_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Read a truth label file (either layout) into the normal frame, or raise ``UserError``."""
    if not Path(path).is_file():
        raise UserError(f"truth file {path} does not exist")
    try:
        return read_table(path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the truth file {path}: {error}") from None


def format_table(table: pd.DataFrame) -> str:
    """``metric.class_table`` as aligned text, Dice to 6 decimals."""
    return table.to_string(formatters={"dice": "{:.6f}".format})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="submission CSV (ImageId,EncodedPixels,ClassId or ImageId_ClassId,...)")
    parser.add_argument("--truth", required=True, help="true labels CSV in either layout (e.g. a train.csv)")
    return parser


def run(args: argparse.Namespace) -> int:
    submission = read_scored_submission(args.submission)
    truth = read_truth(args.truth)
    try:
        pairs = score_pairs(submission, truth)
    except ValueError as error:
        raise UserError(f"cannot score {args.submission} against {args.truth}: {error}") from None
    images = pairs["ImageId"].nunique()
    if images and not pairs["ImageId"].isin(truth["ImageId"]).any():
        print(f"warning: none of the {images:,} submission images appear in {args.truth}: all are scored as "
              "defect-free (right for a train.csv only when they have no defects)", file=sys.stderr)
    print(f"scored {images:,} images ({len(pairs):,} image/class pairs) of {args.submission} against {args.truth}")
    print(format_table(class_table(pairs)))
    print(f"mean_dice {mean_dice(pairs):.6f}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
