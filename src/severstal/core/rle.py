"""Run-length encoding exactly as Kaggle scores Severstal masks.

Pixels are numbered from 1, column-major (top to bottom, then left to right);
an encoding is sorted, non-overlapping ``start length`` pairs; ``""`` is the empty mask.
"""

from __future__ import annotations

import re

import numpy as np

from .constants import HEIGHT, WIDTH

_PLAIN = re.compile(r"[0-9 \t\n\r\f\v]*")  # ASCII digits and whitespace: parsed in C by np.fromstring
_INTEGER = re.compile(r"[+-]?[0-9]+")
_LARGEST = 2**62  # values beyond this could overflow int64 run ends; no image has that many pixels


def _integers(rle: str) -> np.ndarray:
    """The integers of a non-blank RLE string, in order (``ValueError`` for anything else)."""
    if _PLAIN.fullmatch(rle):
        values = np.fromstring(rle, dtype=np.int64, sep=" ")  # saturates on overflow: checked below
        if values.max() < _LARGEST:
            return values
    tokens = rle.split()
    bad = next((token for token in tokens if not _INTEGER.fullmatch(token)), None)
    if bad is not None:
        raise ValueError(f"RLE value {bad!r} is not an integer")
    numbers = [int(token) for token in tokens]
    huge = next((number for number in numbers if abs(number) >= _LARGEST), None)
    if huge is not None:
        raise ValueError(f"RLE value {huge} is far beyond the image's pixels")
    return np.array(numbers, dtype=np.int64)


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
    if not rle or rle.isspace():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    values = _integers(rle)
    if len(values) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(values)}): it must be start/length pairs")
    starts, lengths = values[0::2], values[1::2]
    if starts.min() < 1:
        first = int(starts[starts < 1][0])
        raise ValueError(f"RLE start {first} is not positive (pixels are numbered from 1)")
    if lengths.min() < 1:
        raise ValueError(f"RLE run length {int(lengths[lengths < 1][0])} is not positive")
    ends = starts + lengths - 1  # last pixel of each run, 1-indexed
    if len(starts) > 1:
        gaps = starts[1:] - ends[:-1]
        if gaps.min() < 1:
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
        bool array of ``shape`` (a column-major view: ``np.ascontiguousarray`` it for row-major work).
    """
    height, width = shape
    num_pixels = height * width
    return runs_mask(*parse_runs(rle, num_pixels), num_pixels).reshape(width, height).T


def runs_mask(starts: np.ndarray, lengths: np.ndarray, num_pixels: int) -> np.ndarray:
    """The flat bool mask of ``num_pixels`` pixels that sorted, non-overlapping 0-indexed runs cover."""
    # The mask alternates gap, run, gap, ..., run, gap: repeat False/True by those counts.
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[1::2] = lengths
    counts[0:-1:2] = starts
    counts[2:-1:2] -= starts[:-1] + lengths[:-1]  # gap = start - end of the previous run
    counts[-1] = num_pixels - (starts[-1] + lengths[-1] if len(starts) else 0)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts)  # (num_pixels,)


def decode_columns(starts: np.ndarray, lengths: np.ndarray, height: int, left: int, columns: int) -> np.ndarray:
    """Columns ``left .. left + columns - 1`` of a mask given as runs, without decoding the rest.

    Args:
        starts, lengths: sorted, non-overlapping 0-indexed column-major runs (:func:`parse_runs`).
        height: the mask's height.
        left: first column.
        columns: number of columns.

    Returns:
        bool ``(height, columns)`` (a column-major view).
    """
    low, high = left * height, (left + columns) * height  # the columns' pixel range
    ends = starts + lengths
    first, last = np.searchsorted(ends, low, side="right"), np.searchsorted(starts, high, side="left")
    clipped_starts = np.maximum(starts[first:last], low)
    clipped_lengths = np.minimum(ends[first:last], high) - clipped_starts
    return runs_mask(clipped_starts - low, clipped_lengths, high - low).reshape(columns, height).T


def run_pixel(starts: np.ndarray, lengths: np.ndarray, index: int) -> int:
    """The 0-indexed column-major pixel that is the ``index``-th (from 0) of the pixels the runs cover."""
    covered = np.cumsum(lengths)
    run = int(np.searchsorted(covered, index, side="right"))
    return int(starts[run] + index - (covered[run] - lengths[run]))


def mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 0-indexed column-major runs ``(starts, lengths)`` (int64) of a 2-D mask (non-zero = set)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    height, width = mask.shape
    pixels = mask if mask.dtype == bool else mask.astype(bool)
    # Column-major run boundaries, found without transposing the mask: changes inside a column
    # (row-major search over pairs of rows) and changes between the bottom of a column and the top
    # of the next one; a boundary is the 0-indexed pixel where a run starts or ends.
    inside = np.flatnonzero(pixels[1:] != pixels[:-1])  # (height - 1) x width, row-major
    rows, columns = np.divmod(inside, width)
    previous_bottom = np.concatenate(([False], pixels[-1, :-1]))  # pixel before each column's top
    tops = np.flatnonzero(pixels[0] != previous_bottom)
    changes = np.concatenate((columns * height + rows + 1, tops * height))
    if pixels[-1, -1]:
        changes = np.append(changes, height * width)  # a run reaching the last pixel ends there
    changes.sort()
    return changes[0::2], changes[1::2] - changes[0::2]


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (any dtype, non-zero = defect) as Kaggle RLE.

    Args:
        mask: ``(height, width)`` array.

    Returns:
        ``"start length ..."`` (1-indexed, column-major), or ``""`` for an empty mask.
    """
    starts, lengths = mask_runs(mask)
    if starts.size == 0:
        return ""
    pairs = np.empty(2 * starts.size, np.int64)
    pairs[0::2], pairs[1::2] = starts + 1, lengths  # 1-indexed starts
    return " ".join(["%d"] * pairs.size) % tuple(pairs.tolist())


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
