"""Threshold search: exact Dice of hand-made cases, histogram search against brute force, held-out check,
the gate adopted only where it raises the held-out score, the thresholds document."""

import itertools
import json

import numpy as np
import pytest

from severstal.core.oofstats import OOFStatistics
from severstal.core.postprocess import DEFAULT_THRESHOLDS, ClassThresholds
from severstal.core.thresholds import (
    SearchGrid,
    best_setting,
    evaluate_thresholds,
    pair_dice,
    search_thresholds,
    setting_thresholds,
    thresholds_document,
    thresholds_from_document,
)

TRUE_POSITIVE = (100, 80, 60)  # class 1 (true area, predicted area, overlap): Dice 2/3 kept, 0 emptied
FALSE_POSITIVE = (0, 30, 0)  # Dice 0 kept, 1 emptied
MISSED = (50, 0, 0)  # Dice 0 either way


def class_1_statistics(images, folds, classifier=True):
    """One pixel threshold (0.5), no component sizes; only class 1 has anything.

    Args:
        images: per image ``((true area, predicted area, overlap), classifier probability)`` of class 1.
        folds: per image its fold.
    """
    count = len(images)
    predicted = np.zeros((count, 4, 1, 1), dtype=np.int32)
    overlap = np.zeros_like(predicted)
    true_area = np.zeros((count, 4), dtype=np.int32)
    true_area[:, 0], predicted[:, 0, 0, 0], overlap[:, 0, 0, 0] = np.array([areas for areas, _ in images]).T
    probabilities = np.full((count, 4), 0.5, dtype=np.float32)
    probabilities[:, 0] = [probability for _, probability in images]
    return OOFStatistics(
        image_ids=np.array([f"{i}.jpg" for i in range(count)]), folds=np.array(folds),
        pixel_thresholds=np.array([0.5]), min_component_sizes=np.array([0]), predicted_area=predicted,
        intersection=overlap, true_area=true_area, classifier_probabilities=probabilities if classifier else None)


def hand_statistics(classifier=True):
    """Three images: a true positive (Dice 2/3), a false positive of 30 pixels and a missed defect of
    50; classifier 0.9, 0.4, 0.2; folds 0, 0, 1."""
    return class_1_statistics([(TRUE_POSITIVE, 0.9), (FALSE_POSITIVE, 0.4), (MISSED, 0.2)], [0, 0, 1], classifier)


def gate_statistics(folds=(0, 0, 1, 1), second_fold_first_image=FALSE_POSITIVE):
    """Four images: each fold a low-probability image (0.2, 0.3) and a high-probability true positive.

    Fold 0's low one is a false positive; fold 1's is ``second_fold_first_image``. Gating at 0.5
    removes the low ones.
    """
    return class_1_statistics([(FALSE_POSITIVE, 0.2), (TRUE_POSITIVE, 0.9), (second_fold_first_image, 0.3),
                               (TRUE_POSITIVE, 0.8)], list(folds))


def grid(min_areas, classifier_thresholds, pixel_thresholds=(0.5,), min_component_sizes=(0,)):
    return SearchGrid(tuple(pixel_thresholds), tuple(min_component_sizes), tuple(min_areas),
                      tuple(classifier_thresholds))


@pytest.mark.parametrize("thresholds, class_1", [
    (DEFAULT_THRESHOLDS, 2 / 9),  # (2/3 + 0 + 0) / 3
    (ClassThresholds(min_area=30), 2 / 9),  # 30 pixels reach a minimum of 30
    (ClassThresholds(min_area=31), 5 / 9),  # the false positive goes: (2/3 + 1 + 0) / 3
    (ClassThresholds(min_area=81), 1 / 3),  # the true positive goes too
    (ClassThresholds(classifier_threshold=0.4), 2 / 9),  # 0.4 is not below 0.4: kept
    (ClassThresholds(classifier_threshold=0.5), 5 / 9),
    (ClassThresholds(classifier_threshold=0.95), 1 / 3),
])
def test_evaluate_thresholds_hand_computed(thresholds, class_1):
    per_class, mean = evaluate_thresholds(hand_statistics(), thresholds)
    np.testing.assert_allclose(per_class, [class_1, 1, 1, 1], rtol=0, atol=1e-15)
    assert mean == pytest.approx((class_1 + 3) / 4, abs=1e-15)


def test_pair_dice_rejects_settings_off_the_grid_and_gates_without_a_classifier():
    with pytest.raises(ValueError, match="pixel_threshold"):
        pair_dice(hand_statistics(), ClassThresholds(pixel_threshold=0.55))
    with pytest.raises(ValueError, match="min_component_size"):
        pair_dice(hand_statistics(), ClassThresholds(min_component_size=64))
    with pytest.raises(ValueError, match="no classifier"):
        pair_dice(hand_statistics(classifier=False), ClassThresholds(classifier_threshold=0.5))
    assert pair_dice(hand_statistics(classifier=False), DEFAULT_THRESHOLDS)[1, 0] == 0.0


def test_search_hand_case_picks_the_best_and_the_simplest_on_ties():
    # (min area 50, no gate) and (no min area, gate 0.5) both reach 5/9: the ungated one wins.
    result = search_thresholds(hand_statistics(), grid([0, 50, 100], [0.0, 0.5]))
    assert result.thresholds[0] == ClassThresholds(min_area=50)
    assert result.thresholds[1:] == [DEFAULT_THRESHOLDS] * 3  # nothing to gain: the defaults
    np.testing.assert_allclose(result.tuned_per_class, [5 / 9, 1, 1, 1], atol=1e-15)
    np.testing.assert_allclose(result.default_per_class, [2 / 9, 1, 1, 1], atol=1e-15)
    np.testing.assert_allclose(result.score_tables[0, 0, 0], [[2 / 9, 5 / 9], [5 / 9, 5 / 9], [1 / 3, 1 / 3]],
                               atol=1e-15)
    assert result.images == 3 and result.positives.tolist() == [2, 0, 0, 0] and result.gated


def test_search_without_classifier_does_not_gate():
    result = search_thresholds(hand_statistics(classifier=False), grid([0, 100], [0.0, 0.5]))
    assert not result.gated and result.grid.classifier_thresholds == (0.0,)
    assert result.thresholds[0] == ClassThresholds(min_area=100)  # 1/3 beats 2/9
    assert result.score_tables.shape == (4, 1, 1, 2, 1)


def test_held_out_scores_of_the_hand_case():
    # Fold 0 = images a, b; fold 1 = image c. Tuned on fold 1 alone (only a missed defect), every
    # setting ties and the defaults win; scored on fold 0: (2/3 + 0) for class 1. Tuned on fold 0,
    # min area 50 is best (2/3 + 1); on fold 1 image c scores 0 whatever the setting.
    result = search_thresholds(hand_statistics(), grid([0, 50, 100], [0.0, 0.5]))
    assert result.heldout_thresholds[0][0] == DEFAULT_THRESHOLDS
    assert result.heldout_thresholds[1][0] == ClassThresholds(min_area=50)
    np.testing.assert_allclose(result.heldout_per_class, [2 / 9, 1, 1, 1], atol=1e-15)
    assert result.heldout_per_fold[0] == pytest.approx((2 / 3 + 0 + 6) / 8)
    assert result.heldout_per_fold[1] == pytest.approx(3 / 4)
    assert result.heldout_mean == pytest.approx((2 / 9 + 3) / 4)
    np.testing.assert_array_equal(result.gate_heldout_gain, 0)  # gate and min area 50 tie: the gate gains nothing


@pytest.mark.parametrize("stats, search_grid, gain, chosen, tuned, gated_in_sample", [
    # Fold 0's low-probability image is a false positive, fold 1's a true positive. In-sample the gate
    # trades 2/3 for 1: (1 + 2/3 + 0 + 2/3) / 4 = 7/12 against (0 + 3 * 2/3) / 4 = 1/2. Held out, fold 1
    # alone keeps its true positive (no gate; fold 0 scores 2/3 either way) and fold 0 alone gates,
    # which costs fold 1 its true positive: gated 2/3 + 2/3, ungated 2/3 + 4/3, a gain of -2/3 / 4.
    (gate_statistics(second_fold_first_image=TRUE_POSITIVE), grid([0], [0.0, 0.5]), -1 / 6,
     DEFAULT_THRESHOLDS, 1 / 2, 7 / 12),
    # The hand case, no minimum area of 50: in-sample the gate (5/9) beats min area 100 (1/3). Held out,
    # fold 1 alone (a missed defect) ties everywhere, defaults; fold 0 alone gates or takes min area 100
    # (both drop fold 1's image, Dice 0 anyway): held-out 2/3 + 0 both ways, a gain of 0.
    (hand_statistics(), grid([0, 100], [0.0, 0.5]), 0.0, ClassThresholds(min_area=100), 1 / 3, 5 / 9),
])
def test_a_gate_that_only_raises_the_in_sample_score_is_not_adopted(stats, search_grid, gain, chosen, tuned,
                                                                     gated_in_sample):
    result = search_thresholds(stats, search_grid)
    assert result.score_tables[0].max() == pytest.approx(gated_in_sample, abs=1e-15)  # in-sample the gate wins
    assert result.gate_heldout_gain[0] == pytest.approx(gain, abs=1e-15)
    np.testing.assert_array_equal(result.gate_heldout_gain[1:], 0)
    assert result.gate_adopted.tolist() == [False] * 4
    assert result.thresholds[0] == chosen and result.thresholds[0].classifier_threshold == 0
    assert result.tuned_per_class[0] == pytest.approx(tuned, abs=1e-15)


def test_a_gate_that_raises_the_held_out_score_is_adopted():
    # Both folds' low-probability images are false positives: each fold alone gates at 0.5 and
    # gains 1 on the other, so held-out (1 + 2/3 + 1 + 2/3) / 4 = 5/6 against (0 + 2/3 + 0 + 2/3) / 4.
    result = search_thresholds(gate_statistics(), grid([0], [0.0, 0.5]))
    gate = ClassThresholds(classifier_threshold=0.5)
    assert result.gate_adopted.tolist() == [True, False, False, False]
    np.testing.assert_allclose(result.gate_heldout_gain, [5 / 6 - 1 / 3, 0, 0, 0], rtol=0, atol=1e-15)
    assert result.thresholds == [gate] + [DEFAULT_THRESHOLDS] * 3
    np.testing.assert_allclose(result.tuned_per_class, [5 / 6, 1, 1, 1], atol=1e-15)
    # two folds: each held-out split takes the decision made on both (one fold has no held-out check,
    # so tuning on fold 1 alone would not gate)
    assert result.heldout_thresholds[0][0] == result.heldout_thresholds[1][0] == gate
    assert search_thresholds(gate_statistics().select(np.array([2, 3])), grid([0], [0.0, 0.5])).thresholds[0] == \
        DEFAULT_THRESHOLDS
    np.testing.assert_allclose(result.heldout_per_class, [5 / 6, 1, 1, 1], atol=1e-15)
    assert result.heldout_per_fold == {0: pytest.approx((5 / 3 + 6) / 8), 1: pytest.approx((5 / 3 + 6) / 8)}


@pytest.mark.parametrize("folds", [(0, 0, 0, 0), (3, 3, 3, 3)])
def test_one_fold_adopts_no_gate(folds):
    result = search_thresholds(gate_statistics(folds), grid([0], [0.0, 0.5]))
    assert result.score_tables[0, 0, 0, 0].tolist() == pytest.approx([1 / 3, 5 / 6])  # in-sample the gate wins
    assert result.gate_heldout_gain is None and result.gate_adopted.tolist() == [False] * 4
    assert result.thresholds == [DEFAULT_THRESHOLDS] * 4


def test_thresholds_document_records_the_gate_decision_and_the_predictions():
    result = search_thresholds(gate_statistics(), grid([0], [0.0, 0.5]))
    tuned_on = {"tta": ["none", "hflip"], "precision": "float32"}
    document = thresholds_document(result, "demo", {"tune": {}}, 2, {"a.npz": "sha256:a"}, {"seg": {0: "sha256:w"}},
                                   "2026-01-01T00:00:00+00:00", tuned_on=tuned_on)
    assert document["format_version"] == 3 and document["tuned_on"] == tuned_on
    assert [(values["gate_heldout_gain"], values["gate_adopted"]) for values in document["per_class"].values()] == [
        (0.5, True), (0.0, False), (0.0, False), (0.0, False)]
    assert json.loads(json.dumps(document)) == document
    assert thresholds_document(result, "demo", {}, 2, {}, {}, "")["tuned_on"] is None
    no_classifier = search_thresholds(hand_statistics(classifier=False), grid([0], [0.0, 0.5]))
    per_class = thresholds_document(no_classifier, "demo", {}, 2, {}, {}, "")["per_class"]
    assert {(values["gate_heldout_gain"], values["gate_adopted"]) for values in per_class.values()} == {(None, False)}


def random_statistics(seed, count=40, folds=3, classifier=True):
    rng = np.random.default_rng(seed)
    pixels, sizes = np.array([0.3, 0.5, 0.7]), np.array([0, 10])
    true_area = np.where(rng.random((count, 4)) < 0.5, rng.integers(1, 60, (count, 4)), 0)
    predicted = rng.integers(0, 80, (count, 4, 3, 2)) * (rng.random((count, 4, 1, 1)) < 0.7)
    overlap = rng.integers(0, np.minimum(predicted, true_area[..., None, None]) + 1)
    return OOFStatistics(
        image_ids=np.array([f"{i}.jpg" for i in range(count)]), folds=rng.permutation(np.arange(count) % folds),
        pixel_thresholds=pixels, min_component_sizes=sizes, predicted_area=predicted.astype(np.int32),
        intersection=overlap.astype(np.int32), true_area=true_area.astype(np.int32),
        classifier_probabilities=rng.random((count, 4)).astype(np.float32) if classifier else None)


RANDOM_GRID = grid([0, 5, 20, 50], [0.0, 0.3, 0.6], pixel_thresholds=(0.3, 0.5, 0.7), min_component_sizes=(0, 10))
UNGATED_GRID = grid([0, 5, 20, 50], [0.0], pixel_thresholds=(0.3, 0.5, 0.7), min_component_sizes=(0, 10))


def brute_force(stats, search_grid):
    """Class mean Dice of every setting, and the simplest best setting, by evaluating each one."""
    tables = np.zeros((4, *search_grid.shape))
    for index in itertools.product(*map(range, search_grid.shape)):
        tables[(slice(None), *index)] = pair_dice(stats, setting_thresholds(search_grid, index)).mean(axis=0)
    preference = sorted(itertools.product(*map(range, search_grid.shape)),
                        key=lambda i: (i[3], i[2], i[1], abs(search_grid.pixel_thresholds[i[0]] - 0.5), i[0]))
    best = [next(setting_thresholds(search_grid, index) for index in preference
                 if tables[(channel, *index)] >= tables[channel].max() - 1e-12) for channel in range(4)]
    return tables, best


def brute_force_heldout(stats, search_grid):
    """Class mean Dice of each fold under :func:`brute_force`'s best setting on the other folds."""
    pairs = np.zeros((stats.count, 4))
    for fold in np.unique(stats.folds):
        own = stats.folds == fold
        pairs[own] = pair_dice(stats.select(own), brute_force(stats.select(~own), search_grid)[1])
    return pairs.mean(axis=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("classifier", [True, False])
def test_histogram_search_equals_brute_force(seed, classifier):
    stats = random_statistics(seed, classifier=classifier)
    result = search_thresholds(stats, RANDOM_GRID)
    tables, best = brute_force(stats, result.grid)
    np.testing.assert_allclose(result.score_tables, tables, rtol=0, atol=1e-12)
    ungated_tables, ungated_best = brute_force(stats, UNGATED_GRID)
    if classifier:
        gain = brute_force_heldout(stats, RANDOM_GRID) - brute_force_heldout(stats, UNGATED_GRID)
        np.testing.assert_allclose(result.gate_heldout_gain, gain, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(result.gate_adopted, gain > 1e-9)
    else:
        assert result.gate_heldout_gain is None and not result.gate_adopted.any()
    adopted = result.gate_adopted
    assert result.thresholds == [best[c] if adopted[c] else ungated_best[c] for c in range(4)]
    np.testing.assert_allclose(result.tuned_per_class, np.where(adopted, tables.reshape(4, -1).max(axis=1),
                                                                ungated_tables.reshape(4, -1).max(axis=1)), atol=1e-12)
    assert result.tuned_mean >= result.default_mean


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("folds", [2, 3, 4])
def test_held_out_equals_tuning_on_the_other_folds(seed, folds):
    # Nested: with three folds or more, fold k's thresholds are the whole search (gate decision
    # included) run without fold k; with two, the other fold's best under the decision made on both.
    stats = random_statistics(seed, count=60, folds=folds)
    result = search_thresholds(stats, RANDOM_GRID)
    heldout_pairs = np.zeros((stats.count, 4))
    for fold in range(folds):
        others = stats.select(stats.folds != fold)
        if folds >= 3:
            expected = search_thresholds(others, RANDOM_GRID).thresholds
        else:
            gated, ungated = brute_force(others, RANDOM_GRID)[1], brute_force(others, UNGATED_GRID)[1]
            expected = [gated[c] if result.gate_adopted[c] else ungated[c] for c in range(4)]
        assert result.heldout_thresholds[fold] == expected
        own = stats.folds == fold
        heldout_pairs[own] = pair_dice(stats.select(own), expected)
        assert result.heldout_per_fold[fold] == pytest.approx(heldout_pairs[own].mean(), abs=1e-12)
    np.testing.assert_allclose(result.heldout_per_class, heldout_pairs.mean(axis=0), atol=1e-12)
    assert result.heldout_mean <= result.tuned_mean + 1e-12  # in-sample tuning is never worse


def test_a_single_fold_has_no_held_out_score():
    stats = random_statistics(0, folds=1)
    result = search_thresholds(stats, RANDOM_GRID)
    assert result.heldout_per_class is None and result.heldout_mean is None and result.heldout_per_fold == {}
    assert result.gate_heldout_gain is None and not result.gate_adopted.any()
    assert all(setting.classifier_threshold == 0 for setting in result.thresholds)


def test_best_setting_tie_order():
    search_grid = grid([0, 10], [0.0, 0.5], pixel_thresholds=(0.3, 0.45, 0.55, 0.7), min_component_sizes=(0, 5))
    scores = np.ones(search_grid.shape)
    assert best_setting(scores, search_grid) == (1, 0, 0, 0)  # 0.45 and 0.55 equally close to 0.5: the lower
    scores[:, :, 0, 0] = 0.5  # no gate and no minimum area both lose: a minimum area beats a gate
    assert best_setting(scores, search_grid) == (1, 0, 1, 0)
    scores[3, 1, 0, 1] = 1 + 1e-6  # a real improvement wins whatever its complexity
    assert best_setting(scores, search_grid) == (3, 1, 0, 1)


def test_search_rejects_statistics_on_another_grid():
    with pytest.raises(ValueError, match="grid asks"):
        search_thresholds(random_statistics(0), grid([0], [0.0], pixel_thresholds=(0.3, 0.5, 0.75),
                                                     min_component_sizes=(0, 10)))


@pytest.mark.parametrize("values", [
    {"min_areas": [0, 0], "classifier_thresholds": [0.0]},
    {"min_areas": [], "classifier_thresholds": [0.0]},
    {"min_areas": [-5, 0], "classifier_thresholds": [0.0]},
    {"min_areas": [0], "classifier_thresholds": [0.0, 1.5]},
    {"min_areas": [0]},
])
def test_search_grid_validation(values):
    with pytest.raises(ValueError):
        SearchGrid.from_dict({"pixel_thresholds": [0.5], "min_component_sizes": [0], **values})


def test_search_grid_round_trip():
    values = {"pixel_thresholds": [0.3, 0.5], "min_component_sizes": [0, 64], "min_areas": [0, 100],
              "classifier_thresholds": [0.0, 0.5], "ignored": 1}
    search_grid = SearchGrid.from_dict(values)
    assert search_grid.to_dict() == {key: values[key] for key in values if key != "ignored"}
    assert search_grid.shape == (2, 2, 2, 2)
    assert search_grid.matches([0.3, 0.5], [0, 64]) and not search_grid.matches([0.3, 0.5], [0, 60])


def test_thresholds_from_document():
    tuned = ClassThresholds(pixel_threshold=0.55, min_component_size=150, min_area=600, classifier_threshold=0.6)
    document = {"classes": {"1": tuned.to_dict(), "2": {}, "3": {}, "4": {}}}
    assert thresholds_from_document(document) == [tuned] + [DEFAULT_THRESHOLDS] * 3
    with pytest.raises(ValueError):
        thresholds_from_document({"thresholds": []})
