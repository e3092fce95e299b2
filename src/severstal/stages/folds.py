"""Make the multilabel stratified folds file once (fixed K and seed); every trainer reads it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import yaml

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.checks import image_names
from ..core.labels import presence_table, read_table
from ..core.splits import FOLD_COLUMNS, PRESENCE_COLUMNS, fold_counts, make_folds
from ..infra.config import Config, config_differences

CONFIG_SECTIONS = ("data", "folds")  # what a folds file depends on


def saved_config_path(folds_file: str | os.PathLike) -> Path:
    """``folds/demo_folds.csv`` -> ``folds/demo_folds.config.yaml``."""
    folds_file = Path(folds_file)
    return folds_file.with_name(f"{folds_file.stem}.config.yaml")


def load_training_labels(data_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training labels and class presence of the images in ``<data_dir>/train_images``.

    Images are listed, not opened; labels come from ``<data_dir>/train.csv``.

    Returns:
        ``(labels, presence)``: the normal label frame (``labels.read_table``) and
        ``ImageId, has_1..has_4`` for every image, sorted by name.

    Raises:
        UserError: when the folder or the CSV is missing or unreadable.
    """
    data_dir = Path(data_dir)
    names = image_names(data_dir / "train_images")
    if not names:
        raise UserError(f"no training images in {data_dir / 'train_images'}: get the data first "
                        "(severstal download, or severstal demo-data for the demo set) or pass --data DIR")
    labels_path = data_dir / "train.csv"
    if not labels_path.is_file():
        raise UserError(f"{labels_path} does not exist: the data directory must hold Kaggle's train.csv")
    try:
        labels = read_table(labels_path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {labels_path}: {error}") from None
    unknown = sorted(set(labels["ImageId"]) - set(names))
    if unknown:
        print(f"warning: {len(unknown)} image(s) in {labels_path} are not in train_images and are left out "
              f"(e.g. {unknown[0]}); severstal check-data lists them", file=sys.stderr)
    return labels, presence_table(labels, names)


def existing_folds_problem(path: Path, config: Config, presence: pd.DataFrame) -> str | None:
    """Why the folds file at ``path`` does not fit ``config`` and ``presence``; None when it does."""
    saved_path = saved_config_path(path)
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text()) or {}
        differences = config_differences(saved, config.raw, CONFIG_SECTIONS)
        if differences:
            return f"it was made with a different config ({saved_path}): " + "; ".join(differences)
    try:
        existing = pd.read_csv(path, dtype={"ImageId": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        return f"it cannot be read: {error}"
    if list(existing.columns) != FOLD_COLUMNS:
        return f"its columns are {','.join(map(str, existing.columns))}, not {','.join(FOLD_COLUMNS)}"
    folds_seen = sorted(existing["fold"].unique().tolist())
    k = config["folds"]["k"]
    if folds_seen != list(range(k)):
        return f"it has folds {folds_seen}, not 0..{k - 1}"
    repeated = existing["ImageId"][existing["ImageId"].duplicated()]
    if len(repeated):
        return f"it lists image {repeated.iloc[0]} more than once"
    old_ids, new_ids = set(existing["ImageId"]), set(presence["ImageId"])
    if old_ids != new_ids:
        return (f"it is for a different image list (the data lacks {len(old_ids - new_ids)} of its "
                f"{len(old_ids)} images; it lacks {len(new_ids - old_ids)} of the data's {len(new_ids)})")
    merged = existing.merge(presence, on="ImageId", suffixes=("", "_now"))
    changed = sum(int((merged[c] != merged[f"{c}_now"]).sum()) for c in PRESENCE_COLUMNS)
    if changed:
        return f"{changed} class labels in it differ from the data's train.csv"
    return None


def write_folds(folds: pd.DataFrame, config: Config, path: Path) -> None:
    """Write the folds CSV, then its config, each atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    folds.to_csv(temporary, index=False)
    os.replace(temporary, path)
    saved = {section: config.raw[section] for section in CONFIG_SECTIONS}
    config_path = saved_config_path(path)
    config_temporary = config_path.with_name(config_path.name + ".tmp")
    config_temporary.write_text(yaml.safe_dump(saved, sort_keys=False))
    os.replace(config_temporary, config_path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal folds", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--k", type=int, help="number of folds (default: the config's folds.k)")
    parser.add_argument("--seed", type=int, help="shuffle seed (default: the config's folds.seed)")
    parser.add_argument("--out", help="folds CSV to write (default: the config's data.folds_file)")
    parser.add_argument("--force", action="store_true", help="overwrite a folds file made differently")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.k is not None:
        config.raw["folds"]["k"] = args.k
    if args.seed is not None:
        config.raw["folds"]["seed"] = args.seed
    if args.out is not None:
        config.raw["data"]["folds_file"] = args.out
    k, seed, path = config["folds"]["k"], config["folds"]["seed"], config.folds_file
    _, presence = load_training_labels(config.data_dir)
    if path.exists() and not args.force:
        problem = existing_folds_problem(path, config, presence)
        if problem is None:
            print(f"folds: {path} is up to date ({k} folds, seed {seed}, {len(presence):,} images)")
            return 0
        raise UserError(
            f"the folds file {path} exists but {problem}.\n"
            "Models trained on it would not match new folds: "
            "re-run with --force to replace it, or write the new folds elsewhere "
            "(--out FILE, or --set data.folds_file=FILE)."
        )
    try:
        folds = make_folds(presence, k, seed)
    except ValueError as error:
        raise UserError(str(error)) from None
    write_folds(folds, config, path)
    print(f"wrote {path}: {len(folds):,} images in {k} folds (seed {seed}), "
          f"config in {saved_config_path(path)}")
    print(fold_counts(folds).to_string())
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
