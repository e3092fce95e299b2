"""Make sure the encoder weights of the config's classifier and segmenter are available, before training.

``cls.encoder_weights`` and ``seg.encoder_weights`` are ``imagenet``, ``none`` or the path of a
weights file. For ``imagenet`` the backbone's weights file is downloaded into the Keras cache
(``$KERAS_HOME/models/``, else ``~/.keras/models/``; a cached file is not downloaded again) and one
line per file shows its path and size; a path must be an existing file; ``none`` needs nothing.
Exit 0 when everything is available, 1 with what to do otherwise.

Without internet, run this where there is internet and copy the cache folder over (see
docs/encoder-weights.md). TensorFlow is imported only when ImageNet weights are asked for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import UserError
from ..infra.schema import encoder_weights_problem

KINDS = ("cls", "seg")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)  # --data too, like every stage of a run (the weights do not depend on it)
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    problems = []
    imagenet: dict[str, list[str]] = {}  # backbone -> the config keys asking for its ImageNet weights
    for kind in KINDS:
        section = config.model(kind)
        key = f"{kind}.encoder_weights"
        setting = section.encoder_weights
        problem = encoder_weights_problem(config, kind)
        if problem:
            problems.append(problem)
        elif setting == "none":
            print(f"{key}: none: nothing is needed (random initial weights)")
        elif setting == "imagenet":
            imagenet.setdefault(section.backbone if kind == "cls" else section.encoder, []).append(key)
        else:
            print(f"{key}: {setting}, {Path(setting).stat().st_size:,} bytes")
    if imagenet:
        from ..nn.models import fetch_imagenet_weights

        for backbone, keys in imagenet.items():
            try:
                path = fetch_imagenet_weights(backbone)
            except ValueError as error:
                problems.append(f"{', '.join(keys)}: {error}")
                continue
            print(f"{', '.join(keys)}: imagenet ({backbone}): {path}, {path.stat().st_size:,} bytes")
    if problems:
        raise UserError("\n".join(problems))
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
