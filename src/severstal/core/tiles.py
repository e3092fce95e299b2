"""Tiled prediction of images larger than a model's: overlapping tiles and their blended probabilities.

An image of ``(height, width)`` at least the tile's size is covered by a grid of tiles whose
neighbours overlap by at least ``overlap`` pixels, the last tile of a row or column flush with the
image's edge and the others spread evenly between (:func:`tile_grid`). Each tile's probabilities
are weighed by a window that falls linearly towards the tile's inner edges over the overlap
(:func:`blend_weights`), so that a pixel near one tile's border, where that tile saw little
context, takes most of its value from the neighbour that saw it whole; :func:`blend` adds the
weighed tiles and divides by the summed weights. An image of the tile's size is one tile; one
smaller than the tile is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """First pixels of the tiles covering ``length`` pixels with tiles of ``tile`` pixels.

    Args:
        length: the image's extent along one axis.
        tile: the tile's extent along it.
        overlap: the least overlap of neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Increasing starts, the first 0 and the last ``length - tile``, as evenly spread as whole
        pixels allow; ``[0]`` when ``length == tile``.

    Raises:
        ValueError: ``length`` is smaller than ``tile``, or ``overlap`` is outside ``0 .. tile - 1``.
    """
    length, tile, overlap = int(length), int(tile), int(overlap)
    if tile < 1:
        raise ValueError(f"the tile must be at least 1 pixel, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"the tile overlap must be at least 0 and less than the tile ({tile} pixels), got {overlap}")
    if length < tile:
        raise ValueError(f"an image of {length} pixels is smaller than the tile ({tile} pixels): tiles only cut "
                         "images at least as large as the data set's images")
    if length == tile:
        return [0]
    count = max(2, math.ceil((length - overlap) / (tile - overlap)))  # the fewest whose neighbours overlap enough
    span = length - tile
    return [round(index * span / (count - 1)) for index in range(count)]


def tile_grid(shape: Sequence[int], tile_shape: Sequence[int], overlap: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every tile of an image of ``shape`` = (height, width), row by row.

    Args:
        shape: the image's (height, width).
        tile_shape: the tile's (height, width).
        overlap: the least overlap of neighbouring tiles in both directions (see :func:`tile_starts`).

    Raises:
        ValueError: the image is smaller than the tile in either direction, or a bad overlap.
    """
    rows = tile_starts(shape[0], tile_shape[0], overlap)
    columns = tile_starts(shape[1], tile_shape[1], overlap)
    return [(top, left) for top in rows for left in columns]


def blend_weights(tile_shape: Sequence[int], overlap: int) -> np.ndarray:
    """A tile's blending window ``(height, width)`` float32: 1 inside, falling linearly over ``overlap``
    pixels towards each edge to ``1 / (overlap + 1)`` at the edge (never 0, so that the image's own
    edges, which one tile alone covers, keep their values)."""
    height, width = int(tile_shape[0]), int(tile_shape[1])

    def ramp(size: int) -> np.ndarray:
        distance = np.minimum(np.arange(size), np.arange(size)[::-1])  # pixels to the nearer edge
        return np.minimum(1.0, (distance + 1) / (overlap + 1)).astype(np.float32)

    return np.outer(ramp(height), ramp(width))


def blend(tiles: np.ndarray, origins: Sequence[tuple[int, int]], shape: Sequence[int], overlap: int) -> np.ndarray:
    """The weighed mean of overlapping tiles' probabilities on the whole image.

    Args:
        tiles: ``(count, tile height, tile width, channels)`` probabilities, one per origin.
        origins: ``(top, left)`` of each tile, from :func:`tile_grid`.
        shape: the image's (height, width).
        overlap: the overlap the grid was made with (the window's ramp).

    Returns:
        ``(height, width, channels)`` float32.

    Raises:
        ValueError: the tiles and origins differ in number, or the tiles do not cover the image.
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    if tiles.ndim != 4 or len(tiles) != len(origins):
        raise ValueError(f"expected one (height, width, channels) tile per origin: {tiles.shape} for "
                         f"{len(origins)} origins")
    height, width = int(shape[0]), int(shape[1])
    tile_height, tile_width = tiles.shape[1:3]
    weights = blend_weights((tile_height, tile_width), overlap)
    total = np.zeros((height, width, tiles.shape[-1]), np.float32)
    weight_sum = np.zeros((height, width, 1), np.float32)
    for tile, (top, left) in zip(tiles, origins, strict=True):
        if top < 0 or left < 0 or top + tile_height > height or left + tile_width > width:
            raise ValueError(f"a tile at ({top}, {left}) of {tile_height} x {tile_width} lies outside the "
                             f"{height} x {width} image")
        total[top:top + tile_height, left:left + tile_width] += tile * weights[..., None]
        weight_sum[top:top + tile_height, left:left + tile_width] += weights[..., None]
    if not np.all(weight_sum > 0):
        raise ValueError(f"the tiles do not cover the {height} x {width} image")
    return total / weight_sum
