"""Validate a submission CSV against the test images, then submit it with the Kaggle API.

Needs Kaggle credentials and the accepted competition rules (see ``severstal download``). Severstal
was a notebook ("kernels-only") competition: if Kaggle refuses file submissions, submit from a
Kaggle notebook instead (``severstal bundle`` makes an offline bundle for one).
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.constants import COMPETITION
from ..kaggle.api import call_kaggle, load_client
from .validate import expected_test_ids, report_problems, validate_submission

ACTION = "submit to Kaggle"
UPLOAD_FAILED = "Could not submit to competition"  # what kaggle 2.x answers when the upload fails
NOTEBOOK_NOTE = ("If Kaggle says this competition accepts only notebook (kernel) submissions, submit from a "
                 "Kaggle notebook: `severstal bundle` makes an offline bundle for one.")


def submit_file(path: str | os.PathLike, message: str, client: Any = None,
                competition: str = COMPETITION) -> str:
    """Upload a (validated) submission file to the competition.

    Args:
        path: the CSV.
        message: the submission description shown on Kaggle.
        client: an object with ``competition_submit(file_name, message, competition)``; default:
            the authenticated Kaggle API.
        competition: the Kaggle competition slug.

    Returns:
        Kaggle's answer (its message, e.g. "Successfully submitted to ...").

    Raises:
        UserError: no credentials, HTTP 403 (rules not accepted), network failure, failed upload.
    """
    if not message.strip():
        raise UserError("give a submission description with --message \"...\"")
    client = load_client(ACTION) if client is None else client
    response = call_kaggle(ACTION, partial(client.competition_submit, str(path), message, competition),
                           note=NOTEBOOK_NOTE)
    answer = str(getattr(response, "message", response) or "").strip()
    if answer == UPLOAD_FAILED:
        raise UserError(f"cannot {ACTION}: uploading {path} failed ({answer}); run the same command again.")
    return answer or "submitted (Kaggle sent no message)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal kaggle-submit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--file", default=None,
                        help="the CSV to submit (default: submissions/<experiment>/submission.csv)")
    parser.add_argument("--message", "-m", required=True, help="submission description shown on Kaggle")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    path = Path(args.file) if args.file else config.submission_path
    expected, source = expected_test_ids(data_dir=config.data_dir)
    problems, summary = validate_submission(path, expected)
    if problems:
        report_problems(path, problems)
        raise UserError(f"{path} was not submitted: fix the problems above (severstal validate {path})")
    print(f"{path} is valid against {source}: {summary}")
    print(f"Kaggle: {submit_file(path, args.message)}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
