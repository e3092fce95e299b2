"""Segmenter losses and the Keras metrics of both models (Kaggle's Dice per (image, class) pair)."""

from __future__ import annotations

from ..core.constants import NUM_CLASSES
from ..infra.schema import SEGMENTER_LOSSES
from .tfsetup import keras, tf

EPSILON = 1e-7


def logits_of(probability):
    """The logits behind sigmoid probabilities, for numerically stable cross-entropy.

    A Keras sigmoid (the models' last layer) keeps its input on its output as ``_keras_logits``;
    Keras' own cross-entropy losses use it the same way. Other tensors (tests, hand-made inputs)
    get ``log(p) - log(1 - p)`` of ``p`` clipped to ``[EPSILON, 1 - EPSILON]``.
    """
    logits = getattr(probability, "_keras_logits", None)
    if logits is not None:
        return tf.cast(logits, tf.float32)
    clipped = tf.clip_by_value(tf.cast(probability, tf.float32), EPSILON, 1.0 - EPSILON)
    return tf.math.log(clipped) - tf.math.log1p(-clipped)


def pixel_cross_entropy(truth, logits, pos_weight=None):
    """Per-pixel binary cross-entropy ``(batch, h, w, c)`` from logits, positive pixels weighted per class.

    ``pos_weight * y * softplus(-z) + (1 - y) * softplus(z)``: exact for any logit, so a confidently
    wrong pixel keeps its gradient (``-log`` of a clipped probability has none beyond the clip).
    """
    if pos_weight is None:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=truth, logits=logits)
    return tf.nn.weighted_cross_entropy_with_logits(labels=truth, logits=logits,
                                                    pos_weight=tf.constant(pos_weight, tf.float32))


def soft_dice(truth, probability, smooth: float = 1.0):
    """Smoothed soft Dice of each class over the whole batch: ``(c,)``.

    Per (image, class) pair, an empty true mask would score only when the summed probability over
    all its pixels stays below ``smooth``: that term would drown the positive pairs' gradient.
    """
    intersection = tf.reduce_sum(truth * probability, axis=[0, 1, 2])
    total = tf.reduce_sum(truth, axis=[0, 1, 2]) + tf.reduce_sum(probability, axis=[0, 1, 2])
    return (2.0 * intersection + smooth) / (total + smooth)


def segmentation_loss(name: str, pos_weight=None, bce_weight: float = 1.0, dice_weight: float = 1.0,
                      focal_gamma: float = 2.0, tversky_alpha: float = 0.7, tversky_gamma: float = 0.75):
    """A Keras loss ``(truth, probabilities) -> (batch,)`` for ``(batch, h, w, classes)`` masks.

    Cross-entropy terms are computed from the logits (:func:`logits_of`); Dice and Tversky terms
    per class over the whole batch, added to every image.

    Args:
        name: ``bce`` (cross-entropy), ``bce_dice`` (``bce_weight`` x cross-entropy + ``dice_weight``
            x (1 - mean soft Dice)), ``focal`` (focal loss, ``focal_gamma``) or ``focal_tversky``
            (``(1 - Tversky index) ** tversky_gamma``, false negatives weighted ``tversky_alpha``).
        pos_weight: one weight per class for the positive pixels of the cross-entropy term
            (``bce``, ``bce_dice``, ``focal``); None: 1.

    Returns:
        The loss function.
    """
    if name not in SEGMENTER_LOSSES:
        raise ValueError(f"seg.loss must be one of {', '.join(SEGMENTER_LOSSES)}, got {name!r}")

    def loss(truth, probability):
        logits = logits_of(probability)  # before any cast: a cast tensor has no _keras_logits
        truth = tf.cast(truth, tf.float32)
        probability = tf.cast(probability, tf.float32)
        if name in ("bce", "bce_dice", "focal"):
            cross_entropy = pixel_cross_entropy(truth, logits, pos_weight)  # (batch, h, w, c)
            if name == "focal":  # (1 - p_true) ** gamma, p_true = exp(-unweighted cross-entropy)
                p_true = tf.exp(-tf.nn.sigmoid_cross_entropy_with_logits(labels=truth, logits=logits))
                cross_entropy = (1.0 - p_true) ** focal_gamma * cross_entropy
            per_image = tf.reduce_mean(cross_entropy, axis=[1, 2, 3])
            if name != "bce_dice":
                return per_image
            return bce_weight * per_image + dice_weight * (1.0 - tf.reduce_mean(soft_dice(truth, probability)))
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


class TunedDice(keras.metrics.Metric):
    """Kaggle's mean Dice with the best pixel threshold and minimum area of each class, as ``tune`` picks them.

    For every (pixel threshold, class) the state holds the summed gains ``kept Dice - emptied Dice``
    of the (image, class) pairs by how many minimum areas their predicted area reaches (the
    histogram of ``core.thresholds``), so every (threshold, minimum area) is scored exactly. Without
    the connected-component filter and the classifier gate, it tracks the tuned post-processing's
    score far better than the raw Dice at 0.5, which false-positive specks on empty pairs dominate.

    Args:
        pixel_thresholds: the thresholds searched.
        min_areas: the minimum areas searched, in pixels of the full-size image (increasing).
        area_scale: full-size pixels per pixel the model sees (``1 / scale**2``).
        num_classes: the mask channels.
    """

    def __init__(self, pixel_thresholds=(0.5,), min_areas=(0,), area_scale: float = 1.0,
                 num_classes: int = NUM_CLASSES, name: str = "tuned_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pixel_thresholds = tuple(float(t) for t in pixel_thresholds)
        self.min_areas = tuple(float(a) for a in min_areas)
        self.area_scale, self.num_classes = float(area_scale), int(num_classes)
        bins = len(self.min_areas) + 1
        self.gains = self.add_weight(name="gains", shape=(len(self.pixel_thresholds), num_classes * bins),
                                     initializer="zeros", dtype=tf.float64)
        self.emptied = self.add_weight(name="emptied", shape=(num_classes,), initializer="zeros", dtype=tf.float64)
        self.images = self.add_weight(name="images", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.float32)  # (batch, h, w, c)
        y_pred = tf.cast(y_pred, tf.float32)
        true_area = tf.reduce_sum(truth, axis=[1, 2])  # (batch, c)
        empty_dice = tf.cast(true_area == 0, tf.float64)
        bins = len(self.min_areas) + 1
        edges = tf.constant(self.min_areas, tf.float32)
        rows = []
        for threshold in self.pixel_thresholds:
            predicted = tf.cast(y_pred > threshold, tf.float32)
            area = tf.reduce_sum(predicted, axis=[1, 2])  # (batch, c)
            intersection = tf.reduce_sum(truth * predicted, axis=[1, 2])
            total = area + true_area
            kept = tf.cast(tf.where(total > 0, 2.0 * intersection / tf.maximum(total, 1.0), 1.0), tf.float64)
            reached = tf.searchsorted(edges, tf.reshape(area * self.area_scale, [-1]), side="right")
            cell = tf.reshape(tf.range(self.num_classes) * bins, [1, -1]) + tf.reshape(reached, tf.shape(area))
            rows.append(tf.math.unsorted_segment_sum(tf.reshape(kept - empty_dice, [-1]), tf.reshape(cell, [-1]),
                                                     self.num_classes * bins))
        self.gains.assign_add(tf.stack(rows))
        self.emptied.assign_add(tf.reduce_sum(empty_dice, axis=0))
        self.images.assign_add(tf.cast(tf.shape(truth)[0], tf.float64))

    def result(self):
        bins = len(self.min_areas) + 1
        gains = tf.reshape(self.gains, (len(self.pixel_thresholds), self.num_classes, bins))
        kept = tf.cumsum(gains, axis=-1, reverse=True)[..., 1:]  # (thresholds, c, areas): areas reaching >= A
        best = tf.reduce_max(kept, axis=[0, 2]) + self.emptied  # (c,) summed Dice of each class's best setting
        return tf.cast(tf.math.divide_no_nan(tf.reduce_mean(best), self.images), tf.float32)

    def reset_state(self):
        for variable in (self.gains, self.emptied, self.images):
            variable.assign(tf.zeros_like(variable))


def segmenter_metrics(num_classes: int = NUM_CLASSES, pixel_thresholds=(0.5,), min_areas=(0,),
                      area_scale: float = 1.0) -> list:
    """``tuned_dice`` (:class:`TunedDice` on the given grid), ``dice`` (Kaggle, all pairs, at 0.5) and
    ``pos_dice_1..C`` (Dice at 0.5 over the images that have the class)."""
    return [TunedDice(pixel_thresholds, min_areas, area_scale, num_classes), KaggleDice(name="dice")] + [
        KaggleDice(class_index=c, positive_only=True, name=f"pos_dice_{c + 1}") for c in range(num_classes)]


def classifier_metrics(single_label: bool = False) -> list:
    """Accuracy, precision, recall, micro F1 at 0.5 and ROC AUC over all (image, class) pairs.

    Args:
        single_label: a softmax head: the accuracy is that of the most probable class per image.
    """
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy") if single_label else
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
        keras.metrics.F1Score(average="micro", threshold=0.5, name="f1"),
        keras.metrics.AUC(name="auc"),
    ]
