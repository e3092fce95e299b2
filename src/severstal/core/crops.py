"""Training crops from compact masks: each image's class masks kept as run lengths, decoded only inside a crop.

An image's masks are parsed (and, below full resolution, area-resized) once into :class:`ImageRuns`:
0-indexed column-major ``(starts, lengths)`` per class at the size a model sees. A crop's window
is chosen from the runs (:func:`crop_window`) and only the window's columns are decoded
(:func:`window_masks`), so no sample decodes four full-size masks to keep a 256 x 512 crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .rle import decode_columns, mask_runs, parse_runs, run_pixel, runs_mask


@dataclass(frozen=True)
class ImageRuns:
    """One image's class masks as runs at ``size`` = (height, width)."""

    size: tuple[int, int]
    starts: tuple[np.ndarray, ...]  # per class, 0-indexed column-major
    lengths: tuple[np.ndarray, ...]

    @property
    def num_classes(self) -> int:
        return len(self.starts)

    def present(self) -> np.ndarray:
        """The class channels (0-based) with at least one pixel."""
        return np.array([c for c, starts in enumerate(self.starts) if starts.size], dtype=np.int64)


def image_runs(rles: Sequence[str], original: tuple[int, int], size: tuple[int, int]) -> ImageRuns:
    """:class:`ImageRuns` at ``size`` from one RLE string per class of an image of ``original`` = (height, width).

    Below the original size a pixel is set when at least half of the area it covers is set (an
    area resize of 0/255 values, exact).
    """
    original = (int(original[0]), int(original[1]))
    size = (int(size[0]), int(size[1]))
    starts, lengths = [], []
    for rle in rles:
        rle = rle.decode() if isinstance(rle, bytes) else str(rle)
        runs = parse_runs(rle, original[0] * original[1])
        if original != size and runs[0].size:
            mask = runs_mask(*runs, original[0] * original[1]).reshape(original[1], original[0]).T.view(np.uint8)
            runs = mask_runs(cv2.resize(mask * np.uint8(255), (size[1], size[0]), interpolation=cv2.INTER_AREA) >= 128)
        starts.append(runs[0])
        lengths.append(runs[1])
    return ImageRuns(size, tuple(starts), tuple(lengths))


def window_masks(runs: ImageRuns, top: int, left: int, crop: tuple[int, int]) -> np.ndarray:
    """The masks ``(crop height, crop width, classes)`` uint8 0/1 of the window at ``(top, left)``."""
    crop_height, crop_width = crop
    masks = np.zeros((crop_height, crop_width, runs.num_classes), np.uint8)
    for channel in runs.present():
        columns = decode_columns(runs.starts[channel], runs.lengths[channel], runs.size[0], left, crop_width)
        masks[..., channel] = columns[top:top + crop_height]
    return masks


def crop_window(runs: ImageRuns, crop: tuple[int, int], on_defect: bool, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a training crop.

    Args:
        runs: the image's masks.
        crop: ``(crop height, crop width)``, at most the masks' size.
        on_defect: centre the crop on a defect: one of the image's classes is picked uniformly, then
            a uniformly random pixel of that class lands at a random position inside the crop, so a
            small class-1 spot is sought as often as a large class-3 region on the same image (when
            the image has no defect, a uniformly random crop is taken).
        rng: random generator.

    Returns:
        ``(top, left)``.
    """
    height, width = runs.size
    crop_height, crop_width = crop
    if on_defect:
        present = runs.present()
        if present.size:
            channel = int(present[rng.integers(present.size)])
            starts, lengths = runs.starts[channel], runs.lengths[channel]
            column, row = divmod(run_pixel(starts, lengths, int(rng.integers(int(lengths.sum())))), height)
            top = row - int(rng.integers(crop_height))
            left = column - int(rng.integers(crop_width))
            return min(max(top, 0), height - crop_height), min(max(left, 0), width - crop_width)
    return int(rng.integers(height - crop_height + 1)), int(rng.integers(width - crop_width + 1))
