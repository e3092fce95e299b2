"""Out-of-fold statistics files (``oof.npz``): written atomically, read back checked, with their stamp.

The arrays are those of ``core.oofstats`` (format in docs/oof-format.md); a JSON ``stamp`` entry
records what made them (``infra.artifacts.Stamp``: the TTA and grid, the weights' fingerprint).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core.oofstats import classifier_from_arrays, segmentation_from_arrays
from .artifacts import Stamp
from .files import atomic_path

STAMP_KEY = "stamp"


def write_oof(path: str | os.PathLike, arrays: dict[str, np.ndarray], stamp: Stamp) -> Path:
    """Write OOF arrays (``core.oofstats.segmentation_arrays`` or ``classifier_arrays``) and their stamp."""
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:  # np.savez would append .npz to a name
        np.savez_compressed(handle, **arrays, **{STAMP_KEY: np.array(json.dumps(stamp.to_dict()))})
    return path


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an OOF file (ValueError when it is not a readable .npz)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable OOF statistics file: {error}") from None


def load_oof(path: str | os.PathLike, kind: str) -> dict:
    """A checked OOF file of ``kind`` (``seg`` or ``cls``) with its ``"stamp"`` (None for files without one).

    Raises:
        ValueError: unreadable, another kind, another format version, or malformed; naming the file.
    """
    arrays = read_arrays(path)
    try:
        content = (segmentation_from_arrays if kind == "seg" else classifier_from_arrays)(arrays)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return content | {"stamp": stamp_of(arrays)}


def stamp_of(arrays: dict[str, np.ndarray]) -> Stamp | None:
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
