"""Threshold search: exact Dice of hand-made cases, histogram search against brute force, held-out check."""

import itertools

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
    thresholds_from_document,
)


def hand_statistics(classifier=True):
    """Three images, one pixel threshold (0.5), no component sizes; only class 1 has anything.

    Class 1: image 0 true 100, predicted 80, overlap 60 (Dice 2/3); image 1 true 0, predicted 30
    (a false positive); image 2 true 50, predicted 0. Classifier: 0.9, 0.4, 0.2.
    """
    predicted = np.zeros((3, 4, 1, 1), dtype=np.int32)
    overlap = np.zeros_like(predicted)
    true_area = np.zeros((3, 4), dtype=np.int32)
    predicted[:, 0, 0, 0] = [80, 30, 0]
    overlap[:, 0, 0, 0] = [60, 0, 0]
    true_area[:, 0] = [100, 0, 50]
    probabilities = np.full((3, 4), 0.5, dtype=np.float32)
    probabilities[:, 0] = [0.9, 0.4, 0.2]
    return OOFStatistics(
        image_ids=np.array(["a", "b", "c"]), folds=np.array([0, 0, 1]), pixel_thresholds=np.array([0.5]),
        min_component_sizes=np.array([0]), predicted_area=predicted, intersection=overlap, true_area=true_area,
        classifier_probabilities=probabilities if classifier else None)


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
    # without a gate on the grid's area axis, the classifier must do it
    assert search_thresholds(hand_statistics(), grid([0, 100], [0.0, 0.5])).thresholds[0] == ClassThresholds(
        classifier_threshold=0.5)


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


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("classifier", [True, False])
def test_histogram_search_equals_brute_force(seed, classifier):
    stats = random_statistics(seed, classifier=classifier)
    result = search_thresholds(stats, RANDOM_GRID)
    tables, best = brute_force(stats, result.grid)
    np.testing.assert_allclose(result.score_tables, tables, rtol=0, atol=1e-12)
    assert result.thresholds == best
    np.testing.assert_allclose(result.tuned_per_class, tables.reshape(4, -1).max(axis=1), atol=1e-12)
    assert result.tuned_mean >= result.default_mean


@pytest.mark.parametrize("seed", range(3))
def test_held_out_equals_tuning_on_the_other_folds(seed):
    stats = random_statistics(seed, count=60, folds=3)
    result = search_thresholds(stats, RANDOM_GRID)
    heldout_pairs = np.zeros((stats.count, 4))
    for fold in range(3):
        others = search_thresholds(stats.select(stats.folds != fold), RANDOM_GRID)
        assert result.heldout_thresholds[fold] == others.thresholds
        own = stats.folds == fold
        heldout_pairs[own] = pair_dice(stats.select(own), others.thresholds)
        assert result.heldout_per_fold[fold] == pytest.approx(heldout_pairs[own].mean(), abs=1e-12)
    np.testing.assert_allclose(result.heldout_per_class, heldout_pairs.mean(axis=0), atol=1e-12)
    assert result.heldout_mean <= result.tuned_mean + 1e-12  # in-sample tuning is never worse


def test_a_single_fold_has_no_held_out_score():
    stats = random_statistics(0, folds=1)
    result = search_thresholds(stats, RANDOM_GRID)
    assert result.heldout_per_class is None and result.heldout_mean is None and result.heldout_per_fold == {}


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
