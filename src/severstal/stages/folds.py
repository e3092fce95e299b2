"""Make the multilabel stratified folds file once (fixed K and seed); every trainer reads it.

The file ``<data.folds_file>`` (``ImageId, fold, has_1..has_4``) is written with the config that
made it beside it (``<stem>.config.yaml``). A file made with the same ``folds.k`` and
``folds.seed`` for the same images and labels is kept; changed images or labels make it again
(naming what changed; trained folds then see a new folds file and train again); another K or seed
stops with the differences unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from ..core.splits import fold_counts, make_folds, presence_columns_of
from ..infra import locks
from ..infra.artifacts import FOLDS_KEYS, LOCKS, Paths, read_saved_config
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.config import select
from ..infra.data import training_set
from ..infra.errors import UserError
from ..infra.files import text_sha256, write_atomically
from ..infra.stamps import Action, Stamp, decide

INPUT = "the training images and labels"


def presence_digest(presence: pd.DataFrame) -> str:
    """A fingerprint of the image list and its class presence (what a folds file splits)."""
    table = presence[["ImageId", *presence_columns_of(presence)]].sort_values("ImageId")
    return f"sha256:{text_sha256(table.to_csv(index=False))}"


def existing_presence(path) -> pd.DataFrame | None:
    """The image list and presence recorded in an existing folds file (None when it cannot be read)."""
    try:
        existing = pd.read_csv(path, dtype={"ImageId": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    if "ImageId" not in existing.columns or not presence_columns_of(existing):
        return None
    return existing


def describe_change(existing: pd.DataFrame, presence: pd.DataFrame) -> str:
    """What differs between a folds file's images and labels and the data's, in a few words."""
    old_ids, new_ids = set(existing["ImageId"]), set(presence["ImageId"])
    if old_ids != new_ids:
        return (f"the data lack {len(old_ids - new_ids):,} of its {len(old_ids):,} images and it lacks "
                f"{len(new_ids - old_ids):,} of the data's {len(new_ids):,}")
    merged = existing.merge(presence, on="ImageId", suffixes=("", "_now"))
    columns = [c for c in presence_columns_of(presence) if c in existing.columns]
    changed = sum(int((merged[c] != merged[f"{c}_now"]).sum()) for c in columns)
    return f"{changed:,} class labels differ from the data's train.csv" if changed else "its class columns differ"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal folds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--k", type=int, help="number of folds (default: the config's folds.k)")
    parser.add_argument("--seed", type=int, help="shuffle seed (default: the config's folds.seed)")
    parser.add_argument("--out", help="folds CSV to write (default: the config's data.folds_file)")
    parser.add_argument("--force", action="store_true", help="overwrite a folds file made with another K or seed")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, {"folds.k": ("--k", args.k), "folds.seed": ("--seed", args.seed),
                                     "data.folds_file": ("--out", args.out)})
    paths = Paths(config)
    path = paths.folds_file
    k, seed = config.folds.k, config.folds.seed
    with locks.hold(path.parent / LOCKS, path.stem, f"the folds file {path}"):
        _, presence = training_set(paths)
        current = Stamp.of(config, FOLDS_KEYS, {INPUT: presence_digest(presence)})
        existing = existing_presence(path) if path.is_file() else None
        previous = None
        if existing is not None:
            saved = read_saved_config(paths.folds_config)
            made_with = select(saved, FOLDS_KEYS) if saved else {  # without its config: K from the file itself
                "folds.k": int(existing["fold"].nunique()) if "fold" in existing else None, "folds.seed": seed}
            previous = Stamp(FOLDS_KEYS, made_with, {INPUT: presence_digest(existing)})
        decision = decide(f"the folds file {path}", previous, current, args.force, (
            "Models trained on it would not match new folds: re-run with --force to replace it, or write the new "
            "folds elsewhere (--out FILE, or --set data.folds_file=FILE)"))
        if decision.action is Action.SKIP:
            print(f"folds: {path} is up to date ({k} folds, seed {seed}, {len(presence):,} images)")
            return 0
        if decision.action is Action.REDO and INPUT in decision.note:
            print(f"folds: {path}: {describe_change(existing, presence)}: making the folds again (trained folds "
                  "will train again on them)")
        elif decision.note:
            print(decision.note)
        try:
            folds = make_folds(presence, k, seed)
        except ValueError as error:
            raise UserError(str(error)) from None
        write_atomically(path, folds.to_csv(index=False))
        write_atomically(paths.folds_config, config.to_yaml())
    print(f"wrote {path}: {len(folds):,} images in {k} folds (seed {seed}), config in {paths.folds_config}")
    print(fold_counts(folds).to_string())
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
