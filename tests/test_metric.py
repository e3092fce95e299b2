"""Mean Dice over (image, class) pairs: hand-computed cases and a brute-force run intersection."""

import math

import numpy as np
import pandas as pd
import pytest

from severstal.core.metric import (
    class_table,
    dice,
    dice_from_areas,
    mean_dice,
    pair_areas,
    run_intersection,
    score_pairs,
)


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),  # empty / empty
        ([0, 1, 0, 0], [0, 0, 0, 0], 0.0),  # one stray pixel on an empty truth
        ([0, 0, 0, 0], [1, 1, 0, 0], 0.0),  # a missed defect
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
        ([1, 1, 0, 0], [0, 1, 1, 1], 0.4),  # 2*1 / (2+3)
        ([1, 1, 1, 0], [0, 1, 1, 1], 2 / 3),  # 2*2 / (3+3)
        ([1, 0, 0, 0], [0, 0, 0, 1], 0.0),
    ],
)
def test_dice_of_tiny_masks(prediction, truth, expected):
    prediction, truth = np.array(prediction).reshape(2, 2), np.array(truth).reshape(2, 2)
    assert dice(prediction, truth) == pytest.approx(expected, abs=1e-12)


def test_dice_rejects_different_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_dice_from_areas_is_vectorised():
    result = dice_from_areas([0, 1, 2, 3], [0, 0, 3, 3], [0, 0, 1, 3])
    np.testing.assert_allclose(result, [1.0, 0.0, 0.4, 1.0])


def random_runs(rng, num_pixels: int):
    """Sorted, non-overlapping runs (0-indexed starts) and the mask they cover."""
    mask = rng.random(num_pixels) < rng.choice([0.05, 0.3, 0.8])
    padded = np.concatenate(([False], mask, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return changes[0::2], changes[1::2] - changes[0::2], mask


@pytest.mark.parametrize("seed", range(6))
def test_run_intersection_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        num_pixels = int(rng.integers(1, 200))
        starts_a, lengths_a, mask_a = random_runs(rng, num_pixels)
        starts_b, lengths_b, mask_b = random_runs(rng, num_pixels)
        expected = int(np.logical_and(mask_a, mask_b).sum())
        assert run_intersection(starts_a, lengths_a, starts_b, lengths_b) == expected
        assert run_intersection(starts_b, lengths_b, starts_a, lengths_a) == expected


@pytest.mark.parametrize(
    ("predicted", "true", "expected"),
    [
        ("1 3", "2 3", (3, 3, 2)),
        ("", "2 3", (0, 3, 0)),
        ("1 3", "", (3, 0, 0)),
        ("1 2 10 5", "2 10", (7, 10, 3)),  # pixels 2, 10, 11
        ("5 1", "1 4 6 2", (1, 6, 0)),  # falls in the gap between two runs
        ("1 100", "1 100", (100, 100, 100)),
    ],
)
def test_pair_areas(predicted, true, expected):
    assert pair_areas(predicted, true, num_pixels=100) == expected


def hand_made_case():
    submission = frame([
        ("a.jpg", 1, "1 4"),  # truth "3 4": 2 pixels shared of 4 + 4 -> 0.5
        ("a.jpg", 3, ""),  # truth "1 10": missed -> 0
        ("a.jpg", 4, ""),  # empty / empty -> 1; class 2 of a.jpg is missing: empty -> 1
        ("b.jpg", 0, "1 409600"),  # ClassId 0 is ignored: b.jpg predicts nothing anywhere
    ])
    truth = frame([
        ("a.jpg", 1, "3 4"),
        ("a.jpg", 3, "1 10"),
        ("b.jpg", 2, "100 5"),  # missed -> 0
        ("c.jpg", 1, "1 5"),  # c.jpg is not in the submission: not scored
    ])
    return submission, truth


def test_score_pairs_by_hand():
    submission, truth = hand_made_case()
    pairs = score_pairs(submission, truth)
    assert pairs["ImageId"].tolist() == ["a.jpg"] * 4 + ["b.jpg"] * 4
    assert pairs["ClassId"].tolist() == [1, 2, 3, 4] * 2
    assert pairs["predicted_area"].tolist() == [4, 0, 0, 0, 0, 0, 0, 0]
    assert pairs["true_area"].tolist() == [4, 0, 10, 0, 0, 5, 0, 0]
    assert pairs["intersection"].tolist() == [2, 0, 0, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(pairs["dice"], [0.5, 1, 0, 1, 1, 0, 1, 1])
    assert mean_dice(pairs) == pytest.approx(5.5 / 8)


def test_class_table_by_hand():
    submission, truth = hand_made_case()
    submission.loc[len(submission)] = ("b.jpg", 4, "7 3")  # a false positive
    table = class_table(score_pairs(submission, truth))
    assert table.index.tolist() == ["class 1", "class 2", "class 3", "class 4", "all"]
    assert table["pairs"].tolist() == [2, 2, 2, 2, 8]
    assert table["positives"].tolist() == [1, 1, 1, 0, 3]
    assert table["false_positive"].tolist() == [0, 0, 0, 1, 1]
    assert table["false_negative"].tolist() == [0, 1, 1, 0, 2]
    np.testing.assert_allclose(table["dice"], [0.75, 0.5, 0.5, 0.5, 4.5 / 8])


def test_all_empty_submission_scores_the_empty_share():
    submission = frame([(image, class_id, "") for image in ("a.jpg", "b.jpg") for class_id in (1, 2, 3, 4)])
    truth = frame([("a.jpg", 2, "1 9")])
    assert mean_dice(score_pairs(submission, truth)) == pytest.approx(7 / 8)


@pytest.mark.parametrize(
    ("which", "rows", "message"),
    [
        ("submission", [("a.jpg", 1, "1 2"), ("a.jpg", 1, "5 2")],
         "submission has more than one row for a.jpg class 1"),
        ("submission", [("a.jpg", 2, ""), ("a.jpg", 2, "5 2")],
         "submission has more than one row for a.jpg class 2"),
        ("truth", [("a.jpg", 3, "1 2"), ("a.jpg", 3, "1 2")],
         "truth has more than one row for a.jpg class 3"),
        ("submission", [("a.jpg", 4, "5 2 1 2")], "submission mask of a.jpg class 4: RLE runs are unsorted"),
        ("truth", [("a.jpg", 1, "1 2 3")], "truth mask of a.jpg class 1: RLE has an odd number"),
    ],
)
def test_score_pairs_rejects_bad_frames(which, rows, message):
    good = frame([("a.jpg", 1, "")])
    submission, truth = (frame(rows), good) if which == "submission" else (good, frame(rows))
    with pytest.raises(ValueError, match=message):
        score_pairs(submission, truth)


def test_mean_dice_of_nothing_is_nan():
    assert math.isnan(mean_dice(score_pairs(frame([]), frame([]))))
