"""The competition through the Kaggle API: download, unzip and verify the data; submit a file.

Both take an injectable client (tests pass a fake); by default the authenticated ``KaggleApi`` of
``kaggle.api``. Nothing is ever half-written: a download is staged beside its target
(``.<name>.download/``), unzipped and verified there, then moved into place; an interrupted download
resumes on the next run; a verified target (marker file ``.severstal-verified``) is a fast no-op.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core.constants import COMPETITION, NUM_TEST_IMAGES, NUM_TRAIN_IMAGES
from ..infra.errors import UserError
from ..infra.files import write_json
from ..infra.images import image_names
from ..infra.layouts import SAMPLE_SUBMISSION, TEST_IMAGES, TRAIN_IMAGES, TRAIN_LABELS
from ..infra.tables import CSV_ERRORS, read_table
from .api import call_kaggle, load_client

DOWNLOAD = "download the competition"
MARKER = ".severstal-verified"
LAYOUT = (TRAIN_LABELS, TRAIN_IMAGES, TEST_IMAGES, SAMPLE_SUBMISSION)


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
    for split, expected in ((TRAIN_IMAGES, num_train), (TEST_IMAGES, num_test)):
        if (directory / split).is_dir():
            found = len(image_names(directory / split))
            if found != expected:
                problems.append(f"{split}/ holds {found} images, expected {expected}")
    for table in (TRAIN_LABELS, SAMPLE_SUBMISSION):
        if (directory / table).is_file():
            try:
                read_table(directory / table)
            except CSV_ERRORS as error:
                problems.append(f"{table} cannot be read: {error}")
    return problems


def is_verified(directory: str | os.PathLike) -> bool:
    """True when ``directory`` carries the marker written after verification and its layout."""
    directory = Path(directory)
    return (directory / MARKER).is_file() and all((directory / name).exists() for name in LAYOUT)


def write_marker(directory: Path) -> None:
    """Record that ``directory`` passed :func:`verify_download`."""
    counts = {split: len(image_names(directory / split)) for split in (TRAIN_IMAGES, TEST_IMAGES)}
    write_json(directory / MARKER, {"competition": COMPETITION, **counts})


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
    client = load_client(DOWNLOAD) if client is None else client
    staging = target.parent / f".{target.name}.download"
    staging.mkdir(parents=True, exist_ok=True)
    print(f"downloading {competition} into {staging} (about 1.6 GB; an interrupted download resumes)")
    try:
        call_kaggle(DOWNLOAD, partial(client.competition_download_files, competition, path=str(staging),
                                    quiet=False))
    except UserError:
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when empty: a partial zip stays for the next run to resume
        raise
    archives = sorted(staging.glob("*.zip"))
    if not archives:
        raise UserError(f"cannot {DOWNLOAD}: the Kaggle client finished but left no zip file in {staging}.")
    extracted = staging / "extracted"
    shutil.rmtree(extracted, ignore_errors=True)
    try:
        for archive in archives:
            unzip(archive, extracted)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        shutil.rmtree(staging)
        raise UserError(
            f"cannot {DOWNLOAD}: the downloaded zip is truncated or corrupt ({error}); it was deleted. Run "
            "`severstal download` again to fetch it afresh."
        ) from None
    problems = verify_download(extracted, num_train, num_test)
    if problems:
        raise UserError(
            f"cannot {DOWNLOAD}: the archive does not hold the expected competition files: "
            f"{'; '.join(problems)}. The unzipped files are in {extracted} for inspection."
        )
    write_marker(extracted)
    if target.is_dir():
        target.rmdir()  # empty (checked above)
    os.replace(extracted, target)
    shutil.rmtree(staging)
    return True


SUBMIT = "submit to Kaggle"
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
    client = load_client(SUBMIT) if client is None else client
    response = call_kaggle(SUBMIT, partial(client.competition_submit, str(path), message, competition),
                           note=NOTEBOOK_NOTE)
    answer = str(getattr(response, "message", response) or "").strip()
    if answer == UPLOAD_FAILED:
        raise UserError(f"cannot {SUBMIT}: uploading {path} failed ({answer}); run the same command again.")
    return answer or "submitted (Kaggle sent no message)"
