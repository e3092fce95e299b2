"""What every stage's command line shares: the config options, and turning errors into one message.

A stage's ``main(argv)`` is ``run_main(build_parser(), run, argv)``: a :class:`UserError` (bad
config, missing input, locked target) and an ``OSError`` (disk full, permission denied) become one
paragraph on stderr and a non-zero exit code, never a traceback. ``SEVERSTAL_TRACEBACK=1`` shows
the traceback of an ``OSError`` as well, for debugging.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from .config import DEFAULT_CONFIG, DEMO_CONFIG, Config, chosen_config, load_config
from .errors import UserError
from .layouts import LayoutError, detect_layout


def add_config_arguments(parser: argparse.ArgumentParser, data: bool = True, config: str | None = None) -> None:
    """Add the options every config-driven stage takes: --config, --set, --experiment (and --data).

    Args:
        config: the stage's default config; None: the one run_all.sh chooses (``infra.config.chosen_config``).
    """
    parser.add_argument("--config", default=config,
                        help=f"experiment config (default: {config})" if config else
                        f"experiment config (default: the one run_all.sh chooses: {DEFAULT_CONFIG}, or {DEMO_CONFIG} "
                        "for the demo data or --data DIR)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set seg.epochs=3",
    )
    parser.add_argument("--experiment", default=None, help="experiment name (default: from the config)")
    if data:
        parser.add_argument("--data", default=None, help="data directory in Kaggle's layout (default: the config's)")


def config_from_args(args: argparse.Namespace, options: Mapping[str, tuple[str, object]] | None = None,
                     announce: bool = True) -> Config:
    """The validated config of the standard options, with a stage's own options applied after ``--set``.

    Args:
        args: the parsed command line.
        options: ``{config key: (option name, value)}`` for options that set config keys, e.g.
            ``{"inference.tta": ("--tta", "none,hflip")}``; None values are left out. They are
            checked by the schema like ``--set`` values, and messages name the option.
        announce: print the data line (:func:`data_line`) first, as every stage's first line of output.
    """
    extra = [(f"{key}={value}", f"{option} {value}: ") for key, (option, value) in (options or {}).items()
             if value is not None]
    path, why = (args.config, None) if args.config is not None else chosen_config(getattr(args, "data", None))
    config = load_config(path, [*args.overrides, *extra], getattr(args, "data", None), args.experiment)
    if why:
        print(f"config: {path} ({why}; --config chooses another)", flush=True,
              file=sys.stdout if announce else sys.stderr)
    line = data_line(config) if announce else None
    if line:
        print(line, flush=True)
    return config


def data_line(config: Config) -> str | None:
    """``data: DIR (layout masks: 3 classes scratch, dent, stain; images 192 x 320)``: the first line of a stage
    that reads the data; None when the data directory is not there (yet) or in no layout."""
    try:
        layout = detect_layout(config.data.dir)
    except LayoutError:
        return None
    names = ", ".join(config.data.classes or ())
    height, width = config.data.shape
    return (f"data: {config.data.dir} (layout {layout}: {config.data.num_classes} classes {names}; images "
            f"{height} x {width})")


def add_inference_options(parser: argparse.ArgumentParser, flips: Sequence[str], batch_size: bool = True) -> None:
    """``--folds``, ``--tta`` and (unless ``batch_size`` is false) ``--batch-size``: a run's own ``inference.*`` (see
    :func:`inference_options`)."""
    parser.add_argument("--folds", default=None, help="folds to ensemble: all or e.g. 0,1 (default: inference.folds)")
    parser.add_argument("--tta", default=None,
                        help=f"flips to average, from {','.join(flips)} (default: inference.tta)")
    if batch_size:
        parser.add_argument("--batch-size", type=int, default=None,
                            help="images per batch (default: inference.batch_size)")


def inference_options(args: argparse.Namespace) -> dict[str, tuple[str, object]]:
    """The config keys the options of :func:`add_inference_options` set, for :func:`config_from_args`."""
    return {"inference.folds": ("--folds", args.folds), "inference.tta": ("--tta", args.tta),
            "inference.batch_size": ("--batch-size", getattr(args, "batch_size", None))}


def os_error_message(error: OSError) -> str:
    """One paragraph for a failed file operation: the file, the reason and what to do."""
    where = error.filename or "a file"
    if error.filename2:
        where = f"{error.filename} -> {error.filename2}"
    reason = error.strerror or str(error)
    advice = {
        errno.ENOSPC: "free some disk space",
        errno.EDQUOT: "free some disk space (the quota is reached)",
        errno.EACCES: "check the permissions of the file and its folder",
        errno.EPERM: "check the permissions of the file and its folder",
        errno.EROFS: "the file system is read-only: use another folder",
        errno.ENOENT: "check that it exists",
    }.get(error.errno, "check the file and its folder")
    return (f"{where}: {reason}. Nothing was half-written (files are replaced atomically); {advice}, "
            "then run the same command again.")


def run_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and call ``run``; turn user and file-system errors into one message and an exit code."""
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # the output was piped into a command that stopped reading (head)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the interpreter flushes it at exit)
        return 1
    except OSError as error:
        if os.environ.get("SEVERSTAL_TRACEBACK"):
            raise
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
