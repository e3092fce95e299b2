"""Join the parts written by ``severstal predict --shard i/n`` into one validated submission.csv.

Reads ``submissions/<experiment>/shards/part-*-of-N.csv``: every part 1..N must be there, made from
the same config, thresholds, weights and image list (their ``.meta.json`` sidecars say so), in one
layout, with no image in two parts. The CSV is byte for byte what one unsharded ``severstal predict``
writes; the merge also writes its sidecar (so predict then finds it up to date) and, when every part
scored the test truth, the ablation report (``reports/<experiment>/ablation.json``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.checks import image_names
from ..core.ensemble import merge_shards
from ..core.labels import detect_layout, normalise
from ..core.submission import read_submission
from .predict import (
    format_ablation,
    shard_ablation_path,
    shards_dir,
    sidecar_path,
    text_sha256,
    write_ablation,
    write_atomically,
    write_submission,
)

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


def read_sidecars(parts: dict[int, Path], count: int) -> dict:
    """The common fingerprint of the parts (UserError when a sidecar is missing or they differ)."""
    fingerprints = {}
    for index, path in sorted(parts.items()):
        try:
            saved = json.loads(sidecar_path(path).read_text())
        except (OSError, ValueError):
            raise UserError(f"{sidecar_path(path)} is missing or unreadable: re-run "
                            f"`severstal predict --shard {index}/{count} --force`") from None
        if saved.get("shard") != f"{index}/{count}":
            raise UserError(f"{path} was made as shard {saved.get('shard')}, not {index}/{count}: re-run it")
        fingerprints[index] = saved["fingerprint"]
    first = fingerprints[min(fingerprints)]
    differ = [index for index, value in fingerprints.items() if value != first]
    if differ:
        raise UserError(f"shard(s) {differ} were made from another config, thresholds, weights or image list than "
                        f"shard {min(fingerprints)}: re-run them with --force")
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
    directory = shards_dir(config)
    parts, count = find_parts(directory)
    missing = [index for index in range(1, count + 1) if index not in parts]
    if missing:
        raise UserError(f"shard part(s) {missing} of {count} are missing in {directory}: run "
                        f"`severstal predict --shard I/{count}` for them")
    fingerprint = read_sidecars(parts, count)
    images_dir = Path(args.images) if args.images else config.data_dir / "test_images"
    expected = image_names(images_dir)
    if fingerprint["images"]["names_sha256"] != text_sha256("\n".join(expected)):
        raise UserError(f"the parts were predicted from {fingerprint['images']['count']:,} images of "
                        f"{fingerprint['images']['dir']}, which differ from the {len(expected):,} images of "
                        f"{images_dir}: give --images for the folder they were made from, or re-run the shards")
    frames, layouts = {}, set()
    for index, path in parts.items():
        try:
            raw = read_submission(path)
            layouts.add(detect_layout(raw.columns))
            frames[index] = normalise(raw)
        except ValueError as error:
            raise UserError(f"cannot read {path}: {error}") from None
    if len(layouts) > 1:
        raise UserError(f"the parts in {directory} mix the long and legacy layouts: re-run them with one --format")
    try:
        merged = merge_shards(frames, count)
    except ValueError as error:
        raise UserError(f"cannot merge the parts in {directory}: {error}") from None
    target = config.submission_path
    sidecar_path(target).unlink(missing_ok=True)
    write_submission(target, merged, layouts.pop(), expected)

    ablation_parts = [shard_ablation_path(config, (index, count)) for index in range(1, count + 1)]
    present = [path for path in ablation_parts if path.is_file()]
    if present and len(present) == len(ablation_parts):
        pairs = pd.concat([pd.read_csv(path, dtype={"ImageId": str}, keep_default_na=False) for path in present],
                          ignore_index=True).sort_values(["ImageId", "ClassId"], kind="stable")
        document = write_ablation(config, pairs.reset_index(drop=True), target)
        print(format_ablation(pairs) + f"\n  written to {document}")
    elif present:
        print(f"warning: only {len(present)} of {count} shards have ablation pairs: no ablation.json written",
              file=sys.stderr)
    write_atomically(sidecar_path(target), json.dumps({
        "fingerprint": fingerprint, "shard": None, "images": len(merged["ImageId"].unique()),
        "merged_from": [str(parts[index]) for index in sorted(parts)],
    }, indent=2) + "\n")
    print(f"merged {count} part(s) into {target}: {merged['ImageId'].nunique():,} images, {len(merged):,} rows; valid")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
