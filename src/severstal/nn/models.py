"""Classifier and segmenter builders, losses, Keras metrics, the learning-rate schedule and hardware setup.

Both models take uint8 images ``(batch, height, width, 3)`` (0..255) and normalise them inside the
network the way their backbone expects, so the input pipeline and inference feed raw pixels. The
segmenter pads its input to a multiple of 32 and crops its output back, so it accepts any size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.constants import NUM_CLASSES
from .tfsetup import keras, sm, tf

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
EFFICIENTNETS = tuple(f"efficientnetb{i}" for i in range(8))
BACKBONES = RESNETS + EFFICIENTNETS
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEGMENTER_LOSSES = ("bce_dice", "bce_weighted", "focal", "focal_tversky")
KERAS_MODULES = {"backend": keras.backend, "layers": keras.layers, "models": keras.models, "utils": keras.utils}


def check_backbone(name: str) -> str:
    """Return ``name`` if it is a supported backbone, else raise ValueError listing them."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return name


def encoder_weights_setting(value) -> tuple[str | None, Path | None]:
    """Split the config's ``encoder_weights`` into (what segmentation-models loads, a local file to load).

    ``imagenet`` -> ("imagenet", None); ``none``/null -> (None, None); anything else is a path to an
    HDF5 weights file loaded by layer name into the encoder.
    """
    if value is None or str(value).lower() in ("none", "null", ""):
        return None, None
    if str(value).lower() == "imagenet":
        return "imagenet", None
    path = Path(str(value))
    if not path.is_file():
        raise ValueError(f"encoder_weights {value!r} is neither 'imagenet', 'none' nor an existing weights file")
    return None, path


class ImageInput(keras.layers.Layer):
    """uint8 pixels -> floats in the range the backbone was trained on (raw 0..255, or ImageNet-normalised)."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = check_backbone(backbone)

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)  # (batch, h, w, 3)
        if self.backbone in EFFICIENTNETS:
            mean = tf.constant(IMAGENET_MEAN, self.compute_dtype) * 255.0
            std = tf.constant(IMAGENET_STD, self.compute_dtype) * 255.0
            x = (x - mean) / std
        return x

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def pad_amounts(size: int, multiple: int = 32) -> tuple[int, int]:
    """Padding ``(before, after)`` that makes ``size`` a multiple of ``multiple``, split evenly."""
    total = -size % multiple
    return total // 2, total - total // 2


class PadToMultiple(keras.layers.Layer):
    """Pad height and width up to multiples of ``multiple`` (mirror padding; zeros for tiny inputs)."""

    def __init__(self, multiple: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        paddings = [[0, 0], [pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]]
        small = tf.minimum(height, width) < self.multiple // 2 + 1  # SYMMETRIC needs pad <= size
        return tf.cond(small, lambda: tf.pad(x, paddings), lambda: tf.pad(x, paddings, mode="SYMMETRIC"))

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


class CropToReference(keras.layers.Layer):
    """Undo :class:`PadToMultiple`: crop ``x`` to the height and width of ``reference``."""

    def __init__(self, multiple: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, inputs):
        x, reference = inputs
        height, width = tf.shape(reference)[1], tf.shape(reference)[2]
        top, left = (-height % self.multiple) // 2, (-width % self.multiple) // 2
        return x[:, top:top + height, left:left + width, :]

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def _load_encoder_file(model: keras.Model, path: Path) -> None:
    """Load an HDF5 weights file into ``model`` by layer name, skipping what does not fit."""
    before = [w.copy() for w in model.get_weights()]
    model.load_weights(str(path), by_name=True, skip_mismatch=True)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    if changed == 0:
        raise ValueError(f"no layer of {path} matched the encoder by name: is it a weights file for this backbone?")


def _imagenet_guard(build):
    """Run ``build``; turn a failed ImageNet download into a clear error."""
    try:
        return build()
    except OSError as error:  # urllib errors are OSErrors
        raise ValueError(f"could not download ImageNet encoder weights ({error}); set encoder_weights to "
                         "'none' or to a local weights file") from None


def build_segmenter(section: dict) -> keras.Model:
    """A U-Net or FPN with four sigmoid outputs that accepts uint8 images of any size.

    Args:
        section: the config's ``seg`` mapping (architecture, encoder, encoder_weights, decoder_filters,
            pyramid_filters).

    Returns:
        A model ``(batch, h, w, 3) uint8 -> (batch, h, w, 4) float32`` probabilities.
    """
    encoder = check_backbone(section["encoder"])
    weights, local_file = encoder_weights_setting(section.get("encoder_weights"))
    architecture = section.get("architecture", "unet")
    common = {"input_shape": (None, None, 3), "classes": NUM_CLASSES, "activation": "linear",
              "encoder_weights": weights}
    if architecture == "unet":
        filters = tuple(section.get("decoder_filters", (256, 128, 64, 32, 16)))
        if len(filters) != 5:
            raise ValueError(f"seg.decoder_filters needs 5 values, got {list(filters)}")
        network = _imagenet_guard(lambda: sm.Unet(encoder, decoder_filters=filters, **common))
    elif architecture == "fpn":
        network = _imagenet_guard(lambda: sm.FPN(
            encoder, pyramid_block_filters=int(section.get("pyramid_filters", 256)), **common))
    else:
        raise ValueError(f"seg.architecture must be 'unet' or 'fpn', got {architecture!r}")
    network._name = "network"
    if local_file is not None:
        _load_encoder_file(network, local_file)
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = ImageInput(encoder, name="normalise")(images)
    x = PadToMultiple(32, name="pad")(x)
    logits = CropToReference(32, name="crop")([network(x), images])  # (batch, h, w, 4)
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(logits)
    return keras.Model(images, probabilities, name=f"{architecture}_{encoder}")


def build_classifier(section: dict) -> keras.Model:
    """A backbone, global pooling and a small dense head with sigmoid outputs.

    Args:
        section: the config's ``cls`` mapping (backbone, encoder_weights, head, pooling: ``avg``,
            ``max`` (small defects are not averaged away) or ``avgmax`` (both, concatenated),
            dense_units, dropout).

    Returns:
        A model ``(batch, h, w, 3) uint8 -> (batch, 4)`` (head ``multilabel``) or ``(batch, 1)``
        (head ``binary``) float32 probabilities.
    """
    name = check_backbone(section["backbone"])
    head = section.get("head", "multilabel")
    if head not in ("multilabel", "binary"):
        raise ValueError(f"cls.head must be 'multilabel' or 'binary', got {head!r}")
    weights, local_file = encoder_weights_setting(section.get("encoder_weights"))
    backbone = _imagenet_guard(lambda: sm.Backbones.get_backbone(
        name, input_shape=(None, None, 3), weights=weights, include_top=False, **KERAS_MODULES))
    backbone._name = "backbone"
    if local_file is not None:
        _load_encoder_file(backbone, local_file)
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    features = backbone(ImageInput(name, name="normalise")(images))
    pooling = section.get("pooling", "avg")
    pools = {"avg": [keras.layers.GlobalAveragePooling2D(name="average_pool")],
             "max": [keras.layers.GlobalMaxPooling2D(name="max_pool")],
             "avgmax": [keras.layers.GlobalAveragePooling2D(name="average_pool"),
                        keras.layers.GlobalMaxPooling2D(name="max_pool")]}
    if pooling not in pools:
        raise ValueError(f"cls.pooling must be avg, max or avgmax, got {pooling!r}")
    pooled = [pool(features) for pool in pools[pooling]]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="pooled")(pooled)
    x = keras.layers.Dropout(float(section.get("dropout", 0.0)), name="dropout_pooled")(x)
    x = keras.layers.Dense(int(section.get("dense_units", 128)), activation="relu", name="dense")(x)
    x = keras.layers.Dropout(float(section.get("dropout", 0.0)), name="dropout_dense")(x)
    x = keras.layers.Dense(NUM_CLASSES if head == "multilabel" else 1, name="logits")(x)
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(x)
    return keras.Model(images, probabilities, name=f"classifier_{name}")


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer (nested models included).

    The backbones' 0.99 needs hundreds of steps before the moving statistics used at inference
    fit the data; a short run from scratch (the demo) needs a lower value such as 0.9.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"bn_momentum must be in [0, 1), got {momentum}")
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def build_model(kind: str, section: dict) -> keras.Model:
    """``build_classifier`` for ``cls``, ``build_segmenter`` for ``seg``; ``bn_momentum`` applied if set."""
    if kind == "cls":
        model = build_classifier(section)
    elif kind == "seg":
        model = build_segmenter(section)
    else:
        raise ValueError(f"model kind must be 'cls' or 'seg', got {kind!r}")
    if section.get("bn_momentum") is not None:
        set_batchnorm_momentum(model, float(section["bn_momentum"]))
    return model


# ---------------------------------------------------------------- losses

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
    if name == "bce_weighted" and (pos_weight is None or len(pos_weight) != NUM_CLASSES):
        raise ValueError(f"bce_weighted needs seg.pos_weight with {NUM_CLASSES} values, got {pos_weight!r}")

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


# ---------------------------------------------------------------- metrics

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


def segmenter_metrics() -> list:
    """``dice`` (Kaggle, all pairs) and ``pos_dice_1..4`` (Dice over the images that have the class)."""
    return [KaggleDice(name="dice")] + [
        KaggleDice(class_index=c, positive_only=True, name=f"pos_dice_{c + 1}") for c in range(NUM_CLASSES)]


def classifier_metrics() -> list:
    """Accuracy, precision, recall, micro F1 at 0.5 and ROC AUC over all (image, class) pairs."""
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
        keras.metrics.F1Score(average="micro", threshold=0.5, name="f1"),
        keras.metrics.AUC(name="auc"),
    ]


# ---------------------------------------------------------------- optimisation

class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine decay to ``final_fraction`` of the base rate (or constant).

    The rate depends only on the optimizer's step counter, so a resumed run continues the schedule.
    """

    def __init__(self, base_rate: float, warmup_steps: int, total_steps: int, cosine: bool = True,
                 final_fraction: float = 0.01):
        self.base_rate, self.warmup_steps, self.total_steps = float(base_rate), int(warmup_steps), int(total_steps)
        self.cosine, self.final_fraction = bool(cosine), float(final_fraction)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        warm = self.base_rate * tf.minimum(1.0, (step + 1.0) / warmup)
        if not self.cosine:
            return warm
        progress = tf.clip_by_value((step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1)),
                                    0.0, 1.0)
        factor = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, self.base_rate * factor)

    def get_config(self):
        return {"base_rate": self.base_rate, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "cosine": self.cosine, "final_fraction": self.final_fraction}


def learning_rate_schedule(section: dict, steps_per_epoch: int) -> WarmupCosine:
    """The schedule of a model section (``learning_rate``, ``schedule``, ``warmup_epochs``, ``epochs``)."""
    schedule = section.get("schedule", "cosine")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    return WarmupCosine(section["learning_rate"], int(section.get("warmup_epochs", 0)) * steps_per_epoch,
                        int(section["epochs"]) * steps_per_epoch, cosine=schedule == "cosine")


def compile_model(model: keras.Model, kind: str, section: dict, steps_per_epoch: int, jit_compile: bool = False):
    """Compile with Adam, the section's schedule, its loss and the metrics of its kind."""
    optimizer = keras.optimizers.Adam(learning_rate_schedule(section, steps_per_epoch))
    if kind == "seg":
        loss = segmentation_loss(section.get("loss", "bce_dice"), section.get("pos_weight"),
                                 float(section.get("focal_gamma", 2.0)))
        metrics = segmenter_metrics()
    else:
        loss, metrics = keras.losses.BinaryCrossentropy(name="bce"), classifier_metrics()
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=bool(jit_compile))
    return model


def monitor_of(kind: str, section: dict) -> tuple[str, str]:
    """The validation quantity that picks the best epoch and stops early, and ``max`` or ``min``.

    ``section['monitor']`` names it (default ``val_dice`` for a segmenter, ``val_loss`` for a
    classifier); losses are minimised, everything else maximised.
    """
    monitor = section.get("monitor") or ("val_dice" if kind == "seg" else "val_loss")
    known = (["val_loss", "val_dice", *(f"val_pos_dice_{c}" for c in range(1, NUM_CLASSES + 1))] if kind == "seg"
             else ["val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc"])
    if monitor not in known:
        raise ValueError(f"{kind}.monitor must be one of {', '.join(known)}, got {monitor!r}")
    return monitor, "min" if monitor.endswith("loss") else "max"


# ---------------------------------------------------------------- hardware

def configure_hardware(hardware: dict):
    """Apply the ``hardware`` section: mixed precision and the distribution strategy.

    Returns:
        ``(strategy, description)``; build and compile models inside ``strategy.scope()``.
    """
    gpus = tf.config.list_physical_devices("GPU")
    setting = hardware.get("mixed_precision", "auto")
    if setting not in ("auto", True, False):
        raise ValueError(f"hardware.mixed_precision must be auto, true or false, got {setting!r}")
    mixed = bool(gpus) if setting == "auto" else setting
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if hardware.get("distribute") else tf.distribute.get_strategy()
    description = (f"{len(gpus)} GPU(s)" if gpus else "CPU") + (", mixed precision" if mixed else ", float32") + (
        ", XLA" if hardware.get("xla") else "") + (
        f", MirroredStrategy over {strategy.num_replicas_in_sync}" if hardware.get("distribute") else "")
    return strategy, description
