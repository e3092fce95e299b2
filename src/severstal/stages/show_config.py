"""Print the resolved config: the schema's defaults, the config file(s) and ``--set`` overrides, checked.

Every key is printed with its value and, as a comment, its meaning (``infra.schema`` holds each key's
type, range and default). Copy lines from it into your own config (``inherit: default.yaml``).
"""

from __future__ import annotations

import argparse
import sys

from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.config import commented_yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal config", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    print(commented_yaml(config_from_args(args, announce=False)), end="")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
