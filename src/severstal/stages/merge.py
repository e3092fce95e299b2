"""Join the parts written by ``severstal predict --shard i/n`` into one validated submission.csv.

Reads ``submissions/<experiment>/shards/part-*-of-N.csv``: every part 1..N must be there, made from
the same config, thresholds, weights and image list (their ``.meta.json`` sidecars say so), in one
layout, with no image in two parts. The CSV is byte for byte what one unsharded ``severstal predict``
writes; the merge also writes its sidecar (so predict then finds it up to date) and, when every part
scored the test truth, the ablation report (``reports/<experiment>/ablation.json``).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..core.ensemble import ablation_text, merge_shards
from ..core.labels import detect_layout, normalise
from ..infra import locks
from ..infra.artifacts import LOCKS, Paths, sidecar_path
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.errors import UserError
from ..infra.files import write_json
from ..infra.images import image_names
from ..infra.stamps import Stamp, read_sidecar, same_image_names
from ..infra.tables import read_csv_text, write_ablation, write_submission

PART_PATTERN = re.compile(r"part-(\d+)-of-(\d+)\.csv")


def find_parts(directory: Path) -> tuple[dict[int, Path], int]:
    """The shard files in ``directory`` by index, and their common count N.

    Raises:
        UserError: no parts, or parts of different counts.
    """
    found: dict[int, dict[int, Path]] = {}
    for path in sorted(directory.glob("part-*-of-*.csv")):
        match = PART_PATTERN.fullmatch(path.name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
    if not found:
        raise UserError(f"no shard parts (part-I-of-N.csv) in {directory}: run `severstal predict --shard I/N` "
                        "for every I first")
    if len(found) > 1:
        listing = ", ".join(f"{len(parts)} part(s) of {count}" for count, parts in sorted(found.items()))
        raise UserError(f"{directory} holds parts of different splits ({listing}): delete the stale ones")
    count, parts = next(iter(found.items()))
    return parts, count


def read_sidecars(parts: dict[int, Path], count: int) -> Stamp:
    """The common stamp of the parts (UserError when a sidecar is missing or they differ)."""
    stamps = {}
    for index, path in sorted(parts.items()):
        saved = read_sidecar(sidecar_path(path))
        if saved is None or saved["stamp"] is None:
            raise UserError(f"{sidecar_path(path)} is missing or unreadable: re-run "
                            f"`severstal predict --shard {index}/{count} --force`")
        if saved.get("shard") != f"{index}/{count}":
            raise UserError(f"{path} was made as shard {saved.get('shard')}, not {index}/{count}: re-run it")
        stamps[index] = saved["stamp"]
    first = stamps[min(stamps)]
    differ = [index for index, value in stamps.items() if value != first]
    if differ:
        raise UserError(f"shard(s) {differ} were made from another config, thresholds, weights or image list than "
                        f"shard {min(stamps)}: re-run them with --force")
    return first


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal merge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--images", default=None,
                        help="folder of the predicted images (default: <data>/test_images); must match the parts'")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    parts, count = find_parts(paths.shards)
    missing = [index for index in range(1, count + 1) if index not in parts]
    if missing:
        raise UserError(f"shard part(s) {missing} of {count} are missing in {paths.shards}: run "
                        f"`severstal predict --shard I/{count}` for them")
    stamp = read_sidecars(parts, count)
    images_dir = Path(args.images) if args.images else paths.test_images
    expected = image_names(images_dir)
    recorded = stamp.inputs.get("images", "")
    if not same_image_names(recorded, expected):
        raise UserError(f"the parts were predicted from other images ({recorded.rsplit(' sha256', 1)[0]}), which "
                        f"differ from the {len(expected):,} images of {images_dir}: give --images for the folder they "
                        "were made from, or re-run the shards")
    frames, layouts = {}, set()
    for index, path in parts.items():
        try:
            raw = read_csv_text(path)
            layouts.add(detect_layout(raw.columns))
            frames[index] = normalise(raw)
        except ValueError as error:
            raise UserError(f"cannot read {path}: {error}") from None
    if len(layouts) > 1:
        raise UserError(f"the parts in {paths.shards} mix the long and legacy layouts: re-run them with one --format")
    try:
        merged = merge_shards(frames, count)
    except ValueError as error:
        raise UserError(f"cannot merge the parts in {paths.shards}: {error}") from None
    target = paths.submission
    with locks.hold(paths.submissions / LOCKS, "submission", f"the submission {target}"):
        sidecar_path(target).unlink(missing_ok=True)
        write_submission(target, merged, layouts.pop(), expected)
        ablation_parts = [paths.shard_ablation(index, count) for index in range(1, count + 1)]
        present = [path for path in ablation_parts if path.is_file()]
        if present and len(present) == len(ablation_parts):
            pairs = pd.concat([pd.read_csv(path, dtype={"ImageId": str}, keep_default_na=False) for path in present],
                              ignore_index=True).sort_values(["ImageId", "ClassId"], kind="stable")
            document = write_ablation(paths, pairs.reset_index(drop=True), target)
            print(ablation_text(pairs) + f"\n  written to {document}")
        elif present:
            print(f"warning: only {len(present)} of {count} shards have ablation pairs: no ablation.json written",
                  file=sys.stderr)
        write_json(sidecar_path(target), {
            "stamp": stamp.to_dict(), "shard": None, "images": len(merged["ImageId"].unique()),
            "merged_from": [str(parts[index]) for index in sorted(parts)],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        })
    print(f"merged {count} part(s) into {target}: {merged['ImageId'].nunique():,} images, {len(merged):,} rows; valid")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
