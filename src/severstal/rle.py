"""Run-length encoding exactly as Kaggle scores Severstal masks.

Pixels are numbered from 1, column-major (top to bottom, then left to right);
an encoding is sorted, non-overlapping ``start length`` pairs; ``""`` is the empty mask.
"""

from __future__ import annotations

import numpy as np

from .constants import HEIGHT, WIDTH


def parse_runs(rle: str, num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE string.

    Args:
        rle: ``"start length start length ..."``; empty or blank means no pixels.
        num_pixels: pixels in the image, the largest valid run end.

    Returns:
        ``(starts, lengths)`` as int64 arrays, starts 0-indexed.

    Raises:
        ValueError: saying what is malformed.
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if not tokens:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(tokens)}): it must be start/length pairs")
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(t for t in tokens if not t.lstrip("+-").isdigit())
        raise ValueError(f"RLE value {bad!r} is not an integer") from None
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        raise ValueError(f"RLE start {int(starts[starts < 1][0])} is not positive (pixels are numbered from 1)")
    if (lengths < 1).any():
        raise ValueError(f"RLE run length {int(lengths[lengths < 1][0])} is not positive")
    ends = starts + lengths - 1  # last pixel of each run, 1-indexed
    if len(starts) > 1:
        gaps = starts[1:] - ends[:-1]
        if (gaps < 1).any():
            i = int(np.argmax(gaps < 1))
            kind = "unsorted" if starts[i + 1] < starts[i] else "overlapping"
            raise ValueError(
                f"RLE runs are {kind}: run {i + 2} starts at {int(starts[i + 1])} "
                f"but run {i + 1} covers {int(starts[i])}..{int(ends[i])}"
            )
    if ends[-1] > num_pixels:
        raise ValueError(f"RLE run ends at pixel {int(ends[-1])}, beyond the image's {num_pixels} pixels")
    return starts - 1, lengths


def decode(rle: str, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Decode an RLE string into a mask.

    Args:
        rle: Kaggle RLE; ``""`` decodes to an empty mask.
        shape: ``(height, width)`` of the image.

    Returns:
        bool array of ``shape``.
    """
    height, width = shape
    starts, lengths = parse_runs(rle, height * width)
    flat = np.zeros(height * width + 1, dtype=np.int8)  # column-major pixels
    flat[starts] += 1  # starts are unique, and so are run ends: no np.add.at needed
    flat[starts + lengths] -= 1
    return np.cumsum(flat[:-1], dtype=np.int8).astype(bool).reshape(width, height).T


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (any dtype, non-zero = defect) as Kaggle RLE.

    Args:
        mask: ``(height, width)`` array.

    Returns:
        ``"start length ..."`` (1-indexed, column-major), or ``""`` for an empty mask.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).T.ravel()  # column-major order
    padded = np.empty(flat.size + 2, dtype=np.int8)
    padded[0] = padded[-1] = 0
    padded[1:-1] = flat
    changes = np.flatnonzero(padded[1:] != padded[:-1])  # 0-indexed run starts and ends
    if changes.size == 0:
        return ""
    changes[1::2] -= changes[0::2]  # ends -> lengths
    changes[0::2] += 1  # 1-indexed starts
    return " ".join(map(str, changes.tolist()))


def area(rle: str) -> int:
    """Number of pixels an RLE string covers (not validated beyond parsing)."""
    tokens = rle.split() if isinstance(rle, str) else []
    return int(sum(int(t) for t in tokens[1::2]))


def validate(rle: str, num_pixels: int = HEIGHT * WIDTH) -> str | None:
    """Return ``None`` when ``rle`` is valid, otherwise the reason it is not."""
    try:
        parse_runs(rle, num_pixels)
    except ValueError as error:
        return str(error)
    return None
