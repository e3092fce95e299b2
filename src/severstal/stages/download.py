"""Fetch the competition data with the Kaggle API, unzip it in Kaggle's layout and verify it (``kaggle.competition``).

``severstal download`` downloads into a staging folder next to the target
(``.<name>.download/``), unzips and verifies there, then moves the verified folder into place:
the target never holds half a download. An interrupted download resumes on the next run; a
verified target (marker file ``.severstal-verified``) makes the command a fast no-op.
``severstal download --credentials-only`` prints ``yes`` or ``no`` (exit 0 / 1) and does nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.constants import COMPETITION
from ..infra import locks
from ..infra.artifacts import LOCKS
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.config import DEFAULT_CONFIG
from ..kaggle.api import credential_sources
from ..kaggle.competition import download_competition


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, data=False, config=DEFAULT_CONFIG)  # the real recipe's data folder
    parser.add_argument("--out", default=None, help="target directory (default: the config's data.dir)")
    parser.add_argument("--credentials-only", action="store_true",
                        help="only say whether Kaggle credentials are available: print yes/no, exit 0/1")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.credentials_only:
        available = bool(credential_sources())
        print("yes" if available else "no")
        return 0 if available else 1
    target = Path(args.out) if args.out else Path(config_from_args(args, announce=False).data.dir)
    with locks.hold(target.parent / LOCKS, target.name, f"the data directory {target}"):
        downloaded = download_competition(target)
    if downloaded:
        print(f"downloaded and verified {COMPETITION} in {target}")
    else:
        print(f"{target} already holds the verified competition data; nothing to do")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
