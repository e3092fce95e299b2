"""Data checks as pure functions: bytes or frames in, problem strings out (empty list = fine)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from .constants import CLASS_IDS, HEIGHT, WIDTH
from .rle import validate

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


def check_image_bytes(data: bytes, shape: tuple[int, int] | None = (HEIGHT, WIDTH)) -> list[str]:
    """Check one image file's content.

    A JPEG must end with the end-of-image marker FFD9 (optionally followed by zero padding): a
    truncated JPEG can still decode with a warning, so decoding alone does not catch it.

    Args:
        data: the file's bytes.
        shape: expected ``(height, width)``; None: any.

    Returns:
        Problems, e.g. ``["truncated: the JPEG has no end-of-image marker (FFD9)"]``.
    """
    if not data:
        return ["empty file"]
    if data.startswith(JPEG_START) and not data.rstrip(b"\x00").endswith(JPEG_END):
        return ["truncated: the JPEG has no end-of-image marker (FFD9)"]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)  # (height, width)
    if image is None:
        return ["cannot be decoded as an image"]
    if shape is not None and image.shape != tuple(shape):
        height, width = image.shape
        return [f"size {height} x {width} (height x width), expected {shape[0]} x {shape[1]}"]
    return []


def digest(data: bytes) -> str:
    """A content hash for finding byte-identical files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def find_duplicates(digests: Mapping[str, str]) -> list[str]:
    """Problems for files with identical content.

    Args:
        digests: ``{file name: digest}``.

    Returns:
        One problem per group of identical files, e.g. ``"byte-identical images: a.jpg, b.jpg"``.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for name, value in digests.items():
        groups[value].append(name)
    return [f"byte-identical images: {', '.join(sorted(names))}"
            for names in sorted(groups.values(), key=min) if len(names) > 1]


def check_label_frame(frame: pd.DataFrame, image_ids: Iterable[str], source: str,
                      class_ids: Sequence[int] = CLASS_IDS, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> list[str]:
    """Check a normal label frame (``labels.normalise``) against the images on disk.

    Problems: unknown ClassIds, invalid RLE, duplicate (image, class) rows and rows naming images
    that do not exist. Empty masks are fine (the 2019 layout lists every pair). Line numbers count
    the header as line 1, in either layout.

    Args:
        frame: ``ImageId, ClassId, EncodedPixels`` with a default RangeIndex.
        image_ids: file names present in the image folder.
        source: the file name for messages, e.g. ``train.csv``.
        class_ids: the valid class ids.
        shape: the images' ``(height, width)`` (the largest valid RLE end is their product).

    Returns:
        Problems naming the line and the image, e.g.
        ``"train.csv line 5 (abc.jpg): ClassId 7 is not one of (1, 2, 3, 4)"``.
    """
    present = set(image_ids)
    duplicated = frame.duplicated(["ImageId", "ClassId"], keep="first").to_numpy()
    problems = []
    for row, (image_id, class_id, rle) in enumerate(frame[["ImageId", "ClassId", "EncodedPixels"]].itertuples(
            index=False)):
        where = f"{source} line {row + 2} ({image_id})"
        if image_id not in present:
            problems.append(f"{where}: the image does not exist")
        if class_id not in class_ids:
            problems.append(f"{where}: ClassId {class_id} is not one of {tuple(class_ids)}")
        if duplicated[row]:
            problems.append(f"{where}: duplicate row for class {class_id}")
        error = validate(rle, shape[0] * shape[1]) if rle else None
        if error:
            problems.append(f"{where}: invalid EncodedPixels for class {class_id}: {error}")
    return problems


def check_label_map(data: bytes, shape: tuple[int, int] | None, num_classes: int) -> tuple[list[str], set[int]]:
    """Check one label-map PNG of the masks layout: single-channel, of the images' size, values 0..C.

    Args:
        data: the file's bytes.
        shape: the images' ``(height, width)``; None: any.
        num_classes: C, the number of classes (``classes.txt``): pixel value c in 1..C is class c, 0 no defect.

    Returns:
        ``(problems, classes)``: problems such as ``"pixel values 5, 7 are not classes 0..4 (classes.txt has 4)"``,
        and the class numbers 1..C the map holds.
    """
    if not data:
        return ["empty file"], set()
    label_map = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if label_map is None:
        return ["cannot be decoded as an image"], set()
    if label_map.ndim != 2:
        return [f"has {label_map.shape[2]} channels: a label map is a single-channel (grey) PNG whose pixel value "
                "is the class number"], set()
    problems = []
    if shape is not None and label_map.shape != tuple(shape):
        problems.append(f"size {label_map.shape[0]} x {label_map.shape[1]} (height x width), expected the images' "
                        f"{shape[0]} x {shape[1]}")
    values = np.unique(label_map)
    outside = values[values > num_classes]
    if len(outside):
        listed = ", ".join(str(int(v)) for v in outside[:10]) + (" ..." if len(outside) > 10 else "")
        problems.append(f"pixel values {listed} are not classes 0..{num_classes} (classes.txt names {num_classes})")
    return problems, {int(v) for v in values if 0 < v <= num_classes}
