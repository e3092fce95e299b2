"""Label and submission CSV files: reading either Kaggle layout, and writing a submission that is always valid.

Labels (``train.csv``, ``test_labels.csv``) and submissions come in the current long layout or the
2019 ``ImageId_ClassId`` layout; everything is read as text and normalised by ``core.labels``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..core.constants import CLASS_IDS
from ..core.ensemble import ablation_document, submission_csv
from ..core.labels import normalise
from ..core.submission import check_submission
from .artifacts import SAMPLE_SUBMISSION, TEST_IMAGES, Paths
from .errors import UserError, format_problems
from .files import atomic_path, content_sha256, write_atomically, write_json
from .images import image_names

CSV_ERRORS = (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError)


def read_csv_text(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV file as text (no NaN conversion).

    Raises:
        ValueError: when the file is empty or not a readable CSV, saying why.
    """
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty (not even a header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable CSV file: {error}") from None


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A label or submission CSV of either layout in the normal form (``ValueError`` when malformed)."""
    return normalise(read_csv_text(path))


def read_labels(path: str | os.PathLike, what: str = "labels") -> pd.DataFrame:
    """A label file (either layout) in the normal form; UserError when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    try:
        return read_table(path)
    except CSV_ERRORS as error:
        raise UserError(f"cannot read the {what} file {path}: {error}") from None


def read_checked_submission(path: str | os.PathLike) -> pd.DataFrame:
    """A submission (either layout), checked as Kaggle would, in the normal form; UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"submission {path} does not exist")
    try:
        raw = read_csv_text(path)
    except ValueError as error:
        raise UserError(f"cannot read the submission: {error}") from None
    problems = check_submission(raw, None)
    if problems:
        raise UserError(f"submission {path} is malformed ({len(problems):,} problem(s); severstal validate checks it "
                        f"fully):\n{format_problems(problems)}")
    return normalise(raw)


def write_submission(path: Path, frame: pd.DataFrame, layout: str, expected_ids: Sequence[str] | None) -> None:
    """Write a normal frame as a submission: temporary file, validator, then rename (never half-written).

    Raises:
        UserError: when the validator finds problems (the old file, if any, is left as it was).
    """
    with atomic_path(path) as temporary:
        temporary.write_text(submission_csv(frame, layout))
        problems = check_submission(read_csv_text(temporary), expected_ids)
        if problems:
            raise UserError(f"the submission made for {path} failed validation ({len(problems):,} problems); "
                            f"nothing was written:\n{format_problems(problems)}")


def sample_submission_ids(path: str | os.PathLike) -> list[str]:
    """The distinct ImageIds of a sample submission (either layout), in file order."""
    try:
        frame = read_table(path)
    except CSV_ERRORS as error:
        raise UserError(f"cannot read the test image list from {path}: {error}") from None
    return list(dict.fromkeys(frame["ImageId"]))


def expected_test_ids(images: str | os.PathLike | None = None, sample_submission: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """The test image names a submission must cover, and where they came from.

    Args:
        images: a folder of test images (names only are read).
        sample_submission: a sample submission CSV.
        data_dir: used when neither is given: its ``test_images/``, else its ``sample_submission.csv``.

    Returns:
        ``(image names, description of the source)``.

    Raises:
        UserError: when the source is missing or empty.
    """
    if images is None and sample_submission is None:
        if data_dir is None:
            raise UserError("give --images DIR or --sample-submission CSV to say which test images to expect")
        data_dir = Path(data_dir)
        if image_names(data_dir / TEST_IMAGES):
            images = data_dir / TEST_IMAGES
        elif (data_dir / SAMPLE_SUBMISSION).is_file():
            sample_submission = data_dir / SAMPLE_SUBMISSION
        else:
            raise UserError(f"{data_dir} has neither {TEST_IMAGES}/ nor {SAMPLE_SUBMISSION}: pass "
                            "--images DIR or --sample-submission CSV (or --data DIR)")
    if images is not None:
        names = image_names(images)
        if not names:
            raise UserError(f"{images} is missing or holds no images")
        return names, f"{images}/"
    names = sample_submission_ids(sample_submission)
    if not names:
        raise UserError(f"{sample_submission} lists no images")
    return names, str(sample_submission)


def submission_summary(frame: pd.DataFrame, class_ids: Iterable[int] = CLASS_IDS) -> str:
    """``"22,024 rows, 5,506 images, 1,234 non-empty masks (class 1: 10, ...)"`` of a normal frame."""
    class_ids = tuple(class_ids)
    masks = frame[(frame["EncodedPixels"] != "") & frame["ClassId"].isin(class_ids)]
    counts = masks["ClassId"].value_counts()
    per_class = ", ".join(f"{class_id}: {int(counts.get(class_id, 0)):,}" for class_id in class_ids)
    return (f"{len(frame):,} rows, {frame['ImageId'].nunique():,} images, "
            f"{len(masks):,} non-empty masks (class {per_class})")


def validate_submission(path: str | os.PathLike, expected_ids: Sequence[str]) -> tuple[list[str], str | None]:
    """Read and check a submission file.

    Returns:
        ``(problems, summary)``; the summary is None when there are problems.

    Raises:
        UserError: when the file does not exist.
    """
    if not Path(path).is_file():
        raise UserError(f"submission {path} does not exist: run `severstal predict` first or give its path")
    try:
        raw = read_csv_text(path)
    except ValueError as error:
        return [str(error)], None
    problems = check_submission(raw, expected_ids)
    return problems, None if problems else submission_summary(normalise(raw))


LABEL_COLUMNS = ("image", "label")  # then p_<class name> per class


def labels_csv(image_ids: Sequence[str], labels: Sequence[str], probabilities, names: Sequence[str]) -> str:
    """The text of the folders layout's ``labels.csv``: ``image, label, p_<class>...`` (probabilities to 6 places)."""
    frame = pd.DataFrame({"image": list(image_ids), "label": list(labels)})
    for index, name in enumerate(names):
        frame[f"p_{name}"] = [float(row[index]) for row in probabilities]
    return frame.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def read_predicted_labels(path: str | os.PathLike, names: Sequence[str]) -> pd.DataFrame:
    """A ``labels.csv`` written by predict; UserError when missing or not of these classes."""
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist: run severstal predict first")
    try:
        frame = pd.read_csv(path, dtype={"image": str, "label": str}, keep_default_na=False)
    except CSV_ERRORS as error:
        raise UserError(f"cannot read {path} ({error}): run severstal predict --force") from None
    expected = [*LABEL_COLUMNS, *(f"p_{name}" for name in names)]
    if list(frame.columns) != expected or not frame["label"].isin(names).all():
        raise UserError(f"{path} must have the columns {','.join(expected)} and labels among {', '.join(names)}: "
                        "run severstal predict --force")
    return frame


def write_ablation(paths: Paths, pairs: pd.DataFrame, submission: Path) -> Path:
    """Write ``ablation_pairs.csv`` and ``ablation.json`` (``core.ensemble.ablation_document``) for a whole
    submission into the experiment's reports; returns the json's path.

    Args:
        paths: the experiment's paths.
        pairs: the per-(image, class) frame with every variant, ``final`` included.
        submission: the submission file (or label-map folder) the ablation belongs to.
    """
    write_atomically(paths.ablation_pairs, pairs.to_csv(index=False, float_format="%.8f", lineterminator="\n"))
    document = ablation_document(pairs, paths.config.experiment_name, str(submission), content_sha256(submission),
                                 str(paths.ablation_pairs), datetime.now(UTC).isoformat(timespec="seconds"))
    write_json(paths.ablation, document)
    return paths.ablation
