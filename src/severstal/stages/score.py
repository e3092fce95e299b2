"""Score a submission against true labels: the competition's mean Dice, per class and overall.

Both files may be in either Kaggle layout. The images scored are those in the submission; a
missing (image, class) row is an empty prediction, rows with ClassId 0 are ignored, and an
image without rows in the truth file is defect-free (as in train.csv). The last line printed is
``mean_dice 0.xxxxxx``.
"""

from __future__ import annotations

import argparse
import sys

from ..core.metric import class_table_text, mean_dice, score_pairs
from ..infra.commands import run_main
from ..infra.errors import UserError
from ..infra.tables import read_checked_submission, read_labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="submission CSV (ImageId,EncodedPixels,ClassId or ImageId_ClassId,...)")
    parser.add_argument("--truth", required=True, help="true labels CSV in either layout (e.g. a train.csv)")
    return parser


def run(args: argparse.Namespace) -> int:
    submission = read_checked_submission(args.submission)
    truth = read_labels(args.truth, "truth")
    try:
        pairs = score_pairs(submission, truth)
    except ValueError as error:
        raise UserError(f"cannot score {args.submission} against {args.truth}: {error}") from None
    images = pairs["ImageId"].nunique()
    if images and not pairs["ImageId"].isin(truth["ImageId"]).any():
        print(f"warning: none of the {images:,} submission images appear in {args.truth}: all are scored as "
              "defect-free (right for a train.csv only when they have no defects)", file=sys.stderr)
    print(f"scored {images:,} images ({len(pairs):,} image/class pairs) of {args.submission} against {args.truth}")
    print(class_table_text(pairs))
    print(f"mean_dice {mean_dice(pairs):.6f}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
