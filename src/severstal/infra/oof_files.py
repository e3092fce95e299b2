"""Out-of-fold statistics files (``oof.npz``): written atomically, read back checked, with their stamp.

The arrays are those of ``core.oofstats`` (format in docs/oof-format.md); a JSON ``stamp`` entry
records what made them (``infra.stamps.Stamp``: the TTA and grid, the weights' fingerprint) and a
``precision`` entry the Keras policy the predictions were computed in (``float32`` or
``mixed_float16``), which ``tune`` records and ``predict`` must match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.oofstats import classifier_arrays, classifier_from_arrays, segmentation_arrays, segmentation_from_arrays
from .files import atomic_path
from .stamps import Stamp

STAMP_KEY = "stamp"
PRECISION_KEY = "precision"


def write_oof(path: str | os.PathLike, arrays: dict[str, np.ndarray], stamp: Stamp | None = None,
              precision: str | None = None) -> Path:
    """Write OOF arrays, their stamp and precision at exactly ``path`` (np.savez would append ``.npz`` to a name)."""
    path = Path(path)
    extra = {} if stamp is None else {STAMP_KEY: np.array(json.dumps(stamp.to_dict()))}
    if precision is not None:
        extra[PRECISION_KEY] = np.array(precision)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays, **extra)
    return path


def save_segmentation_oof(path: str | os.PathLike, image_ids: Sequence[str], fold: int, stats: dict[str, np.ndarray],
                          pixel_thresholds: Sequence[float], min_component_sizes: Sequence[int],
                          stamp: Stamp | None = None, precision: str | None = None) -> Path:
    """Write one fold's segmentation statistics (``core.oofstats.segmentation_arrays``)."""
    return write_oof(path, segmentation_arrays(image_ids, fold, stats, pixel_thresholds, min_component_sizes), stamp,
                     precision)


def save_classifier_oof(path: str | os.PathLike, image_ids: Sequence[str], fold: int, probabilities: np.ndarray,
                        stamp: Stamp | None = None, precision: str | None = None) -> Path:
    """Write one fold's classifier probabilities (``core.oofstats.classifier_arrays``)."""
    return write_oof(path, classifier_arrays(image_ids, fold, probabilities), stamp, precision)


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an OOF file (ValueError when it is not a readable .npz)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable OOF statistics file: {error}") from None


def _load(path: str | os.PathLike, convert) -> dict:
    arrays = read_arrays(path)
    try:
        content = convert(arrays)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    precision = str(arrays[PRECISION_KEY]) if PRECISION_KEY in arrays else None
    return content | {"stamp": stamp_of(arrays), "precision": precision}


def load_segmentation_oof(path: str | os.PathLike) -> dict:
    """A checked segmentation OOF file (``core.oofstats.segmentation_from_arrays``), ``"stamp"`` and ``"precision"``.

    Raises:
        ValueError: unreadable, another kind, another format version, or malformed; naming the file.
    """
    return _load(path, segmentation_from_arrays)


def load_classifier_oof(path: str | os.PathLike) -> dict:
    """A checked classifier OOF file (``core.oofstats.classifier_from_arrays``) with ``"stamp"`` and ``"precision"``."""
    return _load(path, classifier_from_arrays)


def stamp_of(arrays: dict[str, np.ndarray]) -> Stamp | None:
    """The stamp among an OOF file's arrays (None for files written without one)."""
    try:
        return Stamp.from_dict(json.loads(str(arrays[STAMP_KEY])))
    except (KeyError, ValueError):
        return None


def read_oof_stamp(path: str | os.PathLike) -> Stamp | None:
    """The stamp of an OOF file without reading its statistics (None when missing or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return stamp_of({STAMP_KEY: data[STAMP_KEY]}) if STAMP_KEY in data.files else None
    except (OSError, ValueError, EOFError):
        return None
