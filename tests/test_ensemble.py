"""Pure ensemble functions: averaging, rows, layouts, shards, the ablation accumulator."""

import numpy as np
import pandas as pd
import pytest

from severstal.core.ensemble import (
    AblationAccumulator,
    ablation_table,
    add_scored_variant,
    best_and_worst,
    empty_rows,
    image_scores,
    mask_rows,
    mean_probabilities,
    merge_shards,
    parse_shard,
    rows_frame,
    select_folds,
    shard_file_name,
    shard_ids,
    submission_csv,
    variant_masks,
    variant_pairs,
    without_gate,
)
from severstal.core.metric import score_pairs
from severstal.core.postprocess import ClassThresholds
from severstal.core.submission import check_submission


def test_mean_probabilities_of_folds_and_flips_by_hand():
    folds = [np.array([[0.2, 0.4]]), np.array([[0.4, 0.0]]), np.array([[0.9, 0.5]])]
    mean = mean_probabilities(iter(folds))  # a generator works: one prediction at a time
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, [[0.5, 0.3]], rtol=0, atol=1e-7)


def test_mean_probabilities_arithmetic_not_rms():
    # RMS averaging would give sqrt((0 + 1) / 2) = 0.707...; the arithmetic mean is 0.5
    assert mean_probabilities([np.zeros(1), np.ones(1)])[0] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [[], [np.zeros((2, 2)), np.zeros((2, 3))]])
def test_mean_probabilities_rejects(bad):
    with pytest.raises(ValueError):
        mean_probabilities(bad)


@pytest.mark.parametrize("spec, expected", [
    ("all", [0, 1, 2]), (None, [0, 1, 2]), ("2,0", [0, 2]), ([1], [1]), ("ALL", [0, 1, 2]), ((2, 0), [0, 2]), (1, [1]),
])
def test_select_folds(spec, expected):
    assert select_folds(spec, [2, 0, 1]) == expected


@pytest.mark.parametrize("spec, available, message", [
    ("3", [0, 1], "fold\\(s\\) \\[3\\] are not available; available: \\[0, 1\\]"),
    ("a,b", [0, 1], "fold numbers"),
    ("all", [], "no fold to use"),
])
def test_select_folds_rejects(spec, available, message):
    with pytest.raises(ValueError, match=message):
        select_folds(spec, available)


def test_mask_rows_encode_each_class_and_empty_masks():
    masks = np.zeros((4, 3, 4), dtype=np.uint8)
    masks[0:2, 0, 1] = 1  # class 2: column-major pixels 1, 2
    masks[3, 2, 3] = 1  # class 4: pixel 2 * 4 + 3 + 1 = 12
    assert mask_rows("a.jpg", masks) == [("a.jpg", 1, ""), ("a.jpg", 2, "1 2"), ("a.jpg", 3, ""),
                                         ("a.jpg", 4, "12 1")]
    assert empty_rows("b.jpg") == [("b.jpg", c, "") for c in (1, 2, 3, 4)]


ROWS = [("b.jpg", 2, "5 3"), ("b.jpg", 1, ""), ("a.jpg", 1, "1 2"), ("a.jpg", 2, ""),
        ("a.jpg", 3, ""), ("a.jpg", 4, ""), ("b.jpg", 3, ""), ("b.jpg", 4, "")]


def test_submission_csv_long_layout_sorted_with_empty_rows():
    text = submission_csv(rows_frame(ROWS), "long")
    assert text.splitlines() == [
        "ImageId,EncodedPixels,ClassId",
        "a.jpg,1 2,1", "a.jpg,,2", "a.jpg,,3", "a.jpg,,4",
        "b.jpg,,1", "b.jpg,5 3,2", "b.jpg,,3", "b.jpg,,4",
    ]


def test_submission_csv_legacy_layout_and_validity():
    text = submission_csv(rows_frame(ROWS), "legacy")
    lines = text.splitlines()
    assert lines[:3] == ["ImageId_ClassId,EncodedPixels", "a.jpg_1,1 2", "a.jpg_2,"]
    assert lines[6] == "b.jpg_2,5 3"
    frame = pd.read_csv(pd.io.common.StringIO(text), dtype=str, keep_default_na=False)
    assert check_submission(frame, ["a.jpg", "b.jpg"]) == []


def test_submission_csv_rejects_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        submission_csv(rows_frame(ROWS), "wide")


@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("2/4", (2, 4)), ("4/4", (4, 4))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "1", "a/b", "1/2/3"])
def test_parse_shard_rejects(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_shard_ids_by_hand():
    ids = ["e", "a", "d", "c", "b"]
    assert [shard_ids(ids, i, 2) for i in (1, 2)] == [["a", "b", "c"], ["d", "e"]]
    assert [shard_ids(ids, i, 3) for i in (1, 2, 3)] == [["a", "b"], ["c", "d"], ["e"]]
    assert shard_file_name(2, 3) == "part-2-of-3.csv"


@pytest.mark.parametrize("total", [0, 1, 7, 10, 23])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_cover_every_id_exactly_once_in_order(total, count):
    ids = [f"{n:03d}.jpg" for n in np.random.default_rng(total).permutation(total)]
    parts = [shard_ids(ids, index, count) for index in range(1, count + 1)]
    assert sum(parts, []) == sorted(ids)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1


def test_merge_shards_reproduces_the_whole_and_detects_problems():
    whole = rows_frame(ROWS)
    parts = {1: whole[whole["ImageId"] == "a.jpg"], 2: whole[whole["ImageId"] == "b.jpg"]}
    pd.testing.assert_frame_equal(merge_shards({2: parts[2], 1: parts[1]}, 2), whole)
    with pytest.raises(ValueError, match=r"missing \[2\]"):
        merge_shards({1: parts[1]}, 2)
    with pytest.raises(ValueError, match="a.jpg is in shard 1 and shard 2"):
        merge_shards({1: parts[1], 2: whole}, 2)
    with pytest.raises(ValueError, match=r"unexpected \[3\]"):
        merge_shards({1: parts[1], 2: parts[2], 3: parts[2]}, 2)


def test_variant_masks_apply_each_step():
    probabilities = np.zeros((4, 6, 4), dtype=np.float32)
    probabilities[0, 0, 0] = 0.6  # class 1: one pixel above 0.5, a component of 1
    probabilities[:, 3:5, 1] = 0.45  # class 2: 8 pixels between 0.4 and 0.5
    probabilities[1, 1, 2] = 0.9  # class 3: one confident pixel, classifier says absent
    tuned = [ClassThresholds(0.5, 2, 0, 0.0), ClassThresholds(0.4, 0, 0, 0.0),
             ClassThresholds(0.5, 0, 0, 0.5), ClassThresholds()]
    masks = variant_masks(probabilities, tuned, np.array([1.0, 1.0, 0.2, 1.0]))
    areas = {name: np.count_nonzero(mask, axis=(0, 1)).tolist() for name, mask in masks.items()}
    assert areas == {
        "empty": [0, 0, 0, 0],
        "raw": [1, 0, 1, 0],  # 0.5 threshold, nothing removed
        "pixel_area": [0, 8, 1, 0],  # component size 2 removes class 1; 0.4 finds class 2; no gate
        "gate": [0, 8, 0, 0],  # the classifier removes class 3
    }
    assert [t.classifier_threshold for t in without_gate(tuned)] == [0.0] * 4


def test_ablation_accumulator_pairs_and_table_by_hand():
    accumulator = AblationAccumulator(("empty", "raw"))
    truth = np.zeros((2, 2, 4), dtype=np.uint8)
    truth[0, :, 0] = 1  # class 1: 2 true pixels
    raw = np.zeros_like(truth)
    raw[:, 0, 0] = 1  # class 1: 2 predicted, 1 shared -> Dice 0.5
    raw[0, 0, 3] = 1  # class 4: false positive -> Dice 0
    accumulator.add("b.jpg", truth, {"empty": np.zeros_like(truth), "raw": raw})
    accumulator.add("a.jpg", np.zeros_like(truth), {"empty": np.zeros_like(truth), "raw": np.zeros_like(truth)})
    pairs = accumulator.pairs()
    assert pairs["ImageId"].tolist() == ["a.jpg"] * 4 + ["b.jpg"] * 4
    assert pairs["true_area"].tolist() == [0, 0, 0, 0, 2, 0, 0, 0]
    assert pairs["raw_area"].tolist() == [0, 0, 0, 0, 2, 0, 0, 1]
    assert pairs["raw_dice"].tolist() == [1, 1, 1, 1, 0.5, 1, 1, 0]
    assert pairs["empty_dice"].tolist() == [1, 1, 1, 1, 0, 1, 1, 1]
    table = ablation_table(pairs)
    assert table.index.tolist() == ["empty", "raw"]
    assert table.loc["empty", "mean"] == pytest.approx(7 / 8)
    assert table.loc["raw", "mean"] == pytest.approx(6.5 / 8)
    assert table.loc["raw", "class_1"] == pytest.approx(0.75)
    assert table.loc["raw", "class_4"] == pytest.approx(0.5)
    assert table.loc["raw", "gain"] == pytest.approx(-0.5 / 8)
    assert np.isnan(table.loc["empty", "gain"])


def test_ablation_accumulator_rejects_missing_variant():
    with pytest.raises(ValueError, match="raw"):
        AblationAccumulator(("empty", "raw")).add("a.jpg", np.zeros((2, 2, 4)), {"empty": np.zeros((2, 2, 4))})


def test_final_variant_from_score_pairs_matches_accumulated_masks():
    accumulator = AblationAccumulator(("gate",))
    truth = np.zeros((256, 1600, 4), dtype=np.uint8)
    truth[10:20, 5:9, 2] = 1
    predicted = np.zeros_like(truth)
    predicted[12:30, 5:7, 2] = 1
    accumulator.add("x.jpg", truth, {"gate": predicted})
    submission = rows_frame(mask_rows("x.jpg", predicted))
    truth_frame = rows_frame(mask_rows("x.jpg", truth))
    pairs = add_scored_variant(accumulator.pairs(), score_pairs(submission, truth_frame))
    np.testing.assert_array_equal(pairs["final_dice"], pairs["gate_dice"])
    assert pairs.loc[2, "final_dice"] == pytest.approx(2 * 16 / (40 + 36))
    with pytest.raises(ValueError, match="same"):
        add_scored_variant(accumulator.pairs(), score_pairs(rows_frame(empty_rows("y.jpg")), truth_frame))


def test_best_and_worst_skip_trivial_images_and_do_not_overlap():
    scored = pd.DataFrame({
        "ImageId": ["a", "b", "c", "d", "e"], "dice": [1.0, 0.2, 0.9, 0.2, 1.0],
        "true_area": [0, 5, 5, 5, 5], "predicted_area": [0, 3, 5, 0, 5]})
    scores = image_scores(scored)
    assert scores["informative"].tolist() == [False, True, True, True, True]
    assert best_and_worst(scores, 2) == (["e", "c"], ["b", "d"])
    assert best_and_worst(scores, 3) == (["e"], ["b", "d", "c"])


def test_variant_pairs_has_score_pairs_columns():
    accumulator = AblationAccumulator(("raw",))
    accumulator.add("a.jpg", np.zeros((2, 2, 4)), {"raw": np.ones((2, 2, 4))})
    frame = variant_pairs(accumulator.pairs(), "raw")
    assert frame.columns.tolist() == ["ImageId", "ClassId", "predicted_area", "true_area", "dice"]
    assert frame["predicted_area"].tolist() == [4, 4, 4, 4]
    assert frame["dice"].tolist() == [0, 0, 0, 0]
