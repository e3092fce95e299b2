"""Check a submission file's format as Kaggle would, before uploading it.

The test images come from the file names in ``--images DIR`` (never opened) or the ImageIds of
``--sample-submission CSV``; by default from the config's data directory (``test_images/``, else
``sample_submission.csv``). The submission defaults to the config's ``submission.csv``.
Exit 0 with a summary line when valid, 1 listing the problems otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..infra.artifacts import Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import format_problems
from ..infra.tables import expected_test_ids, validate_submission


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
    paths = Paths(config_from_args(args)) if needs_config else None
    path = Path(args.submission) if args.submission else paths.submission
    expected, source = expected_test_ids(args.images, args.sample_submission, paths.data_dir if paths else None)
    problems, summary = validate_submission(path, expected)
    if problems:
        print(f"{path} is not a valid submission ({len(problems):,} problems):\n{format_problems(problems)}",
              file=sys.stderr)
        return 1
    print(f"{path} is valid: {summary}; covers all {len(expected):,} test images of {source}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
