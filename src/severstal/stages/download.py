"""Fetch the competition data with the Kaggle API, unzip it in Kaggle's layout and verify it.

``severstal download`` downloads into a staging folder next to the target
(``.<name>.download/``), unzips and verifies there, then moves the verified folder into place:
the target never holds half a download. An interrupted download resumes on the next run; a
verified target (marker file ``.severstal-verified``) makes the command a fast no-op.
``severstal download --credentials-only`` prints ``yes`` or ``no`` (exit 0 / 1) and does nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.checks import image_names
from ..core.constants import COMPETITION, NUM_TEST_IMAGES, NUM_TRAIN_IMAGES
from ..core.labels import read_table
from ..kaggle.api import call_kaggle, credential_sources, load_client

ACTION = "download the competition"
MARKER = ".severstal-verified"
LAYOUT = ("train.csv", "train_images", "test_images", "sample_submission.csv")


def verify_download(directory: str | os.PathLike, num_train: int = NUM_TRAIN_IMAGES,
                    num_test: int = NUM_TEST_IMAGES) -> list[str]:
    """Check that ``directory`` holds the complete competition in Kaggle's layout.

    Args:
        directory: the unzipped competition.
        num_train: expected number of images in ``train_images/``.
        num_test: expected number of images in ``test_images/``.

    Returns:
        Problems (empty when complete): missing entries, wrong image counts, unreadable CSVs.
    """
    directory = Path(directory)
    problems = [f"{name} is missing" for name in LAYOUT if not (directory / name).exists()]
    for split, expected in (("train_images", num_train), ("test_images", num_test)):
        if (directory / split).is_dir():
            found = len(image_names(directory / split))
            if found != expected:
                problems.append(f"{split}/ holds {found} images, expected {expected}")
    for table in ("train.csv", "sample_submission.csv"):
        if (directory / table).is_file():
            try:
                read_table(directory / table)
            except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
                problems.append(f"{table} cannot be read: {error}")
    return problems


def is_verified(directory: str | os.PathLike) -> bool:
    """True when ``directory`` carries the marker written after verification and its layout."""
    directory = Path(directory)
    return (directory / MARKER).is_file() and all((directory / name).exists() for name in LAYOUT)


def write_marker(directory: Path) -> None:
    """Record that ``directory`` passed :func:`verify_download`."""
    counts = {split: len(image_names(directory / split)) for split in ("train_images", "test_images")}
    (directory / MARKER).write_text(json.dumps({"competition": COMPETITION, **counts}) + "\n")


def unzip(archive: Path, destination: Path) -> None:
    """Extract ``archive`` into ``destination`` with a progress bar; zips found at its top level are
    extracted in place too (Kaggle sometimes ships ``train.csv.zip`` inside the competition zip).

    Raises:
        zipfile.BadZipFile, EOFError, zlib.error: for a truncated or corrupt archive.
    """
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        with tqdm(total=sum(m.file_size for m in members), unit="B", unit_scale=True,
                  desc=f"unzip {archive.name}") as progress:
            for member in members:
                bundle.extract(member, destination)
                progress.update(member.file_size)
    for member in members:
        if "/" not in member.filename and member.filename.lower().endswith(".zip"):
            unzip(destination / member.filename, destination)
            (destination / member.filename).unlink()


def download_competition(target: str | os.PathLike, client: Any = None, num_train: int = NUM_TRAIN_IMAGES,
                         num_test: int = NUM_TEST_IMAGES, competition: str = COMPETITION) -> bool:
    """Download, unzip and verify the competition into ``target`` (nothing half-written).

    Args:
        target: the data directory to create, e.g. ``data/severstal-steel-defect-detection``.
        client: an object with ``competition_download_files(competition, path=..., quiet=...)``
            that writes ``<competition>.zip`` into ``path``; default: the authenticated Kaggle API.
        num_train: expected train images (the official count unless testing).
        num_test: expected test images.
        competition: the Kaggle competition slug.

    Returns:
        True when it downloaded; False when verified data was already there.

    Raises:
        UserError: no credentials, HTTP 403 (rules not accepted), network failure, a corrupt
            zip, an unexpected archive content, or a non-empty target that is not the competition.
    """
    target = Path(target)
    if is_verified(target):
        return False
    if target.is_dir() and any(target.iterdir()):
        problems = verify_download(target, num_train, num_test)
        if not problems:  # e.g. unzipped by hand from the competition page
            write_marker(target)
            return False
        raise UserError(
            f"{target} exists but is not a complete copy of the competition ({'; '.join(problems[:5])}). "
            "Move it away or delete it, then run `severstal download` again."
        )
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a directory; move it away, then run again.")
    client = load_client(ACTION) if client is None else client
    staging = target.parent / f".{target.name}.download"
    staging.mkdir(parents=True, exist_ok=True)
    print(f"downloading {competition} into {staging} (about 1.6 GB; an interrupted download resumes)")
    try:
        call_kaggle(ACTION, partial(client.competition_download_files, competition, path=str(staging),
                                    quiet=False))
    except UserError:
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when empty: a partial zip stays for the next run to resume
        raise
    archives = sorted(staging.glob("*.zip"))
    if not archives:
        raise UserError(f"cannot {ACTION}: the Kaggle client finished but left no zip file in {staging}.")
    extracted = staging / "extracted"
    shutil.rmtree(extracted, ignore_errors=True)
    try:
        for archive in archives:
            unzip(archive, extracted)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        shutil.rmtree(staging)
        raise UserError(
            f"cannot {ACTION}: the downloaded zip is truncated or corrupt ({error}); it was deleted. Run "
            "`severstal download` again to fetch it afresh."
        ) from None
    problems = verify_download(extracted, num_train, num_test)
    if problems:
        raise UserError(
            f"cannot {ACTION}: the archive does not hold the expected competition files: "
            f"{'; '.join(problems)}. The unzipped files are in {extracted} for inspection."
        )
    write_marker(extracted)
    if target.is_dir():
        target.rmdir()  # empty (checked above)
    os.replace(extracted, target)
    shutil.rmtree(staging)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, data=False)
    parser.add_argument("--out", default=None, help="target directory (default: the config's data.dir)")
    parser.add_argument("--credentials-only", action="store_true",
                        help="only say whether Kaggle credentials are available: print yes/no, exit 0/1")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.credentials_only:
        available = bool(credential_sources())
        print("yes" if available else "no")
        return 0 if available else 1
    target = Path(args.out) if args.out else config_from_args(args).data_dir
    if download_competition(target):
        print(f"downloaded and verified {COMPETITION} in {target}")
    else:
        print(f"{target} already holds the verified competition data; nothing to do")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
