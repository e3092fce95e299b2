"""Validate a submission CSV against the test images, then submit it with the Kaggle API.

Needs Kaggle credentials and the accepted competition rules (see ``severstal download``). Severstal
was a notebook ("kernels-only") competition: if Kaggle refuses file submissions, submit from a
Kaggle notebook instead (``severstal bundle`` makes an offline bundle for one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..infra.artifacts import Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import UserError, format_problems
from ..infra.tables import expected_test_ids, validate_submission
from ..kaggle.competition import submit_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal kaggle-submit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--file", default=None,
                        help="the CSV to submit (default: submissions/<experiment>/submission.csv)")
    parser.add_argument("--message", "-m", required=True, help="submission description shown on Kaggle")
    return parser


def run(args: argparse.Namespace) -> int:
    paths = Paths(config_from_args(args))
    path = Path(args.file) if args.file else paths.submission
    expected, source = expected_test_ids(data_dir=paths.data_dir)
    problems, summary = validate_submission(path, expected)
    if problems:
        raise UserError(f"{path} is not a valid submission ({len(problems):,} problems), so it was not submitted:\n"
                        f"{format_problems(problems)}\nFix them (severstal validate {path} checks it)")
    print(f"{path} is valid against {source}: {summary}")
    print(f"Kaggle: {submit_file(path, args.message)}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
