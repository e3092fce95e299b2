"""Segmenter losses and the Keras metrics of both models (Kaggle's Dice per (image, class) pair)."""

from __future__ import annotations

from ..core.constants import NUM_CLASSES
from ..infra.schema import SEGMENTER_LOSSES
from .tfsetup import keras, tf

EPSILON = 1e-7


def _pixel_bce(truth, probability, pos_weight=None):
    """Per-pixel binary cross-entropy ``(batch, h, w, c)``, positives weighted per class."""
    probability = tf.clip_by_value(probability, EPSILON, 1.0 - EPSILON)
    positive = truth * tf.math.log(probability)
    if pos_weight is not None:
        positive = positive * tf.constant(pos_weight, tf.float32)
    return -(positive + (1.0 - truth) * tf.math.log(1.0 - probability))


def soft_dice(truth, probability, smooth: float = 1.0):
    """Smoothed soft Dice of each class over the whole batch: ``(c,)``.

    Per (image, class) pair, an empty true mask would score only when the summed probability over
    all its pixels stays below ``smooth``: that term would drown the positive pairs' gradient.
    """
    intersection = tf.reduce_sum(truth * probability, axis=[0, 1, 2])
    total = tf.reduce_sum(truth, axis=[0, 1, 2]) + tf.reduce_sum(probability, axis=[0, 1, 2])
    return (2.0 * intersection + smooth) / (total + smooth)


def segmentation_loss(name: str, pos_weight=None, focal_gamma: float = 2.0, tversky_alpha: float = 0.7,
                      tversky_gamma: float = 0.75):
    """A Keras loss ``(truth, probabilities) -> (batch,)`` for ``(batch, h, w, 4)`` masks.

    Dice and Tversky terms are computed per class over the whole batch and added to every image.

    Args:
        name: ``bce_dice`` (BCE + 1 - soft Dice), ``bce_weighted`` (BCE with per-class positive
            weights ``pos_weight``), ``focal`` (focal loss, ``focal_gamma``) or ``focal_tversky``
            (``(1 - Tversky index) ** tversky_gamma``, false negatives weighted ``tversky_alpha``).
        pos_weight: 4 positive weights for ``bce_weighted``.

    Returns:
        The loss function.
    """
    if name not in SEGMENTER_LOSSES:
        raise ValueError(f"seg.loss must be one of {', '.join(SEGMENTER_LOSSES)}, got {name!r}")
    if name == "bce_weighted" and not pos_weight:
        raise ValueError(f"bce_weighted needs seg.pos_weight (one value per class), got {pos_weight!r}")

    def loss(truth, probability):
        truth = tf.cast(truth, tf.float32)
        probability = tf.cast(probability, tf.float32)
        if name == "bce_dice":  # the batch's Dice term is added to every image's BCE
            bce = tf.reduce_mean(_pixel_bce(truth, probability), axis=[1, 2, 3])
            return bce + 1.0 - tf.reduce_mean(soft_dice(truth, probability))
        if name == "bce_weighted":
            return tf.reduce_mean(_pixel_bce(truth, probability, pos_weight), axis=[1, 2, 3])
        if name == "focal":
            clipped = tf.clip_by_value(probability, EPSILON, 1.0 - EPSILON)
            p_true = truth * clipped + (1.0 - truth) * (1.0 - clipped)
            return tf.reduce_mean(-((1.0 - p_true) ** focal_gamma) * tf.math.log(p_true), axis=[1, 2, 3])
        true_positive = tf.reduce_sum(truth * probability, axis=[0, 1, 2])  # (c,), over the batch like Dice
        false_negative = tf.reduce_sum(truth * (1.0 - probability), axis=[0, 1, 2])
        false_positive = tf.reduce_sum((1.0 - truth) * probability, axis=[0, 1, 2])
        tversky = (true_positive + 1.0) / (
            true_positive + tversky_alpha * false_negative + (1.0 - tversky_alpha) * false_positive + 1.0)
        return tf.zeros_like(truth[:, 0, 0, 0]) + tf.reduce_mean((1.0 - tversky) ** tversky_gamma)

    loss.__name__ = name
    return loss


# ----------------------------------------------------------------------------- metrics

class KaggleDice(keras.metrics.Metric):
    """Dice per (image, class) at a threshold, averaged over pairs as Kaggle scores it (empty/empty = 1).

    Args:
        threshold: probability above which a pixel is predicted.
        class_index: restrict to one class channel (0..3); None: all classes.
        positive_only: average only over pairs whose true mask is not empty (0 when there are none).
    """

    def __init__(self, threshold: float = 0.5, class_index: int | None = None, positive_only: bool = False,
                 name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold, self.class_index, self.positive_only = threshold, class_index, positive_only
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.float32)  # (batch, h, w, c)
        predicted = tf.cast(y_pred > self.threshold, tf.float32)
        if self.class_index is not None:
            truth = truth[..., self.class_index:self.class_index + 1]
            predicted = predicted[..., self.class_index:self.class_index + 1]
        intersection = tf.reduce_sum(truth * predicted, axis=[1, 2])  # (batch, c)
        true_area = tf.reduce_sum(truth, axis=[1, 2])
        total = true_area + tf.reduce_sum(predicted, axis=[1, 2])
        dice = tf.where(total > 0, 2.0 * intersection / tf.maximum(total, 1.0), 1.0)
        counted = tf.cast(true_area > 0, tf.float32) if self.positive_only else tf.ones_like(dice)
        self.total.assign_add(tf.cast(tf.reduce_sum(dice * counted), tf.float64))
        self.count.assign_add(tf.cast(tf.reduce_sum(counted), tf.float64))

    def result(self):
        return tf.cast(tf.math.divide_no_nan(self.total, self.count), tf.float32)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


def segmenter_metrics(num_classes: int = NUM_CLASSES) -> list:
    """``dice`` (Kaggle, all pairs) and ``pos_dice_1..C`` (Dice over the images that have the class)."""
    return [KaggleDice(name="dice")] + [
        KaggleDice(class_index=c, positive_only=True, name=f"pos_dice_{c + 1}") for c in range(num_classes)]


def classifier_metrics() -> list:
    """Accuracy, precision, recall, micro F1 at 0.5 and ROC AUC over all (image, class) pairs."""
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
        keras.metrics.F1Score(average="micro", threshold=0.5, name="f1"),
        keras.metrics.AUC(name="auc"),
    ]
