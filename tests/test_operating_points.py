"""Operating points (issue 13): image-level recall, precision and false alarms, the objectives that choose
thresholds by them (``kaggle``, ``recall:R``, ``f1``), checked by hand and against a brute-force oracle that
applies ``core.postprocess`` to every image at every grid setting; the folders layout's per-class decision
thresholds and their decision rule; the tune stage on a folders data set."""

import functools
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from severstal import cli
from severstal.core.classification import (
    Objective,
    OperatingPoint,
    decide_classes,
    decision_thresholds,
    flag_threshold,
    objective_choices,
    operating_points,
    precision_recall_points,
    thresholded_classes,
)
from severstal.core.oofstats import OOFStatistics
from severstal.core.postprocess import DEFAULT_THRESHOLDS, ClassThresholds, postprocess_class
from severstal.core.thresholds import (
    SearchGrid,
    found_pairs,
    pair_dice,
    search_thresholds,
    setting_thresholds,
    thresholds_document,
)
from severstal.infra.artifacts import OOF_KEYS, Paths
from severstal.infra.config import load_config
from severstal.infra.figures import operating_points_figure, save_figure
from severstal.infra.oof_files import save_classifier_oof
from severstal.infra.stamps import Stamp
from severstal.stages import tune

# ----------------------------------------------------------------------------- objectives and counts by hand


@pytest.mark.parametrize("text, kind, target, canonical", [
    ("kaggle", "kaggle", None, "kaggle"),
    (" F1 ", "f1", None, "f1"),
    ("recall:0.95", "recall", 0.95, "recall:0.95"),
    ("recall:1", "recall", 1.0, "recall:1.0"),
    ("recall:1e-3", "recall", 0.001, "recall:0.001"),
])
def test_objectives_parse_and_print(text, kind, target, canonical):
    objective = Objective.parse(text)
    assert (objective.kind, objective.target, str(objective)) == (kind, target, canonical)
    assert Objective.parse(str(objective)) == objective


@pytest.mark.parametrize("text, message", [
    ("recall:1.5", "recall:1.5: R must be in (0, 1]"),
    ("recall:0", "recall:0: R must be in (0, 1]"),
    ("recall:-0.2", "recall:-0.2: R must be in (0, 1]"),
    ("recall:nan", "recall:nan: R must be in (0, 1]"),
    ("recall:high", "recall:high: R must be a number in (0, 1]"),
    ("recall", "recall: R must be a number in (0, 1]"),
    ("f1:0.5", "f1:0.5: expected kaggle, f1 or recall:R"),
    ("dice", "dice: expected kaggle, f1 or recall:R"),
])
def test_bad_objectives_are_refused(text, message):
    with pytest.raises(ValueError) as error:
        Objective.parse(text)
    assert str(error.value).startswith(message)


def test_operating_point_rates_by_hand():
    point = OperatingPoint(tp=3, fp=1, positives=4, negatives=6)
    assert (point.fn, point.recall, point.precision, point.false_alarm_rate, point.f1) == (1, 0.75, 0.75, 1 / 6, 0.75)
    assert point.to_dict() == {"recall": 0.75, "precision": 0.75, "false_alarm_rate": 0.16666667, "f1": 0.75,
                               "tp": 3, "fp": 1, "fn": 1, "positives": 4, "negatives": 6}
    nothing = OperatingPoint(tp=0, fp=0, positives=0, negatives=0)
    assert (nothing.recall, nothing.precision, nothing.false_alarm_rate, nothing.f1) == (None, None, None, None)
    assert point + OperatingPoint(1, 2, 1, 3) == OperatingPoint(4, 3, 5, 9)
    found = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
    present = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], bool)
    assert operating_points(found, present) == [OperatingPoint(1, 1, 2, 2), OperatingPoint(1, 1, 1, 3)]


@pytest.mark.parametrize("objective, expected", [
    ("recall:0.5", [False, True, False, False, False]),  # tp >= 2: fp 1, 2, 4, 6
    ("recall:0.75", [False, False, False, True, False]),  # tp >= 3: fp 4, 6
    ("recall:1", [False, False, False, False, True]),  # only tp 4 reaches it
    ("f1", [False, True, False, False, False]),  # F1 2 tp / (tp + fp + 4): 2/7, 4/7, 4/8, 6/11, 4/7: fewer fp
])
def test_objective_choices_by_hand(objective, expected):
    tp, fp = np.array([1, 2, 2, 3, 4]), np.array([2, 1, 2, 4, 6])
    np.testing.assert_array_equal(objective_choices(tp, fp, 4, Objective.parse(objective)), expected)


def test_objective_choices_fall_back_to_the_highest_recall_and_need_an_image_level_objective():
    tp, fp = np.array([1, 2, 2]), np.array([0, 3, 1])
    np.testing.assert_array_equal(objective_choices(tp, fp, 4, Objective.parse("recall:0.9")), [False, False, True])
    np.testing.assert_array_equal(objective_choices(tp * 0, fp, 0, Objective.parse("recall:0.9")), [True, False, False])
    with pytest.raises(ValueError, match="kaggle"):
        objective_choices(tp, fp, 4, Objective.parse("kaggle"))


def test_precision_recall_points_and_their_front():
    recall, precision, front = precision_recall_points([0, 1, 2, 2, 3, 3, 0, 2], [0, 0, 1, 0, 5, 2, 3, 1], 3)
    np.testing.assert_allclose(recall, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1])  # (0, 0) finds nothing: no point
    np.testing.assert_allclose(precision, [0, 1, 1, 2 / 3, 3 / 5, 3 / 8])
    assert front.tolist() == [False, False, True, False, True, False]
    assert precision_recall_points([0, 0], [1, 2], 0)[0].size == 0


def test_operating_points_figure_draws_every_class(tmp_path):
    recall, precision, front = precision_recall_points([1, 2, 3], [0, 1, 4], 3)
    curves = [{"label": "class 1", "recall": recall, "precision": precision, "front": front,
               "chosen": (2 / 3, 2 / 3), "target": 0.6},
              {"label": "class 2", "recall": [], "precision": [], "front": [], "chosen": None, "target": 0.6}]
    figure = operating_points_figure(curves, "title")
    axes = [axis for axis in figure.axes if axis.get_title()]
    assert [axis.get_title() for axis in axes] == ["class 1", "class 2"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["Pareto front", "target recall 0.6", "chosen"]
    assert axes[1].texts[0].get_text() == "no image has this class"
    assert save_figure(figure, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- the post-processing search by hand

TRUE_POSITIVE = (100, 80, 60, 0.9)  # (true area, predicted area, overlap, classifier probability): Dice 2/3 kept
SMALL_FALSE_POSITIVE = (0, 30, 0, 0.4)
LARGE_FALSE_POSITIVE = (0, 200, 0, 0.8)
MISSED = (50, 0, 0, 0.9)  # nothing predicted: never found, whatever the setting


def hand_statistics(small_hit_overlap):
    """Class 1 of five images in one fold, with a small positive (area 20, probability 0.6) between the others;
    classes 2-4 empty. Found images (tp, fp) with 3 positives and 2 negatives, by (min area, classifier):
    (0, 0) 2, 2; (50, 0) 1, 1; (0, 0.5) 2, 1; (50, 0.5) 1, 1."""
    images = [TRUE_POSITIVE, SMALL_FALSE_POSITIVE, (200, 20, small_hit_overlap, 0.6), LARGE_FALSE_POSITIVE, MISSED]
    count = len(images)
    predicted, overlap = np.zeros((count, 4, 1, 1), np.int32), np.zeros((count, 4, 1, 1), np.int32)
    true_area, probabilities = np.zeros((count, 4), np.int32), np.full((count, 4), 0.5, np.float32)
    for i, (true, area, hit, probability) in enumerate(images):
        true_area[i, 0], predicted[i, 0, 0, 0], overlap[i, 0, 0, 0], probabilities[i, 0] = true, area, hit, probability
    return OOFStatistics(image_ids=np.array([f"{i}.jpg" for i in range(count)]), folds=np.zeros(count, int),
                         pixel_thresholds=np.array([0.5]), min_component_sizes=np.array([0]), predicted_area=predicted,
                         intersection=overlap, true_area=true_area, classifier_probabilities=probabilities)


HAND_GRID = SearchGrid((0.5,), (0,), (0, 50), (0.0, 0.5))
AREA_50 = ClassThresholds(min_area=50)
GATE_05 = ClassThresholds(classifier_threshold=0.5)


FOUND_AREA_50 = ((1, 1), 1 / 3, 1 / 2, 2 / 5)  # (tp, fp), recall, precision, F1; false alarms always 1/2
FOUND_GATE_05 = ((2, 1), 2 / 3, 2 / 3, 2 / 3)


@pytest.mark.parametrize("objective, small_hit_overlap, chosen, found, reached", [
    # Dice: (0, 0) 2/3; (50, 0), (0, 0.5), (50, 0.5) 5/3 (+ 2 * 20 / 220 for (0, 0.5) when the small hit overlaps)
    ("kaggle", 0, AREA_50, FOUND_AREA_50, None),
    ("recall:0.3", 0, AREA_50, FOUND_AREA_50, True),  # fp 1 at tp >= 1: three settings tie in Dice, the simplest
    ("recall:0.3", 20, GATE_05, FOUND_GATE_05, True),  # ... unless the small hit's Dice breaks the tie
    ("recall:0.6", 0, GATE_05, FOUND_GATE_05, True),  # tp >= 2 (2/3 >= 0.6): fp 2 or 1
    ("recall:1", 0, GATE_05, FOUND_GATE_05, False),  # out of reach: the highest recall (2/3), the fewest fp
    ("f1", 0, GATE_05, FOUND_GATE_05, None),  # F1 4/7, 2/5, 2/3, 2/5
])
def test_search_by_objective_hand_case(objective, small_hit_overlap, chosen, found, reached):
    result = search_thresholds(hand_statistics(small_hit_overlap), HAND_GRID, Objective.parse(objective))
    assert result.thresholds == [chosen] + [DEFAULT_THRESHOLDS] * 3  # nothing to find or to avoid: the defaults
    (tp, fp), recall, precision, f1 = found
    point = result.operating[0]
    assert point == OperatingPoint(tp, fp, positives=3, negatives=2)
    assert (point.recall, point.precision, point.false_alarm_rate, point.f1) == (recall, precision, 1 / 2, f1)
    assert result.operating[1:] == [OperatingPoint(0, 0, 0, 5)] * 3
    assert result.below_target() == ([0] if reached is False else [])
    np.testing.assert_array_equal(result.found_tables[0, :, 0, 0], [[[2, 2], [1, 1]], [[2, 1], [1, 1]]])
    document = thresholds_document(result, "demo", {}, 1, {}, {}, "")
    assert document["objective"] == str(Objective.parse(objective)) and document["heldout_operating_pooled"] is None
    assert document["operating"]["1"] == {"recall": round(recall, 8), "precision": round(precision, 8),
                                          "false_alarm_rate": 0.5, "f1": round(f1, 8), "tp": tp, "fp": fp,
                                          "fn": 3 - tp, "positives": 3, "negatives": 2, "target_reached": reached}
    assert document["operating"]["2"]["recall"] is None and document["operating"]["2"]["target_reached"] is None
    assert document["classes"]["1"] == chosen.to_dict() and document["heldout_operating"]["1"] == {}


def test_image_level_objectives_gate_without_a_gate_decision():
    stats = hand_statistics(0)
    two_folds = OOFStatistics(**{**vars(stats), "folds": np.array([0, 1, 0, 1, 0])})
    result = search_thresholds(two_folds, HAND_GRID, Objective.parse("recall:0.6"))
    assert result.thresholds[0] == GATE_05 and result.gate_adopted.tolist() == [True, False, False, False]
    assert result.gate_heldout_gain is None
    # fold 0 = images 0, 2, 4 (the three positives), fold 1 = images 1, 3 (the two false positives). Tuned on fold 1
    # alone (no positives: any recall will do), fp 1 at (50, 0), (0, 0.5) and (50, 0.5), Dice tied: the simplest.
    # Fold 0 then finds only the true positive (the hit of area 20 is below 50).
    assert result.heldout_thresholds[0][0] == AREA_50 and result.heldout_operating[0][0] == OperatingPoint(1, 0, 3, 0)
    # Tuned on fold 0 alone (no negatives): tp 2 at (0, 0) and (0, 0.5), Dice tied: the defaults, which find both
    # false positives of fold 1.
    assert result.heldout_thresholds[1][0] == DEFAULT_THRESHOLDS
    assert result.heldout_operating[1][0] == OperatingPoint(0, 2, 0, 2)
    pooled = thresholds_document(result, "demo", {}, 2, {}, {}, "")["heldout_operating_pooled"]["1"]
    assert pooled == OperatingPoint(1, 2, 3, 2).to_dict()


# ----------------------------------------------------------------------------- against a brute-force oracle

def one_row(stats, image, channel, setting):
    """``postprocess_class``'s arguments that reproduce one statistic: a one-row map whose ``area`` pixels are
    on at the setting's pixel threshold and component size (the statistics hold the area after both)."""
    pixel = list(stats.pixel_thresholds).index(setting.pixel_threshold)
    size = list(stats.min_component_sizes).index(setting.min_component_size)
    area = int(stats.predicted_area[image, channel, pixel, size])
    row = (np.arange(max(area, 1)) < area).astype(np.float32)[None]  # (1, W): 1.0 on, 0.0 off
    probability = None if stats.classifier_probabilities is None else stats.classifier_probabilities[image, channel]
    return row, ClassThresholds(min_area=setting.min_area, classifier_threshold=setting.classifier_threshold), \
        probability


@functools.cache
def oracle_case(seed, classifier=True):
    """Random statistics, their grid, and ``found`` (N, 4, P, C, A, G): every image at every setting through
    ``core.postprocess``. Areas and probabilities often sit exactly on the grid's minimum areas and thresholds."""
    rng = np.random.default_rng(seed)
    count, search_grid = 36, SearchGrid((0.3, 0.5, 0.7), (0, 10), (0, 5, 20, 40), (0.0, 0.25, 0.5, 0.75))
    if not classifier:
        search_grid = SearchGrid(search_grid.pixel_thresholds, search_grid.min_component_sizes, search_grid.min_areas,
                                 (0.0,))
    true_area = np.where(rng.random((count, 4)) < 0.45, rng.integers(1, 60, (count, 4)), 0)
    predicted = rng.choice([0, 1, 4, 5, 6, 19, 20, 21, 39, 40, 41, 70], (count, 4, 3, 2))
    predicted *= rng.random((count, 4, 1, 1)) < np.where(true_area > 0, 0.8, 0.4)[..., None, None]
    overlap = rng.integers(0, np.minimum(predicted, true_area[..., None, None]) + 1)
    probabilities = np.where(rng.random((count, 4)) < 0.5, rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], (count, 4)),
                             rng.random((count, 4)))
    stats = OOFStatistics(
        image_ids=np.array([f"{i}.jpg" for i in range(count)]), folds=rng.permutation(np.arange(count) % 3),
        pixel_thresholds=np.array(search_grid.pixel_thresholds), min_component_sizes=np.array([0, 10]),
        predicted_area=predicted.astype(np.int32), intersection=overlap.astype(np.int32),
        true_area=true_area.astype(np.int32),
        classifier_probabilities=probabilities.astype(np.float32) if classifier else None)
    found = np.zeros((count, 4, *search_grid.shape), dtype=bool)
    for index in itertools.product(*map(range, search_grid.shape)):
        setting = setting_thresholds(search_grid, index)
        for image, channel in itertools.product(range(count), range(4)):
            found[(image, channel, *index)] = postprocess_class(*one_row(stats, image, channel, setting)).any()
    return stats, search_grid, found


def simplest_first(search_grid):
    """Every setting index, the simplest first (the search's tie rule)."""
    return sorted(itertools.product(*map(range, search_grid.shape)),
                  key=lambda i: (i[3], i[2], i[1], abs(search_grid.pixel_thresholds[i[0]] - 0.5), i[0]))


def oracle_choice(stats, search_grid, found, rows, objective):
    """Per class the setting ``objective`` picks on the images ``rows``, and whether a recall target is reached,
    by looping over every setting."""
    chosen, reached = [], []
    settings = simplest_first(search_grid)
    dice = {index: pair_dice(stats, setting_thresholds(search_grid, index))[rows].sum(axis=0) for index in settings}
    for channel in range(4):
        present = stats.true_area[rows, channel] > 0
        positives = int(present.sum())
        tp = {index: int(np.sum(found[rows, channel][(slice(None), *index)] & present)) for index in settings}
        fp = {index: int(np.sum(found[rows, channel][(slice(None), *index)] & ~present)) for index in settings}
        if objective.kind == "recall":
            feasible = [i for i in settings if positives == 0 or tp[i] / positives >= objective.target]
            reached.append(bool(feasible))
            if not feasible:
                feasible = [i for i in settings if tp[i] == max(tp.values())]
        else:
            f1 = {}
            for i in settings:
                denominator = 2 * tp[i] + fp[i] + (positives - tp[i])
                f1[i] = 2 * tp[i] / denominator if denominator else 0.0
            feasible = [i for i in settings if f1[i] == max(f1.values())]
        fewest = [i for i in feasible if fp[i] == min(fp[j] for j in feasible)]
        best = max(dice[i][channel] for i in fewest)
        chosen.append(setting_thresholds(search_grid, next(i for i in fewest if dice[i][channel] >= best - 1e-9)))
    return chosen, reached


def oracle_points(stats, search_grid, found, rows, thresholds):
    """Per class the counts of ``thresholds`` on the images ``rows``, image by image."""
    points = []
    for channel, setting in enumerate(thresholds):
        index = tuple(values.index(value) for values, value in zip(
            (search_grid.pixel_thresholds, search_grid.min_component_sizes, search_grid.min_areas,
             search_grid.classifier_thresholds),
            (setting.pixel_threshold, setting.min_component_size, setting.min_area, setting.classifier_threshold),
            strict=True))
        tp = fp = positives = 0
        for image in np.flatnonzero(rows):
            has = stats.true_area[image, channel] > 0
            positives += has
            tp += bool(found[(image, channel, *index)]) and has
            fp += bool(found[(image, channel, *index)]) and not has
        points.append(OperatingPoint(int(tp), int(fp), int(positives), int(rows.sum() - positives)))
    return points


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("objective", ["kaggle", "recall:0.5", "recall:0.8", "recall:1", "f1"])
def test_search_equals_the_oracle(objective, seed):
    stats, search_grid, found = oracle_case(seed)
    objective = Objective.parse(objective)
    result = search_thresholds(stats, search_grid, objective)
    every = np.ones(stats.count, dtype=bool)
    # every setting's found images, and the tuned thresholds' counts and rates
    present = (stats.true_area > 0)[..., None, None, None, None]  # (N, 4, 1, 1, 1, 1)
    np.testing.assert_array_equal(result.found_tables, np.stack([(found & present).sum(axis=0),
                                                                 (found & ~present).sum(axis=0)], axis=1))
    points = oracle_points(stats, search_grid, found, every, result.thresholds)
    assert result.operating == points
    for point, expected in zip(result.operating, points, strict=True):
        assert point.recall == (expected.tp / expected.positives if expected.positives else None)
        assert point.precision == (expected.tp / (expected.tp + expected.fp) if expected.tp + expected.fp else None)
        assert point.false_alarm_rate == (expected.fp / expected.negatives if expected.negatives else None)
    if objective.kind != "kaggle":
        chosen, reached = oracle_choice(stats, search_grid, found, every, objective)
        assert result.thresholds == chosen
        assert result.below_target() == [c for c, ok in enumerate(reached) if not ok]
    # held out: each fold under the setting the same objective picks on the other folds
    for fold in range(3):
        own = stats.folds == fold
        if objective.kind != "kaggle":
            assert result.heldout_thresholds[fold] == oracle_choice(stats, search_grid, found, ~own, objective)[0]
        assert result.heldout_operating[fold] == oracle_points(stats, search_grid, found, own,
                                                               result.heldout_thresholds[fold])
    document = thresholds_document(result, "demo", {}, 3, {}, {}, "")
    pooled = [sum((result.heldout_operating[fold][c] for fold in range(3)), start=OperatingPoint(0, 0, 0, 0))
              for c in range(4)]
    assert document["heldout_operating_pooled"] == {str(c + 1): pooled[c].to_dict() for c in range(4)}
    assert document["heldout_operating"]["2"]["1"] == result.heldout_operating[1][1].to_dict()


@pytest.mark.parametrize("objective", ["recall:0.7", "f1"])
def test_search_without_a_classifier_equals_the_oracle(objective):
    stats, search_grid, found = oracle_case(5, classifier=False)
    result = search_thresholds(stats, search_grid, Objective.parse(objective))
    every = np.ones(stats.count, dtype=bool)
    assert result.thresholds == oracle_choice(stats, search_grid, found, every, Objective.parse(objective))[0]
    assert result.operating == oracle_points(stats, search_grid, found, every, result.thresholds)
    assert not result.gate_adopted.any()


def test_found_pairs_follow_post_processing():
    stats, search_grid, found = oracle_case(0)
    for index in [(0, 0, 0, 0), (1, 1, 2, 3), (2, 0, 3, 1)]:
        np.testing.assert_array_equal(found_pairs(stats, setting_thresholds(search_grid, index)),
                                      found[(slice(None), slice(None), *index)])


# ----------------------------------------------------------------------------- per-class decision thresholds

def test_thresholded_classes_by_hand():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.2, 0.35, 0.45], [0.6, 0.1, 0.3], [0.4, 0.4, 0.2], [0.3, 0.25, 0.45],
                              [0.1, 0.3, 0.6]])
    thresholds = [0.7, 0.3, 0.5]
    # image 0: only class 1 flagged (0.3 >= 0.3); image 1: class 1 (0.35) flagged, class 2 (0.45 < 0.5) not;
    # images 2 and 4: none flagged -> the most probable; image 3: class 1; image 5: classes 1 and 2 -> 2
    np.testing.assert_array_equal(thresholded_classes(probabilities, thresholds), [1, 1, 0, 1, 2, 2])
    everything = [0.0, 0.0, 0.0]  # every class flagged: the most probable, the lower on a tie (image 3)
    np.testing.assert_array_equal(thresholded_classes(probabilities, everything), [0, 2, 0, 0, 2, 2])
    np.testing.assert_array_equal(thresholded_classes(probabilities, None), [0, 2, 0, 0, 2, 2])
    with pytest.raises(ValueError, match="expected 3 class thresholds"):
        thresholded_classes(probabilities, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"class_thresholds.2 must be a number in \[0, 1\]"):
        thresholded_classes(probabilities, [0.5, 0.5, 1.5])


def test_decision_thresholds_are_read_and_checked():
    names = ["good", "scratch"]
    assert decision_thresholds({"decision": "argmax"}, names) is None
    document = {"decision": "thresholded", "class_thresholds": {"good": 0.25, "scratch": 0.5}}
    np.testing.assert_array_equal(decision_thresholds(document, names), [0.25, 0.5])
    for bad, message in [({"decision": "vote"}, "decision must be"), ({"decision": "thresholded"}, "decision must"),
                         ({**document, "class_thresholds": {"good": 0.25}}, "lacks scratch"),
                         ({**document, "class_thresholds": {"good": 0.25, "scratch": "high"}},
                          "class_thresholds.scratch must be a number in")]:
        with pytest.raises(ValueError, match=message):
            decision_thresholds(bad, names)


@pytest.mark.parametrize("objective, threshold", [
    ("recall:0.5", 0.7),  # tp >= 2 with no false positive at 0.8 and 0.7: the more true positives
    ("recall:0.9", 0.5),  # every positive: 0.5 (one false positive)
    ("f1", 0.7),  # F1 2 tp / (tp + fp + 4) at 0.9, 0.8, 0.7, 0.6, 0.5: 2/5, 4/6, 6/7, 6/11, 8/12
])
def test_flag_threshold_by_hand(objective, threshold):
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.6, 0.6, 0.6], np.float32)  # 0.6: four negatives
    positive = np.array([True, True, True, False, True, False, False, False])
    assert flag_threshold(scores, positive, Objective.parse(objective)) == pytest.approx(threshold)


def brute_threshold(scores, positive, objective):
    """The threshold of :func:`flag_threshold` by trying every distinct score, image by image."""
    best = None
    positives = int(sum(positive))
    for threshold in sorted(set(scores.tolist())):
        tp = sum(1 for s, p in zip(scores, positive, strict=True) if s >= threshold and p)
        fp = sum(1 for s, p in zip(scores, positive, strict=True) if s >= threshold and not p)
        if objective.kind == "recall":
            primary = positives == 0 or tp / positives >= objective.target
            key = (primary, tp if not primary else 0, -fp, tp)
        else:
            denominator = tp + fp + positives
            key = (2 * tp / denominator if denominator else 0.0, -fp, tp)
        if best is None or key > best[0]:
            best = (key, threshold)
    return best[1]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("objective", ["recall:0.6", "recall:0.9", "recall:1", "f1"])
def test_flag_thresholds_equal_brute_force(seed, objective):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(30), 1).astype(np.float32)  # many ties
    positive = rng.random(30) < 0.4 + 0.4 * scores
    objective = Objective.parse(objective)
    assert flag_threshold(scores, positive, objective) == brute_threshold(scores, positive, objective)


def test_decide_classes_tunes_each_fold_on_the_others():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 45)
    probabilities = rng.dirichlet(np.ones(3), 45) * 0.6 + 0.4 * np.eye(3)[truth]  # (45, 3)
    folds = np.arange(45) % 3
    objective = Objective.parse("recall:0.8")
    decision = decide_classes(probabilities, truth, folds, objective)
    present = np.eye(3, dtype=bool)[truth]
    expected = [flag_threshold(probabilities[:, c], present[:, c], objective) for c in range(3)]
    np.testing.assert_array_equal(decision.thresholds, expected)
    np.testing.assert_array_equal(decision.predicted, thresholded_classes(probabilities, expected))
    assert decision.operating == operating_points(probabilities >= np.array(expected), present)
    assert all(point.recall >= 0.8 for point in decision.operating)
    for fold in range(3):
        own = folds == fold
        others = [flag_threshold(probabilities[~own, c], present[~own, c], objective) for c in range(3)]
        np.testing.assert_array_equal(decision.heldout_thresholds[fold], others)
        np.testing.assert_array_equal(decision.heldout_predicted[own], thresholded_classes(probabilities[own], others))
        flags = probabilities[own] >= np.array(others)
        assert decision.heldout_operating[fold] == operating_points(flags, present[own])
    argmax = decide_classes(probabilities, truth, folds, Objective.parse("kaggle"))
    assert argmax.thresholds is None and argmax.heldout_thresholds == {0: None, 1: None, 2: None}
    np.testing.assert_array_equal(argmax.predicted, np.argmax(probabilities, axis=1))
    np.testing.assert_array_equal(argmax.heldout_predicted, argmax.predicted)
    assert argmax.operating == operating_points(np.eye(3, dtype=bool)[argmax.predicted], present)


# ----------------------------------------------------------------------------- tune on a folders data set

FOLDERS_CONFIG = """inherit: {demo}
experiment: own
data:
  dir: data
  folds_file: folds/own.csv
"""


@pytest.fixture
def folders_workdir(tmp_path, monkeypatch, repo_root):
    """A folders demo set (24 images, 2 classes, 2 folds) with classifier OOF files of a middling classifier."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(FOLDERS_CONFIG.format(demo=repo_root / "configs" / "demo.yaml"))
    assert cli.main(["demo-data", "--config", "config.yaml", "--layout", "folders", "--out", "data", "--train", "24",
                     "--test", "2"]) == 0
    assert cli.main(["folds", "--config", "config.yaml"]) == 0
    config = load_config("config.yaml")
    folds = pd.read_csv("folds/own.csv")
    rng = np.random.default_rng(0)
    for fold in range(2):
        rows = folds[folds.fold == fold]
        first = np.clip(0.35 + 0.3 * rows["has_1"].to_numpy() + rng.normal(0, 0.2, len(rows)), 0, 1)
        save_classifier_oof(Paths(config).fold_dir("cls", fold) / "oof.npz", rows["ImageId"].tolist(), fold,
                            np.stack([first, 1 - first], axis=1),
                            Stamp.of(config, OOF_KEYS, {"weights": f"sha256:fold{fold}"}), "float32")
    return config


def test_tune_a_folders_data_set_by_recall(folders_workdir, capsys):
    paths = Paths(folders_workdir)
    assert tune.main(["--config", "config.yaml", "--objective", "recall:0.9"]) == 0
    output = capsys.readouterr().out
    document = json.loads(paths.thresholds.read_text())
    names = list(folders_workdir.data.classes)
    assert document["decision"] == "thresholded" and document["objective"] == "recall:0.9"
    thresholds = decision_thresholds(document, names)
    assert sorted(document["heldout_class_thresholds"]) == ["0", "1"]
    assert all(document["operating"][name]["recall"] >= 0.9 and document["operating"][name]["target_reached"]
               for name in names)
    assert sorted(document["heldout_operating"][names[0]]) == ["0", "1"]
    pooled = document["heldout_operating_pooled"][names[0]]
    assert pooled["positives"] + pooled["negatives"] == 24
    assert "held-out recall per fold" in output and "its probability reaches its threshold" in output
    assert output.strip().splitlines()[-1] == f"cv_accuracy {document['cv_accuracy']:.6f}"
    assert (paths.reports / "operating_points.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert thresholds.shape == (2,) and document["oof"]["images"] == 24

    assert tune.main(["--config", "config.yaml"]) == 0  # without --objective: the recorded one, up to date
    assert "up to date" in capsys.readouterr().out
    assert tune.main(["--config", "config.yaml", "--objective", "kaggle"]) == 0  # another one: tuned again
    assert "objective changed since it was made" in capsys.readouterr().out
    document = json.loads(paths.thresholds.read_text())
    assert document["decision"] == "argmax" and document["class_thresholds"] is None
    assert document["objective"] == "kaggle" and decision_thresholds(document, names) is None
