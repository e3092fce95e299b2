"""Kaggle RLE: hand-computed encodings, every malformed-input error, round trips on real masks."""

import numpy as np
import pandas as pd
import pytest

from severstal.core.constants import HEIGHT, NUM_PIXELS, WIDTH
from severstal.core.rle import area, decode, encode, parse_runs, validate


def simple_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The textbook decoder, written independently: a loop over runs, column-major reshape."""
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    values = [int(token) for token in rle.split()]
    for start, length in zip(values[0::2], values[1::2], strict=True):
        flat[start - 1:start - 1 + length] = True
    return flat.reshape(shape, order="F")


def mask_with(pixels, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for row, column in pixels:
        mask[row, column] = 1
    return mask


def test_empty_mask_encodes_to_empty_string():
    assert encode(np.zeros((HEIGHT, WIDTH), dtype=np.uint8)) == ""
    assert not decode("").any()
    assert decode("").shape == (HEIGHT, WIDTH)


def test_full_mask_is_one_run():
    assert encode(np.ones((HEIGHT, WIDTH), dtype=bool)) == "1 409600"
    assert decode("1 409600").all()


@pytest.mark.parametrize(
    ("pixel", "rle"),
    [
        ((0, 0), "1 1"),
        ((HEIGHT - 1, 0), "256 1"),
        ((0, WIDTH - 1), "409345 1"),
        ((HEIGHT - 1, WIDTH - 1), "409600 1"),
    ],
    ids=["top-left", "bottom-left", "top-right", "bottom-right"],
)
def test_corner_pixels(pixel, rle):
    mask = mask_with([pixel])
    assert encode(mask) == rle
    assert np.array_equal(decode(rle), mask.astype(bool))


@pytest.mark.parametrize(
    ("pixels", "shape", "rle"),
    [
        ([(1, 0), (2, 0), (0, 1)], (3, 4), "2 3"),  # a run continues from a column's bottom to the next top
        ([(0, 0), (2, 0), (1, 1), (2, 3)], (3, 4), "1 1 3 1 5 1 12 1"),
        ([(0, 1), (1, 1), (2, 1)], (3, 4), "4 3"),  # one full column
        ([(2, 0)], (3, 1), "3 1"),
        ([(0, 0)], (1, 1), "1 1"),
        ([(0, 2), (0, 3)], (1, 5), "3 2"),
    ],
)
def test_small_masks_by_hand(pixels, shape, rle):
    mask = mask_with(pixels, shape)
    assert encode(mask) == rle
    assert np.array_equal(decode(rle, shape), mask.astype(bool))


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (bool, (True, True, True)),
        (np.uint8, (1, 255, 7)),
        (np.int32, (1, -3, 2)),
        (np.float32, (1.0, 0.5, -2.0)),
    ],
)
def test_encode_treats_any_non_zero_value_as_defect(dtype, values):
    mask = np.zeros((3, 4), dtype=dtype)
    mask[0, 0], mask[1, 0], mask[2, 2] = values
    assert encode(mask) == "1 2 9 1"


def test_encode_rejects_non_2d_masks():
    with pytest.raises(ValueError, match="must be 2-D"):
        encode(np.zeros((2, 3, 4)))


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number of values \\(3\\)"),
        ("1 x", "RLE value 'x' is not an integer"),
        ("1 2.5", "RLE value '2.5' is not an integer"),
        ("1e3 2", "RLE value '1e3' is not an integer"),
        ("1,2", "RLE value '1,2' is not an integer"),
        ("0 5", "RLE start 0 is not positive"),
        ("-3 2", "RLE start -3 is not positive"),
        ("5 6 -1 2", "RLE start -1 is not positive"),
        ("1 0", "RLE run length 0 is not positive"),
        ("5 -2", "RLE run length -2 is not positive"),
        ("10 2 1 2", "RLE runs are unsorted: run 2 starts at 1 but run 1 covers 10..11"),
        ("1 5 3 2", "RLE runs are overlapping: run 2 starts at 3 but run 1 covers 1..5"),
        ("1 5 5 2", "RLE runs are overlapping: run 2 starts at 5 but run 1 covers 1..5"),
        ("409600 2", "ends at pixel 409601, beyond the image's 409600 pixels"),
        ("1 409601", "ends at pixel 409601, beyond"),
        ("99999999999999999999 1", "RLE value 99999999999999999999 is far beyond the image's pixels"),
        ("1 9223372036854775807", "far beyond"),
    ],
)
def test_malformed_rle_is_rejected_with_a_reason(rle, message):
    with pytest.raises(ValueError, match=message):
        parse_runs(rle, NUM_PIXELS)
    with pytest.raises(ValueError, match=message):
        decode(rle)
    assert validate(rle) is not None


def test_non_string_rle_is_rejected():
    with pytest.raises(ValueError, match="must be a string, got int"):
        parse_runs(12, NUM_PIXELS)


@pytest.mark.parametrize("blank", ["", "   ", "\t\n", None, float("nan")])
def test_blank_or_missing_rle_is_empty(blank):
    starts, lengths = parse_runs(blank, NUM_PIXELS)
    assert starts.size == 0 and lengths.size == 0


@pytest.mark.parametrize(
    "text", ["3 2 10 4", " 3 2 10 4 ", "3\t2\n10  4", "3 2\r\n10 4\n", "+3 2 10 4", "3\u00a02 10 4"]
)
def test_whitespace_and_signs_parse_alike(text):
    starts, lengths = parse_runs(text, 100)
    assert starts.tolist() == [2, 9]  # 0-indexed
    assert lengths.tolist() == [2, 4]


def test_touching_runs_are_valid():
    assert validate("1 2 3 2") is None
    assert encode(decode("1 2 3 2", (2, 3))) == "1 4"


def test_run_ending_on_the_last_pixel_is_valid_and_one_beyond_is_not():
    assert validate("5 6", num_pixels=10) is None
    assert "beyond the image's 10 pixels" in validate("5 7", num_pixels=10)


@pytest.mark.parametrize(("rle", "expected"), [("", 0), ("1 3 10 2", 5), ("1 409600", NUM_PIXELS)])
def test_area(rle, expected):
    assert area(rle) == expected


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (3, 4), (5, 9), (HEIGHT, WIDTH)])
@pytest.mark.parametrize("density", [0.02, 0.5, 0.97])
def test_random_round_trips_agree_with_the_simple_decoder(shape, density):
    rng = np.random.default_rng([*shape, int(density * 100)])
    for _ in range(5):
        mask = rng.random(shape) < density
        rle = encode(mask)
        assert np.array_equal(decode(rle, shape), mask)
        assert np.array_equal(simple_decode(rle, shape), mask)


def test_decode_returns_bool_of_the_requested_shape():
    mask = decode("2 3", (3, 4))
    assert mask.dtype == bool and mask.shape == (3, 4)


@pytest.mark.parametrize("file_name", ["train_subset_rle.csv", "train.csv"])
def test_real_masks_round_trip_exactly(sample_dir, file_name):
    rles = pd.read_csv(sample_dir / file_name)["EncodedPixels"].tolist()
    assert len(rles) == {"train_subset_rle.csv": 2845, "train.csv": 17}[file_name]
    for rle in rles:
        mask = decode(rle)
        assert encode(mask) == rle
        assert encode(np.ascontiguousarray(mask).astype(np.uint8)) == rle
    for rle in rles[::40]:  # the independent decoder is slow: a spread of strings
        assert np.array_equal(decode(rle), simple_decode(rle, (HEIGHT, WIDTH)))
