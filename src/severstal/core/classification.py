"""Single-label classification (the folders layout): decisions, scores and the majority-class baseline.

NumPy in, NumPy out. Classes are indices ``0..C-1`` in the data set's class order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """The most probable class of each row of ``(images, C)`` probabilities (the lower index on a tie)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise ValueError(f"probabilities must be (images, classes), got shape {probabilities.shape}")
    return np.argmax(probabilities, axis=1)


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
