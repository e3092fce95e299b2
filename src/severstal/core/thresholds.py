"""Search the post-processing thresholds of each class on out-of-fold statistics.

Mean Dice over (image, class) pairs is a sum over classes, so each class is tuned alone. For a
class, a pixel threshold ``p`` and a minimum component size ``s`` fix each image's predicted
area ``a_i``, its Dice when kept ``d_i`` and its Dice when emptied ``e_i = [true area == 0]``.
A minimum area ``A`` and a classifier threshold ``G`` keep image ``i`` when ``a_i >= A`` and
``c_i >= G``, so the summed Dice is ``sum(e) + sum of (d_i - e_i) over kept images``: a weighted
2-D histogram of the gains over (area bin, classifier bin) with reverse cumulative sums scores
every ``(A, G)`` at once. Per-fold histograms give the held-out check for free: thresholds
tuned on the other folds' histograms are scored on each fold's own.

A held-out score over a set of folds is the summed Dice of each of them under the setting tuned
on the others of the set. Each class is searched twice: with the classifier axis (gated) and
with it fixed to ``(0.0,)`` (ungated). The gate is adopted only when, over all folds, the gated
search's held-out score beats the ungated one's by more than ``TIE_TOLERANCE``; otherwise the
class gets the ungated search's thresholds. The in-sample score alone would adopt any gate that
fits noise. With fewer than two folds there is no held-out score, so no gate is adopted; without
classifier probabilities no gate is searched.

The reported held-out score (``heldout_per_class``, ``heldout_per_fold``, ``heldout_thresholds``)
is nested, so that it estimates the whole procedure: with three folds or more, fold ``k`` is
scored with thresholds tuned on the other folds by the variant (gated or not) that the rule picks
on those folds alone (their own held-out scores, each of them scored with thresholds tuned on
the rest of them), i.e. exactly what this search returns on the statistics without fold ``k``.
With exactly two folds a single remaining fold has no held-out score, so both folds use the
decision made on all folds (it has seen fold ``k``: slightly optimistic).

Ties (scores within ``TIE_TOLERANCE`` of the best, in summed Dice) go to the simplest setting:
the lowest classifier threshold, then the lowest minimum area, then the smallest component
size, then the pixel threshold closest to 0.5 (the lower one when two are equally close).

Operating points (image level): a class is *found* in an image when its post-processed mask is
non-empty, i.e. the predicted area ``a_i >= max(A, 1)`` and ``c_i >= G``. The same 2-D histograms,
counting the images with and without the class whose area is above 0, give the found images
(``tp``, ``fp``) of every setting at once. The objective ``kaggle`` is the Dice search above; with
``recall:R`` or ``f1`` (``classification.objective_choices``) each class is searched once over the
whole grid (the classifier axis included when there are probabilities: the objective itself weighs
recall against false positives, so there is no gate decision), the objective's choices ranked by
summed Dice, then by the simplest setting. Their held-out check is plain: fold ``k`` gets the setting
the same objective picks on the other folds. For every objective the image-level counts of the tuned
thresholds (in-sample) and of each held-out fold under its thresholds are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .classification import (
    DEFAULT_OBJECTIVE,
    KAGGLE,
    Objective,
    OperatingPoint,
    objective_choices,
    operating_document,
    operating_points,
    reaches,
)
from .constants import NUM_CLASSES
from .metric import dice_from_areas
from .oofstats import OOFStatistics, check_grid
from .postprocess import DEFAULT_THRESHOLDS, ClassThresholds, per_class_thresholds

TIE_TOLERANCE = 1e-9  # in summed Dice: far below the smallest change one image's Dice can make
GRID_KEYS = ("pixel_thresholds", "min_component_sizes", "min_areas", "classifier_thresholds")


@dataclass(frozen=True)
class SearchGrid:
    """The tuning grid (``config["tune"]``); every axis strictly increasing."""

    pixel_thresholds: tuple[float, ...]
    min_component_sizes: tuple[int, ...]
    min_areas: tuple[int, ...]
    classifier_thresholds: tuple[float, ...]

    def __post_init__(self):
        pixels, sizes = check_grid(self.pixel_thresholds, self.min_component_sizes)
        areas = np.asarray(self.min_areas, dtype=np.int64)
        gates = np.asarray(self.classifier_thresholds, dtype=np.float64)
        for name, axis in (("min_areas", areas), ("classifier_thresholds", gates)):
            if axis.ndim != 1 or axis.size == 0 or np.any(np.diff(axis) <= 0):
                raise ValueError(f"{name} must be a non-empty, strictly increasing list, got {axis.tolist()}")
        if areas[0] < 0 or gates[0] < 0 or gates[-1] > 1:
            raise ValueError(f"min_areas must be >= 0 and classifier_thresholds in [0, 1], got "
                             f"{areas.tolist()} and {gates.tolist()}")
        object.__setattr__(self, "pixel_thresholds", tuple(float(v) for v in pixels))
        object.__setattr__(self, "min_component_sizes", tuple(int(v) for v in sizes))
        object.__setattr__(self, "min_areas", tuple(int(v) for v in areas))
        object.__setattr__(self, "classifier_thresholds", tuple(float(v) for v in gates))

    @classmethod
    def from_dict(cls, values: Mapping) -> SearchGrid:
        """From ``config["tune"]`` (extra keys are ignored, missing ones are an error)."""
        missing = [key for key in GRID_KEYS if key not in values]
        if missing:
            raise ValueError(f"the tuning grid lacks {missing}")
        return cls(**{key: tuple(values[key]) for key in GRID_KEYS})

    def to_dict(self) -> dict:
        return {key: list(getattr(self, key)) for key in GRID_KEYS}

    def matches(self, pixel_thresholds: Sequence[float], min_component_sizes: Sequence[int]) -> bool:
        """Whether statistics computed on these two axes fit this grid."""
        pixels = np.asarray(pixel_thresholds, dtype=np.float64)
        return (pixels.shape == (len(self.pixel_thresholds),)
                and np.allclose(pixels, self.pixel_thresholds, rtol=0, atol=1e-9)
                and [int(v) for v in min_component_sizes] == list(self.min_component_sizes))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(P, C, A, G): the shape of a score table."""
        return tuple(len(getattr(self, key)) for key in GRID_KEYS)


def grid_index(values: Sequence[float], value: float, name: str) -> int:
    """Position of ``value`` on a grid axis (ValueError when it is not on it)."""
    matches = np.flatnonzero(np.isclose(np.asarray(values, dtype=np.float64), value, rtol=0, atol=1e-9))
    if matches.size == 0:
        raise ValueError(f"{name} {value} is not on the statistics' grid {list(values)}")
    return int(matches[0])


def setting_areas(stats: OOFStatistics, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (image, class) pair's areas under given thresholds, and whether its mask is kept.

    Args:
        stats: OOF statistics; each class's pixel threshold and component size must be on their grid.
        thresholds: see ``postprocess.per_class_thresholds`` (one, four, or a dict by class id).
            A classifier threshold above 0 needs classifier probabilities in ``stats``.

    Returns:
        ``area`` (N, 4), the predicted area at the class's pixel threshold and component size;
        ``intersection`` (N, 4), its overlap with the truth; ``kept`` (N, 4) bool, the area reaches
        the minimum area and the classifier probability the classifier threshold.
    """
    area = np.empty((stats.count, stats.classes), dtype=stats.predicted_area.dtype)
    intersection = np.empty(area.shape, dtype=stats.intersection.dtype)
    kept = np.empty(area.shape, dtype=bool)
    for channel, setting in enumerate(per_class_thresholds(thresholds, stats.classes)):
        pixel = grid_index(stats.pixel_thresholds, setting.pixel_threshold, "pixel_threshold")
        size = grid_index(stats.min_component_sizes, setting.min_component_size, "min_component_size")
        area[:, channel] = stats.predicted_area[:, channel, pixel, size]
        intersection[:, channel] = stats.intersection[:, channel, pixel, size]
        kept[:, channel] = area[:, channel] >= setting.min_area
        if setting.classifier_threshold > 0:
            if stats.classifier_probabilities is None:
                raise ValueError(f"class {channel + 1} gates on the classifier (threshold "
                                 f"{setting.classifier_threshold}) but there are no classifier probabilities")
            gate = stats.classifier_probabilities[:, channel].astype(np.float64)
            kept[:, channel] &= gate >= setting.classifier_threshold
    return area, intersection, kept


def pair_dice(stats: OOFStatistics, thresholds) -> np.ndarray:
    """Dice of every (image, class) pair under given thresholds (:func:`setting_areas`), exactly as
    post-processing gives it.

    Returns:
        (N, 4) float64 Dice per image and class.
    """
    area, intersection, kept = setting_areas(stats, thresholds)
    return np.where(kept, dice_from_areas(area, stats.true_area, intersection), stats.true_area == 0)


def found_pairs(stats: OOFStatistics, thresholds) -> np.ndarray:
    """Whether each class is found in each image under given thresholds (:func:`setting_areas`): its
    post-processed mask is non-empty (kept, and a predicted area above 0).

    Returns:
        (N, 4) bool.
    """
    area, _, kept = setting_areas(stats, thresholds)
    return kept & (area > 0)


def evaluate_thresholds(stats: OOFStatistics, thresholds) -> tuple[np.ndarray, float]:
    """Per-class mean Dice (4,) and the overall mean Dice (the Kaggle score) of given thresholds."""
    dice = pair_dice(stats, thresholds)
    return dice.mean(axis=0), float(dice.mean())


def histogram_cells(stats: OOFStatistics, channel: int, grid: SearchGrid, groups: np.ndarray) -> np.ndarray:
    """The cell of each (image, pixel threshold, component size) of one class in a per-group histogram of
    shape (K, P, C, A + 1, G + 1): its group, its setting, its area bin (how many minimum areas the area
    reaches) and its classifier bin (how many classifier thresholds the probability reaches).

    Returns:
        (N, P, C) int64 flat cell indices.
    """
    num_pixel, num_size, num_area, num_gate = grid.shape
    area = stats.predicted_area[:, channel]  # (N, P, C)
    area_bin = np.searchsorted(np.asarray(grid.min_areas), area, side="right")  # (N, P, C) in 0..A
    if stats.classifier_probabilities is None:
        gate_bin = np.full(stats.count, num_gate, dtype=np.int64)  # no classifier: every gate passes
    else:
        probability = stats.classifier_probabilities[:, channel].astype(np.float64)
        gate_bin = np.searchsorted(np.asarray(grid.classifier_thresholds), probability, side="right")
    setting = np.arange(num_pixel * num_size).reshape(num_pixel, num_size)  # (P, C)
    index = (groups[:, None, None] * (num_pixel * num_size) + setting) * (num_area + 1) + area_bin
    return index * (num_gate + 1) + gate_bin[:, None, None]  # (N, P, C)


def histogram_shape(grid: SearchGrid, num_groups: int) -> tuple[int, int, int, int, int]:
    """(K, P, C, A + 1, G + 1): the shape of a per-group histogram (:func:`histogram_cells`)."""
    num_pixel, num_size, num_area, num_gate = grid.shape
    return num_groups, num_pixel, num_size, num_area + 1, num_gate + 1


def class_gains(stats: OOFStatistics, channel: int, groups: np.ndarray,
                num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """What keeping each mask of one class changes in Dice.

    Returns:
        ``gains`` (N, P, C): ``kept Dice - empty Dice`` of each image and (pixel threshold, component size);
        ``empty`` (K,): summed empty Dice per group of images (folds).
    """
    true_area = stats.true_area[:, channel][:, None, None]  # (N, 1, 1)
    empty_dice = (true_area == 0).astype(np.float64)
    gains = dice_from_areas(stats.predicted_area[:, channel], true_area, stats.intersection[:, channel]) - empty_dice
    return gains, np.bincount(groups, weights=empty_dice.ravel(), minlength=num_groups)


def gain_histograms(gains: np.ndarray, cells: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Gain histograms of one class per group: (K, P, C, A + 1, G + 1) summed ``gains`` (N, P, C) by ``cells``
    (:func:`histogram_cells`, for a histogram of ``shape``)."""
    return np.bincount(cells.ravel(), weights=gains.ravel(), minlength=int(np.prod(shape))).reshape(shape)


def found_histograms(stats: OOFStatistics, channel: int, cells: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Found-image histograms of one class per group.

    Args:
        stats, channel: the statistics and the class.
        cells: (N, P, C) :func:`histogram_cells` for a histogram of ``shape`` (K, P, C, A + 1, G + 1).

    Returns:
        (K, 2, P, C, A + 1, G + 1) int64: by cell, the images with the class (``[:, 0]``) and without it
        (``[:, 1]``) whose predicted area is above 0 (an empty mask is never found).
    """
    size = int(np.prod(shape))
    without = (stats.true_area[:, channel] == 0)[:, None, None]  # (N, 1, 1)
    index = cells + size * without  # (N, P, C) in 0..2 size - 1
    counts = np.bincount(index[stats.predicted_area[:, channel] > 0], minlength=2 * size)
    return counts.reshape(2, *shape).swapaxes(0, 1)


def kept_sums(histogram: np.ndarray) -> np.ndarray:
    """Sums (..., A, G) over the cells each (minimum area, classifier threshold) keeps, from a
    (..., A + 1, G + 1) histogram: the cells with an area bin above ``a`` and a classifier bin above ``g``."""
    reverse = histogram[..., ::-1, ::-1]
    kept = reverse.cumsum(axis=-1).cumsum(axis=-2)[..., ::-1, ::-1]  # sums over bins >= (a, g)
    return kept[..., 1:, 1:]


def summed_scores(histogram: np.ndarray, empty: float) -> np.ndarray:
    """Summed Dice (P, C, A, G) of every setting from a (P, C, A + 1, G + 1) gain histogram."""
    return empty + kept_sums(histogram)


def best_setting(scores: np.ndarray, grid: SearchGrid) -> tuple[int, int, int, int]:
    """Index (p, c, a, g) of the best score, ties to the simplest setting (module docstring)."""
    candidates = np.argwhere(scores >= scores.max() - TIE_TOLERANCE)  # (M, 4)
    pixels = np.asarray(grid.pixel_thresholds)
    pixel_rank = np.lexsort((pixels, np.abs(pixels - DEFAULT_THRESHOLDS.pixel_threshold))).argsort()
    order = np.lexsort((pixel_rank[candidates[:, 0]], candidates[:, 1], candidates[:, 2], candidates[:, 3]))
    return tuple(int(v) for v in candidates[order[0]])


def setting_thresholds(grid: SearchGrid, index: tuple[int, int, int, int]) -> ClassThresholds:
    """The thresholds at a score-table index (p, c, a, g)."""
    pixel, size, area, gate = index
    return ClassThresholds(
        pixel_threshold=grid.pixel_thresholds[pixel], min_component_size=grid.min_component_sizes[size],
        min_area=grid.min_areas[area], classifier_threshold=grid.classifier_thresholds[gate])


def tuned_setting(histograms: np.ndarray, empty: np.ndarray, grid: SearchGrid,
                  folds: Sequence[int]) -> tuple[int, int, int, int]:
    """The best setting (p, c, a, g) on some folds of per-fold histograms (:func:`gain_histograms`)."""
    return best_setting(summed_scores(histograms[list(folds)].sum(axis=0), empty[list(folds)].sum()), grid)


def heldout_sum(histograms: np.ndarray, empty: np.ndarray, grid: SearchGrid, folds: Sequence[int]) -> float:
    """Summed Dice of the folds ``folds`` (positions), each under the setting tuned on the others of them."""
    total = 0.0
    for fold in folds:
        index = tuned_setting(histograms, empty, grid, [other for other in folds if other != fold])
        total += summed_scores(histograms[fold], empty[fold])[index]
    return total


def chosen_setting(variants: Mapping[bool, tuple[np.ndarray, SearchGrid]], empty: np.ndarray, found: np.ndarray,
                   positives: np.ndarray, folds: Sequence[int], objective: Objective,
                   adopted: bool) -> tuple[np.ndarray, SearchGrid, tuple[int, int, int, int]]:
    """The setting one class is tuned to on some folds.

    Args:
        variants: ``{True: (histograms, grid) of the gated search, False: those of the ungated one}``
            (:func:`gain_histograms`; the same twice without a classifier).
        empty: (K,) summed empty Dice per fold.
        found: (K, 2, P, C, A + 1, G + 1) found images on the gated grid (:func:`found_histograms`).
        positives: (K,) images with the class per fold.
        folds: fold positions to tune on.
        objective: ``kaggle``: the best summed Dice of the search ``adopted`` picks (gated or not);
            ``recall:R`` / ``f1``: on the gated grid, the settings ``classification.objective_choices``
            prefers, then the best summed Dice.
        adopted: the gate decision (``kaggle`` only).

    Returns:
        ``(histograms, grid, index)``: the chosen search's histograms and grid, and the index (p, c, a, g).
    """
    folds = list(folds)
    if objective.kind == KAGGLE:
        histograms, grid = variants[adopted]
        return histograms, grid, tuned_setting(histograms, empty, grid, folds)
    histograms, grid = variants[True]
    counts = kept_sums(found[folds].sum(axis=0))  # (2, P, C, A, G): images with / without the class found
    choices = objective_choices(counts[0], counts[1], int(positives[folds].sum()), objective)
    scores = summed_scores(histograms[folds].sum(axis=0), empty[folds].sum())
    return histograms, grid, best_setting(np.where(choices, scores, -np.inf), grid)


def gate_gain(variants: Mapping[bool, tuple[np.ndarray, SearchGrid]], empty: np.ndarray,
              folds: Sequence[int]) -> float:
    """The gate's held-out gain over some folds, in summed Dice.

    Args:
        variants: ``{True: (histograms, grid) of the gated search, False: those of the ungated one}``.
        empty: (K,) summed empty Dice per fold.
        folds: fold positions.

    Returns:
        The gated search's :func:`heldout_sum` minus the ungated one's; 0 with fewer than two folds.
    """
    if len(folds) < 2:
        return 0.0
    (gated, gated_grid), (ungated, ungated_grid) = variants[True], variants[False]
    return heldout_sum(gated, empty, gated_grid, folds) - heldout_sum(ungated, empty, ungated_grid, folds)


@dataclass
class SearchResult:
    """What :func:`search_thresholds` finds; scores are mean Dice over (image, class) pairs, operating points
    image-level counts (a class is found where its post-processed mask is non-empty)."""

    thresholds: list[ClassThresholds]  # per class, tuned on all folds
    grid: SearchGrid  # the grid searched (classifier axis (0.0,) when there is no classifier)
    tuned_per_class: np.ndarray  # (4,) in-sample (CV) Dice of the tuned thresholds
    default_per_class: np.ndarray  # (4,) Dice of untuned defaults (0.5, no gate, no minimum area)
    heldout_per_class: np.ndarray | None  # (4,) each fold scored with thresholds tuned on the others (nested)
    heldout_per_fold: dict[int, float]  # fold -> mean Dice of its images under the others' thresholds
    heldout_thresholds: dict[int, list[ClassThresholds]]  # fold -> thresholds tuned without it
    score_tables: np.ndarray  # (4, P, C, A, G) class mean Dice of every setting
    images: int
    positives: np.ndarray  # (4,) images with a non-empty true mask per class
    gated: bool  # whether classifier probabilities were searched
    gate_heldout_gain: np.ndarray | None  # (4,) gated minus ungated held-out Dice (all folds); None: no check
    gate_adopted: np.ndarray  # (4,) bool: whether the class gates on the classifier
    objective: Objective  # what the thresholds were chosen by
    operating: list[OperatingPoint]  # per class, the tuned thresholds' image-level counts (in-sample)
    heldout_operating: dict[int, list[OperatingPoint]]  # fold -> per class, its counts under heldout_thresholds
    found_tables: np.ndarray  # (4, 2, P, C, A, G) int64 images with / without the class found, every setting

    @property
    def tuned_mean(self) -> float:
        return float(self.tuned_per_class.mean())

    @property
    def default_mean(self) -> float:
        return float(self.default_per_class.mean())

    @property
    def heldout_mean(self) -> float | None:
        return None if self.heldout_per_class is None else float(self.heldout_per_class.mean())

    def below_target(self) -> list[int]:
        """The channels whose tuned recall (in-sample) is below a ``recall:R`` objective's target: no setting on
        the grid reaches it (empty for other objectives)."""
        return [channel for channel, point in enumerate(self.operating) if reaches(point, self.objective) is False]


def search_thresholds(stats: OOFStatistics, grid: SearchGrid, objective: Objective = DEFAULT_OBJECTIVE) -> SearchResult:
    """Tune each class's four thresholds on OOF statistics by ``objective`` (module docstring), with the
    held-out-fold check and the image-level operating points.

    Args:
        stats: statistics of all folds; their pixel-threshold and component-size grids must
            equal ``grid``'s. Without classifier probabilities the gate is not searched
            (classifier threshold 0).
        grid: the settings to try.
        objective: ``kaggle`` (the default): the best mean Dice, adopting a gate only where it raises
            the held-out score (nested held-out check); ``recall:R`` / ``f1``: the image-level objective
            over the whole grid, classifier axis included.

    Returns:
        :class:`SearchResult`. The held-out scores and the gate's held-out gain need at least two
        folds (else None / empty, and no class gates by the ``kaggle`` objective); the gain is None
        for the other objectives, which make no gate decision.
    """
    if not grid.matches(stats.pixel_thresholds, stats.min_component_sizes):
        raise ValueError(f"the statistics were computed on pixel thresholds "
                         f"{stats.pixel_thresholds.tolist()} and component sizes "
                         f"{stats.min_component_sizes.tolist()}, the grid asks for "
                         f"{list(grid.pixel_thresholds)} and {list(grid.min_component_sizes)}")
    gated = stats.classifier_probabilities is not None
    ungated_grid = SearchGrid(grid.pixel_thresholds, grid.min_component_sizes, grid.min_areas, (0.0,))
    if not gated:
        grid = ungated_grid
    fold_ids, groups = np.unique(stats.folds, return_inverse=True)
    num_folds = fold_ids.size
    every_fold = list(range(num_folds))
    classes = stats.classes
    tables = np.empty((classes, *grid.shape), dtype=np.float64)
    kaggle = objective.kind == KAGGLE
    found_tables = np.empty((classes, 2, *grid.shape), dtype=np.int64)
    present = stats.true_area > 0  # (N, 4)
    tuned, heldout_sums, gains = [], np.zeros(classes), np.zeros(classes)
    heldout_thresholds = {int(fold): [] for fold in fold_ids}
    heldout_fold_sums = np.zeros(num_folds)
    shape, ungated_shape = histogram_shape(grid, num_folds), histogram_shape(ungated_grid, num_folds)
    gate_decided = gated and kaggle
    for channel in range(classes):
        gains_of_keeping, empty = class_gains(stats, channel, groups, num_folds)  # (N, P, C), (K,)
        cells = histogram_cells(stats, channel, grid, groups)  # (N, P, C)
        histograms = gain_histograms(gains_of_keeping, cells, shape)
        found = found_histograms(stats, channel, cells, shape)
        positives = np.bincount(groups[present[:, channel]], minlength=num_folds)  # (K,)
        tables[channel] = summed_scores(histograms.sum(axis=0), empty.sum()) / stats.count
        found_tables[channel] = kept_sums(found.sum(axis=0))
        ungated = (gain_histograms(gains_of_keeping, histogram_cells(stats, channel, ungated_grid, groups),
                                   ungated_shape) if gate_decided else histograms)
        variants = {True: (histograms, grid), False: (ungated, ungated_grid)}  # by "gate adopted"
        gains[channel] = gate_gain(variants, empty, every_fold) if gate_decided else 0.0
        adopted = bool(gains[channel] > TIE_TOLERANCE)
        _, variant_grid, index = chosen_setting(variants, empty, found, positives, every_fold, objective, adopted)
        tuned.append(setting_thresholds(variant_grid, index))
        if num_folds < 2:
            continue
        for position, fold in enumerate(fold_ids):
            others = [other for other in every_fold if other != position]
            inner_adopted = (gate_gain(variants, empty, others) > TIE_TOLERANCE
                             if gate_decided and num_folds >= 3 else adopted)
            variant, variant_grid, index = chosen_setting(variants, empty, found, positives, others, objective,
                                                          inner_adopted)
            heldout_thresholds[int(fold)].append(setting_thresholds(variant_grid, index))
            fold_score = summed_scores(variant[position], empty[position])[index]
            heldout_sums[channel] += fold_score
            heldout_fold_sums[position] += fold_score
    fold_sizes = np.bincount(groups, minlength=num_folds)
    checked = num_folds >= 2
    heldout_thresholds = heldout_thresholds if checked else {}
    heldout_operating = {}
    for fold, values in heldout_thresholds.items():
        rows = stats.folds == fold
        heldout_operating[fold] = operating_points(found_pairs(stats, values)[rows], present[rows])
    return SearchResult(
        thresholds=tuned,
        grid=grid,
        tuned_per_class=evaluate_thresholds(stats, tuned)[0],
        default_per_class=evaluate_thresholds(stats, DEFAULT_THRESHOLDS)[0],
        heldout_per_class=heldout_sums / stats.count if checked else None,
        heldout_per_fold=({int(fold): float(heldout_fold_sums[i] / (classes * fold_sizes[i]))
                           for i, fold in enumerate(fold_ids)} if checked else {}),
        heldout_thresholds=heldout_thresholds,
        score_tables=tables,
        images=stats.count,
        positives=np.count_nonzero(present, axis=0),
        gated=gated,
        gate_heldout_gain=gains / stats.count if gated and checked and kaggle else None,
        gate_adopted=(gains > TIE_TOLERANCE if kaggle
                      else np.array([setting.classifier_threshold > 0 for setting in tuned])),
        objective=objective,
        operating=operating_points(found_pairs(stats, tuned), present),
        heldout_operating=heldout_operating,
        found_tables=found_tables,
    )


def thresholds_from_document(document: Mapping, num_classes: int = NUM_CLASSES) -> list[ClassThresholds]:
    """The per-class thresholds of a thresholds.json document (docs/thresholds-format.md), checked.

    Returns:
        ``[ClassThresholds] * num_classes`` in channel order (class ids 1..num_classes).

    Raises:
        ValueError: no ``classes`` mapping, wrong class ids, or a value that is not finite or out of
            range, naming the key (``classes.3.min_area must be ...``).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("classes"), Mapping):
        raise ValueError("a thresholds document must hold a 'classes' mapping from class ids to thresholds")
    return per_class_thresholds(document["classes"], num_classes, where="classes.")


FORMAT_VERSION = 3  # 2: per_class gate_heldout_gain and gate_adopted, tuned_on; 3: objective, operating points


def thresholds_document(result: SearchResult, experiment: str, config: Mapping, folds: int,
                        inputs: Mapping[str, str], weights: Mapping[str, Mapping[int, str]], created: str,
                        tuned_on: Mapping | None = None) -> dict:
    """The content of thresholds.json (docs/thresholds-format.md).

    Args:
        result: the search's result.
        experiment: the experiment's name.
        config: the resolved config (a plain mapping).
        folds: the number of folds tuned on.
        inputs: ``{OOF file: fingerprint}``.
        weights: ``{"seg": {fold: weights fingerprint}, "cls": {...}}`` the OOF files were made from.
        created: the time stamp to record.
        tuned_on: how the OOF predictions were made, e.g. ``{"tta": [...], "precision": "float32"}``
            (stored as given; None when unknown).

    Returns:
        The document, JSON-ready.
    """
    def by_class(values: list[ClassThresholds]) -> dict:
        return {str(channel + 1): setting.to_dict() for channel, setting in enumerate(values)}

    def score(value) -> float | None:
        return None if value is None else round(float(value), 8)

    heldout, gain = result.heldout_per_class, result.gate_heldout_gain
    classes = range(len(result.thresholds))
    return {
        "format_version": FORMAT_VERSION,
        "experiment": experiment,
        "created": created,
        "classes": by_class(result.thresholds),
        "cv_mean_dice": score(result.tuned_mean),
        "default_mean_dice": score(result.default_mean),
        "heldout_mean_dice": score(result.heldout_mean),
        "per_class": {
            str(channel + 1): {"tuned_dice": score(result.tuned_per_class[channel]),
                               "default_dice": score(result.default_per_class[channel]),
                               "heldout_dice": None if heldout is None else score(heldout[channel]),
                               "gate_heldout_gain": None if gain is None else score(gain[channel]),
                               "gate_adopted": bool(result.gate_adopted[channel]),
                               "positives": int(result.positives[channel])}
            for channel in classes},
        **operating_document([str(channel + 1) for channel in classes], result.objective, result.operating,
                             result.heldout_operating),
        "heldout_per_fold": {str(fold): score(value) for fold, value in result.heldout_per_fold.items()},
        "heldout_thresholds": {str(fold): by_class(values) for fold, values in result.heldout_thresholds.items()},
        "classifier_gate": result.gated,
        "images": result.images,
        "folds": folds,
        "grid": result.grid.to_dict(),
        "default_thresholds": DEFAULT_THRESHOLDS.to_dict(),
        "inputs": dict(inputs),
        "tuned_on": None if tuned_on is None else dict(tuned_on),
        "weights": {kind: {str(fold): value for fold, value in by_fold.items()} for kind, by_fold in weights.items()},
        "config": dict(config),
    }
