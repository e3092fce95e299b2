"""Compact masks for training crops: windowed decoding, pixel sampling and the class-first crop rule."""

import numpy as np
import pytest

from severstal.core.crops import ImageRuns, crop_window, image_runs, window_masks
from severstal.core.labels import rle_lookup
from severstal.core.rle import decode, decode_columns, encode, mask_runs, parse_runs, run_pixel
from severstal.infra.tables import read_table


def runs_of(masks: np.ndarray) -> ImageRuns:
    """:class:`ImageRuns` of ``(h, w, classes)`` masks."""
    runs = [mask_runs(masks[..., c]) for c in range(masks.shape[-1])]
    return ImageRuns(masks.shape[:2], tuple(r[0] for r in runs), tuple(r[1] for r in runs))


def random_mask(rng, shape=(16, 24)):
    return rng.random(shape) < rng.uniform(0.05, 0.6)


@pytest.mark.parametrize("seed", range(20))
def test_mask_runs_and_decode_columns_against_a_full_decode(seed):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng)
    starts, lengths = mask_runs(mask)
    np.testing.assert_array_equal(decode(encode(mask), mask.shape), mask)
    parsed = parse_runs(encode(mask), mask.size)
    np.testing.assert_array_equal(parsed[0], starts)
    np.testing.assert_array_equal(parsed[1], lengths)
    for left in range(mask.shape[1]):
        for columns in range(1, mask.shape[1] - left + 1):
            np.testing.assert_array_equal(decode_columns(starts, lengths, mask.shape[0], left, columns),
                                          mask[:, left:left + columns])


def test_decode_columns_hand_case():
    # a 3 x 3 mask with runs 2-4 (column 0 rows 1-2, column 1 row 0) and 9 (column 2 row 2), 1-indexed
    starts, lengths = parse_runs("2 3 9 1", 9)
    assert decode_columns(starts, lengths, 3, 1, 2).astype(int).tolist() == [[1, 0], [0, 0], [0, 1]]
    assert decode_columns(starts, lengths, 3, 0, 1).astype(int).tolist() == [[0], [1], [1]]


def test_run_pixel_enumerates_every_covered_pixel_once():
    """Drawing an index uniformly from 0..area-1 draws a uniformly random pixel of the mask."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = random_mask(rng)
        starts, lengths = mask_runs(mask)
        pixels = [run_pixel(starts, lengths, k) for k in range(int(lengths.sum()))]
        expected = np.flatnonzero(mask.T.ravel())  # column-major, 0-indexed
        assert pixels == expected.tolist()


def test_real_masks_decode_by_window(sample_dir):
    strings = read_table(sample_dir / "train_subset_rle.csv")["EncodedPixels"].dropna().tolist()[:300]
    rng = np.random.default_rng(0)
    for rle in strings:
        full = decode(rle)
        starts, lengths = parse_runs(rle, full.size)
        left = int(rng.integers(0, 1600 - 512 + 1))
        np.testing.assert_array_equal(decode_columns(starts, lengths, 256, left, 512), full[:, left:left + 512])
        assert encode(full) == " ".join(rle.split())


def test_image_runs_at_quarter_resolution():
    full = np.zeros((256, 1600), np.uint8)
    full[8:16, 40:48] = 1  # an 8 x 8 block -> 2 x 2 at quarter resolution
    full[100:102, 200:202] = 1  # a 2 x 2 speck: a quarter of one quarter-resolution pixel -> dropped (< 1/2)
    runs = image_runs(["", "", encode(full), ""], (256, 1600), (64, 400))
    masks = window_masks(runs, 0, 0, (64, 400))
    expected = np.zeros((64, 400), np.uint8)
    expected[2:4, 10:12] = 1
    np.testing.assert_array_equal(masks[..., 2], expected)
    assert masks[..., [0, 1, 3]].sum() == 0 and runs.present().tolist() == [2]
    np.testing.assert_array_equal(window_masks(runs, 1, 9, (3, 4))[..., 2], expected[1:4, 9:13])


def test_crop_non_empty_always_holds_the_defect():
    masks = np.zeros((64, 400, 4), np.uint8)
    masks[20:30, 350:360, 3] = 1
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left = crop_window(runs_of(masks), (64, 64), True, rng)
        assert window_masks(runs_of(masks), top, left, (64, 64))[..., 3].sum() > 0


def test_crop_window_rule():
    rng = np.random.default_rng(0)
    masks = np.zeros((64, 400, 4), np.uint8)
    masks[10, 350, 1] = 1  # one defect pixel near the right edge
    runs = runs_of(masks)
    lefts = set()
    for _ in range(200):
        top, left = crop_window(runs, (32, 64), True, rng)
        assert top <= 10 < top + 32 and left <= 350 < left + 64 and left + 64 <= 400
        lefts.add(left)
    assert len(lefts) > 20  # the defect lands anywhere in the crop, not always at the same place
    for on_defect, source in ((False, masks), (True, np.zeros_like(masks))):  # uniform windows
        windows = {crop_window(runs_of(source), (64, 100), on_defect, rng) for _ in range(300)}
        assert {top for top, _ in windows} == {0} and max(left for _, left in windows) <= 300
        assert min(left for _, left in windows) < 30 and max(left for _, left in windows) > 270


def test_defect_crops_pick_a_class_first():
    """A one-pixel class-1 spot beside a large class-3 region is sought half the time, not once in 20,000."""
    rng = np.random.default_rng(0)
    masks = np.zeros((64, 400, 4), np.uint8)
    masks[:, 100:, 2] = 1  # class 3: 19,200 pixels
    masks[10, 5, 0] = 1  # class 1: one pixel, far left
    runs = runs_of(masks)
    windows = [crop_window(runs, (32, 64), True, rng) for _ in range(400)]
    holding = [top <= 10 < top + 32 and left <= 5 < left + 64 for top, left in windows]
    assert 0.4 < np.mean(holding) < 0.6  # every class-1 draw holds it; class-3 draws never reach column 5
    assert all(left + 64 > 100 for (top, left), held in zip(windows, holding, strict=True) if not held)


def test_defect_crop_distribution_is_exact():
    """Every (class, pixel, offset) draw is equally likely: the window distribution enumerated exactly."""
    masks = np.zeros((6, 8, 2), np.uint8)
    masks[1:3, 2:4, 0] = 1  # class 1: 4 pixels
    masks[5, 7, 1] = 1  # class 2: 1 pixel, bottom right
    runs, crop = runs_of(masks), (3, 4)
    expected = {}
    for channel in (0, 1):
        rows, columns = np.nonzero(masks[..., channel])
        for row, column in zip(rows, columns, strict=True):
            for dy in range(crop[0]):
                for dx in range(crop[1]):
                    window = (min(max(row - dy, 0), 6 - 3), min(max(column - dx, 0), 8 - 4))
                    expected[window] = expected.get(window, 0) + 1 / (2 * rows.size * 12)
    rng = np.random.default_rng(0)
    draws = 60_000
    counts = {}
    for _ in range(draws):
        window = crop_window(runs, crop, True, rng)
        counts[window] = counts.get(window, 0) + 1
    assert set(counts) == set(expected)
    for window, probability in expected.items():  # binomial standard error <= 0.002; 5 sigma
        assert abs(counts[window] / draws - probability) < 0.011, window


def test_real_sample_runs(sample_dir):
    labels = read_table(sample_dir / "train.csv")
    lookup = rle_lookup(labels)
    for image_id in sorted(lookup)[:20]:
        rles = [lookup[image_id].get(c, "") for c in (1, 2, 3, 4)]
        runs = image_runs(rles, (256, 1600), (256, 1600))
        full = np.stack([decode(r) for r in rles], axis=-1).astype(np.uint8)
        np.testing.assert_array_equal(window_masks(runs, 0, 0, (256, 1600)), full)
        np.testing.assert_array_equal(window_masks(runs, 0, 700, (256, 512)), full[:, 700:1212])
