"""Tiles of images larger than a model's: the grid, the blending window, and the blend against a brute-force oracle."""

import numpy as np
import pytest

from severstal.core.tiles import blend, blend_weights, tile_grid, tile_starts


@pytest.mark.parametrize("length, tile, overlap, expected", [
    (256, 256, 0, [0]),
    (256, 256, 64, [0]),
    (512, 256, 64, [0, 128, 256]),  # 2 tiles would overlap by 0 < 64
    (512, 256, 0, [0, 256]),
    (1600, 400, 0, [0, 400, 800, 1200]),
    (1000, 400, 100, [0, 300, 600]),
    (401, 400, 0, [0, 1]),
    (700, 400, 64, [0, 300]),
    (3200, 1600, 128, [0, 800, 1600]),
])
def test_tile_starts(length, tile, overlap, expected):
    assert tile_starts(length, tile, overlap) == expected


@pytest.mark.parametrize("length, tile, overlap, message", [
    (255, 256, 0, "smaller than the tile"),
    (512, 256, 256, "less than the tile"),
    (512, 256, -1, "at least 0"),
    (512, 0, 0, "at least 1 pixel"),
])
def test_tile_starts_refuses(length, tile, overlap, message):
    with pytest.raises(ValueError, match=message):
        tile_starts(length, tile, overlap)


def test_tile_starts_cover_with_the_fewest_tiles_that_overlap_enough():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        tile = int(rng.integers(1, 60))
        length = tile + int(rng.integers(0, 300))
        overlap = int(rng.integers(0, tile))
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == length - tile
        steps = np.diff(starts)
        assert np.all(steps > 0) and np.all(tile - steps >= overlap), (length, tile, overlap, starts)
        assert len(steps) == 0 or steps.max() - steps.min() <= 1  # evenly spread
        fewer = len(starts) - 1  # one tile fewer would not cover the length, or overlap too little
        if fewer == 1:
            assert length > tile
        elif fewer > 1:
            assert (length - tile) / (fewer - 1) > tile - overlap


def test_tile_grid_is_row_by_row():
    assert tile_grid((128, 800), (64, 400), 16) == [(top, left) for top in (0, 32, 64) for left in (0, 200, 400)]
    assert tile_grid((64, 400), (64, 400), 16) == [(0, 0)]
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_grid((63, 800), (64, 400), 16)


def test_blend_weights_by_hand():
    third = 1 / 3
    rows = np.array([third, 2 * third, third])
    columns = np.array([third, 2 * third, 1, 2 * third, third])
    np.testing.assert_allclose(blend_weights((3, 5), 2), np.outer(rows, columns), rtol=1e-6)
    assert np.all(blend_weights((8, 8), 0) == 1)


def brute_force_blend(tiles, origins, shape, overlap):
    """Each pixel's weighed mean over the tiles that cover it, one pixel and one tile at a time."""
    height, width = shape
    tile_height, tile_width = tiles.shape[1:3]
    out = np.zeros((height, width, tiles.shape[-1]))
    for y in range(height):
        for x in range(width):
            total, weight_sum = 0.0, 0.0
            for tile, (top, left) in zip(tiles, origins, strict=True):
                if top <= y < top + tile_height and left <= x < left + tile_width:
                    dy = min(y - top, top + tile_height - 1 - y)
                    dx = min(x - left, left + tile_width - 1 - x)
                    weight = min(1, (dy + 1) / (overlap + 1)) * min(1, (dx + 1) / (overlap + 1))
                    total, weight_sum = total + weight * tile[y - top, x - left], weight_sum + weight
            out[y, x] = total / weight_sum
    return out


@pytest.mark.parametrize("shape, tile_shape, overlap", [((20, 30), (8, 12), 3), ((8, 12), (8, 12), 2),
                                                        ((17, 9), (5, 9), 0), ((13, 40), (13, 16), 5)])
def test_blend_is_the_brute_force_weighed_mean(shape, tile_shape, overlap):
    origins = tile_grid(shape, tile_shape, overlap)
    tiles = np.random.default_rng(len(origins)).random((len(origins), *tile_shape, 2)).astype(np.float32)
    np.testing.assert_allclose(blend(tiles, origins, shape, overlap), brute_force_blend(tiles, origins, shape, overlap),
                               rtol=1e-5, atol=1e-6)


def test_blend_of_crops_of_one_map_is_that_map():
    probabilities = np.random.default_rng(1).random((128, 800, 4)).astype(np.float32)
    origins = tile_grid((128, 800), (64, 400), 32)
    tiles = np.stack([probabilities[top:top + 64, left:left + 400] for top, left in origins])
    np.testing.assert_allclose(blend(tiles, origins, (128, 800), 32), probabilities, rtol=1e-6, atol=1e-7)


def test_blend_refuses_tiles_that_do_not_fit():
    tiles = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="one .* tile per origin"):
        blend(tiles, [(0, 0)], (4, 8), 0)
    with pytest.raises(ValueError, match="lies outside"):
        blend(tiles, [(0, 0), (0, 6)], (4, 8), 0)
    with pytest.raises(ValueError, match="do not cover"):
        blend(tiles[:1], [(0, 0)], (4, 8), 0)
