"""Label-map folders of the masks layout: read into the normal label frame, written by predict.

A label map is a single-channel PNG named ``<image stem>.png`` whose pixel value is the class number
(0 = no defect); an image without one is defect-free. Reading turns the maps into the same normal
frame (``ImageId, ClassId, EncodedPixels``) as Kaggle's ``train.csv``, so every later step (folds,
the input pipeline, OOF statistics, scores) serves both layouts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..core.labels import NORMAL_COLUMNS, label_map_rows
from .errors import UserError, format_problems
from .files import atomic_path
from .images import PROGRESS_FROM, default_workers

LABEL_MAP_SUFFIX = ".png"


def label_map_path(folder: str | os.PathLike, image_name: str) -> Path:
    """The label map of an image: ``<folder>/<image stem>.png``."""
    return Path(folder) / f"{Path(image_name).stem}{LABEL_MAP_SUFFIX}"


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A label map as ``(height, width)`` integers; UserError when it cannot be read or is not single-channel."""
    label_map = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label_map is None:
        raise UserError(f"cannot read the label map {path}: severstal check-data lists what is wrong with it")
    if label_map.ndim != 2:
        raise UserError(f"the label map {path} has {label_map.shape[2]} channels: a label map is a single-channel "
                        "PNG whose pixel value is the class number (severstal check-data checks every map)")
    return label_map


def read_label_maps(folder: str | os.PathLike, image_names: Sequence[str], class_ids: Sequence[int],
                    what: str = "label maps") -> pd.DataFrame:
    """The normal label frame of ``image_names`` from their label maps (images without one are defect-free).

    Args:
        folder: the label-map folder (``train_masks/`` or ``test_masks/``).
        image_names: the images' file names (the frame's ``ImageId``).
        class_ids: the data set's classes ``1..C``; a pixel value above C is an error.
        what: how a progress bar and messages name the maps.

    Returns:
        One row per (image, class), ``EncodedPixels`` ``""`` where the class is absent.
    """
    names = list(image_names)
    highest = max(class_ids) if class_ids else 0

    def rows(name: str) -> list[tuple[str, int, str]] | str:
        path = label_map_path(folder, name)
        if not path.is_file():
            return [(name, int(class_id), "") for class_id in class_ids]
        label_map = read_label_map(path)
        if label_map.size and int(label_map.max()) > highest:
            return f"{path}: pixel value {int(label_map.max())} is not a class 0..{highest}"
        return label_map_rows(name, label_map, class_ids)

    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        results = list(tqdm(pool.map(rows, names), total=len(names), desc=f"read {what}", unit="map",
                            disable=len(names) < PROGRESS_FROM))
    problems = [result for result in results if isinstance(result, str)]
    if problems:
        raise UserError(f"{len(problems)} {what} cannot be used:\n{format_problems(problems)}\n"
                        "severstal check-data lists every problem of the data directory")
    return pd.DataFrame([row for result in results for row in result], columns=list(NORMAL_COLUMNS))


def write_label_map(path: str | os.PathLike, label_map: np.ndarray) -> None:
    """Write a ``(height, width)`` uint8 label map as a PNG, atomically."""
    path = Path(path)
    ok, encoded = cv2.imencode(LABEL_MAP_SUFFIX, np.ascontiguousarray(label_map, np.uint8))
    if not ok:
        raise ValueError(f"cannot encode a label map of shape {np.shape(label_map)} as PNG")
    with atomic_path(path) as temporary:
        Path(temporary).write_bytes(encoded.tobytes())
