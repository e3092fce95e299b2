"""Single-label classification (the folders layout) and image-level operating points.

Decisions, scores and the majority-class baseline of a single-label classifier; and what a plant tunes
by: one-vs-rest detection counts of a class (:class:`OperatingPoint`) and the objectives that choose a
detection threshold from them (:class:`Objective`: ``kaggle``, ``recall:R``, ``f1``), used here for the
folders layout's per-class decision thresholds and by ``thresholds`` for the post-processing settings.

NumPy in, NumPy out. Classes are indices ``0..C-1`` in the data set's class order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KAGGLE, RECALL, F1 = "kaggle", "recall", "f1"


@dataclass(frozen=True)
class Objective:
    """How thresholds are chosen.

    ``kaggle``: the competition's score (mean Dice for masks, the most probable class for labels);
    ``recall`` with ``target`` R: the fewest false-positive images among the settings whose image-level
    recall is at least R; ``f1``: the highest image-level F1. Both of the latter break ties by fewer
    false positives.
    """

    kind: str = KAGGLE
    target: float | None = None  # R in (0, 1] for ``recall``, else None

    def __post_init__(self):
        if self.kind not in (KAGGLE, RECALL, F1):
            raise ValueError(f"objective must be {KAGGLE}, {F1} or {RECALL}:R, got {self.kind!r}")
        if (self.kind == RECALL) != (self.target is not None):
            raise ValueError(f"only the {RECALL} objective takes a target recall, got {self.kind} with {self.target}")
        if self.target is not None and not 0 < self.target <= 1:  # NaN fails too
            raise ValueError("R must be in (0, 1]")

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``kaggle``, ``f1`` or ``recall:R`` (e.g. ``recall:0.95``).

        Raises:
            ValueError: e.g. ``recall:1.5: R must be in (0, 1]``.
        """
        kind, separator, target = str(text).strip().lower().partition(":")
        if kind != RECALL:
            if separator or kind not in (KAGGLE, F1):
                raise ValueError(f"{text}: expected {KAGGLE}, {F1} or {RECALL}:R with R in (0, 1], e.g. recall:0.95")
            return cls(kind)
        try:
            value = float(target)
        except ValueError:
            raise ValueError(f"{text}: R must be a number in (0, 1], e.g. recall:0.95") from None
        try:
            return cls(RECALL, value)
        except ValueError as error:
            raise ValueError(f"{text}: {error}") from None

    def __str__(self) -> str:
        """The canonical text: ``kaggle``, ``f1``, ``recall:0.95`` (what :meth:`parse` reads back)."""
        return self.kind if self.target is None else f"{self.kind}:{self.target!r}"


DEFAULT_OBJECTIVE = Objective()  # kaggle


def rate(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``; None when the denominator is 0."""
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class OperatingPoint:
    """Image-level detection counts of one class (one-vs-rest): images with the class (positives) and without
    it (negatives), and those of each where the class is found (``tp``, ``fp``)."""

    tp: int
    fp: int
    positives: int
    negatives: int

    def __add__(self, other: OperatingPoint) -> OperatingPoint:
        """The counts of two disjoint image sets pooled (e.g. held-out folds)."""
        return OperatingPoint(self.tp + other.tp, self.fp + other.fp, self.positives + other.positives,
                              self.negatives + other.negatives)

    @property
    def fn(self) -> int:
        return self.positives - self.tp

    @property
    def recall(self) -> float | None:
        """Share of the images with the class where it is found; None without such images."""
        return rate(self.tp, self.positives)

    @property
    def precision(self) -> float | None:
        """Share of the images where the class is found that have it; None when it is found nowhere."""
        return rate(self.tp, self.tp + self.fp)

    @property
    def false_alarm_rate(self) -> float | None:
        """Share of the images without the class where it is found; None without such images."""
        return rate(self.fp, self.negatives)

    @property
    def f1(self) -> float | None:
        """``2 tp / (2 tp + fp + fn)``; None when there is nothing to find and nothing is found."""
        return rate(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict:
        """JSON-ready: the counts and the four rates (rounded to 8 decimals; null where undefined)."""
        rates = {"recall": self.recall, "precision": self.precision, "false_alarm_rate": self.false_alarm_rate,
                 "f1": self.f1}
        return {**{name: None if value is None else round(value, 8) for name, value in rates.items()},
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "positives": self.positives, "negatives": self.negatives}


def pooled_points(by_fold: Mapping[int, Sequence[OperatingPoint]]) -> list[OperatingPoint] | None:
    """Per class, the counts of all folds together (``{fold: [OperatingPoint] * C}``); None without folds."""
    if not by_fold:
        return None
    return [sum(points, start=OperatingPoint(0, 0, 0, 0)) for points in zip(*by_fold.values(), strict=True)]


def operating_points(found: np.ndarray, present: np.ndarray) -> list[OperatingPoint]:
    """Per class, the detection counts of ``found`` against ``present``.

    Args:
        found: (N, C) bool, the class is found in the image.
        present: (N, C) bool, the image has the class.

    Returns:
        ``[OperatingPoint] * C``.
    """
    found, present = np.asarray(found, dtype=bool), np.asarray(present, dtype=bool)
    if found.shape != present.shape or found.ndim != 2:
        raise ValueError(f"found {found.shape} and present {present.shape} must both be (images, classes)")
    positives = np.count_nonzero(present, axis=0)  # (C,)
    tp, fp = np.count_nonzero(found & present, axis=0), np.count_nonzero(found & ~present, axis=0)
    return [OperatingPoint(int(tp[c]), int(fp[c]), int(positives[c]), int(present.shape[0] - positives[c]))
            for c in range(present.shape[1])]


def reaches(point: OperatingPoint, objective: Objective) -> bool | None:
    """Whether a point's recall reaches a ``recall:R`` objective's target; None for another objective or when
    no image has the class."""
    if objective.kind != RECALL or point.recall is None:
        return None
    return point.recall >= objective.target


def precision_recall_points(tp: np.ndarray, fp: np.ndarray, positives: int) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """The distinct (recall, precision) points of some settings and which of them are on the Pareto front.

    Args:
        tp: (M,) positive images found by each setting.
        fp: (M,) negative images found by each setting.
        positives: how many images have the class (> 0 for any point).

    Returns:
        ``recall`` (U,), ``precision`` (U,) of the distinct (tp, fp) pairs that find something, by increasing
        recall; ``front`` (U,) bool: no other point has a recall and a precision as high, one of them higher.
    """
    pairs = np.unique(np.stack([np.asarray(tp, np.int64).ravel(), np.asarray(fp, np.int64).ravel()], axis=1), axis=0)
    pairs = pairs[pairs.sum(axis=1) > 0] if positives else pairs[:0]  # (U, 2) sorted by tp, then fp
    recall, precision = pairs[:, 0] / max(positives, 1), pairs[:, 0] / np.maximum(pairs.sum(axis=1), 1)
    # by decreasing recall (then precision), a point is on the front when it beats every precision seen before
    order = np.lexsort((-precision, -recall))
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(precision[order])[:-1]])
    front = np.zeros(recall.size, dtype=bool)
    front[order] = precision[order] > best_before
    return recall, precision, front


def objective_choices(tp: np.ndarray, fp: np.ndarray, positives: int, objective: Objective) -> np.ndarray:
    """The settings an image-level objective prefers, before any finer tie rule.

    ``recall:R``: among the settings whose recall ``tp / positives`` is at least R (all of them when there
    are no positives; when none reaches R, those of the highest recall), those with the fewest false
    positives. ``f1``: among those of the highest F1 (0 where undefined), the fewest false positives.
    Recall and F1 are compared as float64 quotients, as :class:`OperatingPoint` computes them.

    Args:
        tp: (...) positive images found by each setting (any shape, the same images for every setting).
        fp: (...) negative images found by each setting.
        positives: how many images have the class.
        objective: ``recall`` or ``f1``.

    Returns:
        (...) bool, True for the preferred settings (at least one).
    """
    tp, fp = np.asarray(tp, dtype=np.int64), np.asarray(fp, dtype=np.int64)
    if objective.kind == RECALL:
        choices = (tp / positives >= objective.target) if positives else np.ones(tp.shape, dtype=bool)
        if not choices.any():
            choices = tp == tp.max()
    elif objective.kind == F1:
        denominator = tp + fp + positives  # 2 tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
        choices = f1 == f1.max()
    else:
        raise ValueError(f"the {objective} objective does not choose by detection counts")
    return choices & (fp == fp[choices].min())


def threshold_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection counts of every candidate threshold of one class: "found where ``score >= t``".

    Args:
        scores: (N,) the class's probability per image.
        positive: (N,) bool, the image has the class.

    Returns:
        ``thresholds`` (U,) the distinct scores, increasing; ``tp`` (U,) and ``fp`` (U,) the positive and
        negative images whose score reaches each.
    """
    thresholds, cells = np.unique(np.asarray(scores), return_inverse=True)
    positive = np.asarray(positive, dtype=bool)

    def reaching(rows: np.ndarray) -> np.ndarray:  # (U,) images of ``rows`` with a score >= each threshold
        return np.bincount(cells[rows], minlength=thresholds.size)[::-1].cumsum()[::-1]

    return thresholds, reaching(positive), reaching(~positive)


def flag_threshold(scores: np.ndarray, positive: np.ndarray, objective: Objective) -> float:
    """The threshold of one class chosen by ``objective`` among its distinct scores (exact): see
    :func:`objective_choices`; remaining ties go to the most true positives (the lowest threshold).

    Args:
        scores: (N,) the class's probability per image (N >= 1).
        positive: (N,) bool, the image has the class.
        objective: ``recall`` or ``f1``.
    """
    thresholds, tp, fp = threshold_counts(scores, positive)
    if thresholds.size == 0:
        raise ValueError("no images to choose a threshold on")
    choices = objective_choices(tp, fp, int(np.count_nonzero(positive)), objective)
    return float(thresholds[np.flatnonzero(choices & (tp == tp[choices].max()))[0]])


def check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``(images, C)`` probabilities as an array (ValueError for another shape)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise ValueError(f"probabilities must be (images, classes), got shape {probabilities.shape}")
    return probabilities


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """The most probable class of each row of ``(images, C)`` probabilities (the lower index on a tie)."""
    return np.argmax(check_probabilities(probabilities), axis=1)


def check_class_thresholds(thresholds: Sequence[float], names: Sequence[str]) -> np.ndarray:
    """Per-class decision thresholds as a (C,) float64 array; ValueError naming the class of a value that is not
    a number in [0, 1]."""
    values = list(thresholds)
    if len(values) != len(names):
        raise ValueError(f"expected {len(names)} class thresholds ({', '.join(names)}), got {len(values)}")
    for name, value in zip(names, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not 0 <= value <= 1:
            raise ValueError(f"class_thresholds.{name} must be a number in [0, 1], got {value!r}")
    return np.asarray(values, dtype=np.float64)


def class_flags(probabilities: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    """(images, C) bool, which classes each image is flagged as: ``p_c >= t_c``; without thresholds (the
    argmax decision) only its most probable class."""
    probabilities = check_probabilities(probabilities)
    classes = probabilities.shape[1]
    if thresholds is None:
        return np.eye(classes, dtype=bool)[predicted_classes(probabilities)]
    return probabilities >= check_class_thresholds(thresholds, [str(c) for c in range(classes)])


def thresholded_classes(probabilities: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    """The decision rule of per-class thresholds: each image gets its most probable flagged class
    (``p_c >= t_c``), or its most probable class when no class is flagged (the lower index on a tie).

    Args:
        probabilities: (images, C) class probabilities.
        thresholds: (C,) per-class thresholds in [0, 1]; None: the plain most probable class.

    Returns:
        (images,) int64 class indices.
    """
    probabilities = check_probabilities(probabilities)
    if thresholds is None:
        return predicted_classes(probabilities)
    flags = class_flags(probabilities, thresholds)  # (images, C)
    flagged = np.argmax(np.where(flags, probabilities, -np.inf), axis=1)
    return np.where(flags.any(axis=1), flagged, np.argmax(probabilities, axis=1))


@dataclass
class ClassDecision:
    """What tune decides for a single-label data set (:func:`decide_classes`)."""

    objective: Objective
    thresholds: np.ndarray | None  # (C,) flag thresholds tuned on all images; None: the argmax decision
    predicted: np.ndarray  # (N,) labels under ``thresholds`` (in-sample)
    operating: list[OperatingPoint]  # per class, the one-vs-rest counts of its flag (in-sample)
    curves: list[tuple[np.ndarray, np.ndarray]]  # per class (tp (U,), fp (U,)) of every candidate threshold
    heldout_thresholds: dict[int, np.ndarray | None]  # fold -> thresholds tuned on the other folds
    heldout_predicted: np.ndarray | None  # (N,) each fold's labels under the other folds' thresholds
    heldout_operating: dict[int, list[OperatingPoint]]  # fold -> per class, its flag's counts held out


def decide_classes(probabilities: np.ndarray, truth: Sequence[int], folds: Sequence[int],
                   objective: Objective) -> ClassDecision:
    """The decision of a single-label classifier tuned on out-of-fold probabilities, with the held-out check.

    ``kaggle``: the most probable class (no thresholds; a class is flagged where it is the label).
    ``recall:R`` / ``f1``: per class one-vs-rest, "flagged when ``p_c >= t_c``", ``t_c`` chosen among the
    distinct probabilities by :func:`flag_threshold`; labels by :func:`thresholded_classes`. Held out: each
    fold decided with the thresholds tuned on the other folds (none with a single fold).

    Args:
        probabilities: (N, C) out-of-fold class probabilities.
        truth: (N,) true class indices.
        folds: (N,) the fold of each image.
        objective: the objective.
    """
    probabilities = check_probabilities(probabilities)
    truth, folds = np.asarray(truth, dtype=np.int64), np.asarray(folds)
    count, classes = probabilities.shape
    if truth.shape != (count,) or folds.shape != (count,):
        raise ValueError(f"truth {truth.shape} and folds {folds.shape} must be ({count},)")
    if count and (truth.min() < 0 or truth.max() >= classes):
        raise ValueError(f"truth holds classes outside 0..{classes - 1}")
    present = np.eye(classes, dtype=bool)[truth]  # (N, C)

    def tuned(rows: np.ndarray) -> np.ndarray | None:
        if objective.kind == KAGGLE:
            return None
        return np.array([flag_threshold(probabilities[rows, c], present[rows, c], objective) for c in range(classes)])

    thresholds = tuned(np.ones(count, dtype=bool))
    fold_ids = np.unique(folds)
    heldout_thresholds, heldout_operating, heldout_predicted = {}, {}, None
    if fold_ids.size >= 2:
        heldout_predicted = np.empty(count, dtype=np.int64)
        for fold in fold_ids:
            own = folds == fold
            fold_thresholds = heldout_thresholds[int(fold)] = tuned(~own)
            heldout_predicted[own] = thresholded_classes(probabilities[own], fold_thresholds)
            heldout_operating[int(fold)] = operating_points(class_flags(probabilities[own], fold_thresholds),
                                                            present[own])
    return ClassDecision(
        objective=objective, thresholds=thresholds, predicted=thresholded_classes(probabilities, thresholds),
        operating=operating_points(class_flags(probabilities, thresholds), present),
        curves=[threshold_counts(probabilities[:, c], present[:, c])[1:] for c in range(classes)],
        heldout_thresholds=heldout_thresholds, heldout_predicted=heldout_predicted,
        heldout_operating=heldout_operating)


def operating_document(labels: Sequence[str], objective: Objective, operating: Sequence[OperatingPoint],
                       heldout: Mapping[int, Sequence[OperatingPoint]]) -> dict:
    """The image-level entries of a thresholds.json (docs/thresholds-format.md), by class label.

    Args:
        labels: the class keys (``"1"``... or the class names).
        objective: what the thresholds were chosen by.
        operating: per class, the tuned thresholds' counts (in-sample).
        heldout: ``{fold: per class, the counts of the fold under the thresholds tuned without it}``.

    Returns:
        ``{"objective", "operating" (with "target_reached"), "heldout_operating" ({label: {fold: ...}}),
        "heldout_operating_pooled"}``.
    """
    pooled = pooled_points(heldout)
    return {
        "objective": str(objective),
        "operating": {label: {**point.to_dict(), "target_reached": reaches(point, objective)}
                      for label, point in zip(labels, operating, strict=True)},
        "heldout_operating": {label: {str(fold): points[index].to_dict() for fold, points in heldout.items()}
                              for index, label in enumerate(labels)},
        "heldout_operating_pooled": None if pooled is None else {
            label: point.to_dict() for label, point in zip(labels, pooled, strict=True)},
    }


def decision_document(decision: ClassDecision, names: Sequence[str]) -> dict:
    """The decision entries of a folders-layout thresholds.json (docs/thresholds-format.md): ``decision``
    (``"argmax"`` or ``"thresholded"``), ``class_thresholds`` and ``heldout_class_thresholds`` (null for argmax)
    and the :func:`operating_document` entries, by class name."""
    def by_name(values: np.ndarray | None) -> dict | None:
        return None if values is None else {name: float(value) for name, value in zip(names, values, strict=True)}

    thresholded = decision.thresholds is not None
    return {
        "decision": "thresholded" if thresholded else "argmax",
        "class_thresholds": by_name(decision.thresholds),
        "heldout_class_thresholds": {str(fold): by_name(values) for fold, values in
                                     decision.heldout_thresholds.items()} if thresholded else None,
        **operating_document(names, decision.objective, decision.operating, decision.heldout_operating),
    }


def decision_thresholds(document: Mapping, names: Sequence[str]) -> np.ndarray | None:
    """The per-class thresholds a folders-layout thresholds.json decides with (docs/thresholds-format.md),
    checked: None for ``"decision": "argmax"``, (C,) in class order for ``"thresholded"``, to pass to
    :func:`thresholded_classes`.

    Raises:
        ValueError: another decision, a missing class, or a value that is not a number in [0, 1] (naming it).
    """
    decision = document.get("decision", "argmax")
    if decision == "argmax":
        return None
    values = document.get("class_thresholds")
    if decision != "thresholded" or not isinstance(values, Mapping):
        raise ValueError(f"decision must be 'argmax', or 'thresholded' with a class_thresholds mapping, got "
                         f"{decision!r}")
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"class_thresholds lacks {', '.join(missing)}")
    return check_class_thresholds([values[name] for name in names], names)


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], num_classes: int) -> np.ndarray:
    """``(C, C)`` counts: row = true class, column = predicted class."""
    truth, predicted = np.asarray(truth, np.int64), np.asarray(predicted, np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth and predictions differ in length: {truth.shape} vs {predicted.shape}")
    for name, values in (("truth", truth), ("predictions", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} hold classes outside 0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def classification_scores(truth: Sequence[int], predicted: Sequence[int], names: Sequence[str]) -> dict:
    """Accuracy, per-class precision, recall, F1 and support, macro F1 and the confusion matrix.

    A precision (recall) with nothing predicted (nothing true) as the class is None; F1 then too.

    Returns:
        ``{"images", "accuracy", "macro_f1", "classes": {name: {precision, recall, f1, support}},
        "confusion": [[...], ...]}`` (rows true, columns predicted).
    """
    matrix = confusion_matrix(truth, predicted, len(names))
    total = int(matrix.sum())
    per_class, f1s = {}, []
    for index, name in enumerate(names):
        hits, predicted_count = int(matrix[index, index]), int(matrix[:, index].sum())
        support = int(matrix[index].sum())
        precision = hits / predicted_count if predicted_count else None
        recall = hits / support if support else None
        f1 = (2 * precision * recall / (precision + recall) if precision + recall else 0.0) \
            if precision is not None and recall is not None else None
        if f1 is not None:
            f1s.append(f1)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {"images": total, "accuracy": float(np.trace(matrix) / total) if total else None,
            "macro_f1": float(np.mean(f1s)) if f1s else None, "classes": per_class, "confusion": matrix.tolist()}


def majority_class(counts: Sequence[int]) -> int:
    """The index of the most frequent class (the lower index on a tie)."""
    counts = np.asarray(counts)
    if counts.ndim != 1 or not counts.size:
        raise ValueError("counts must be a non-empty list of per-class image counts")
    return int(np.argmax(counts))
