"""Classifier and segmenter builders from the config's ``cls`` and ``seg`` sections.

Both models take uint8 images ``(batch, height, width, 3)`` (0..255) and normalise them inside the
network the way their backbone expects, so the input pipeline and inference feed raw pixels. The
segmenter pads its input to a multiple of 32 and crops its output back, so it accepts any size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..core.constants import NUM_CLASSES
from ..infra.schema import BACKBONES, EFFICIENTNETS, ClassifierSection, SegmenterSection
from .tfsetup import keras, sm, tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERAS_MODULES = {"backend": keras.backend, "layers": keras.layers, "models": keras.models, "utils": keras.utils}


def check_backbone(name: str) -> str:
    """Return ``name`` if it is a supported backbone, else raise ValueError listing them."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return name


def encoder_weights_setting(value: str | None) -> tuple[str | None, Path | None]:
    """Split the config's ``encoder_weights`` into (what segmentation-models loads, a local file to load).

    ``imagenet`` -> ("imagenet", None); ``none`` -> (None, None); anything else is a path to an
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


def build_segmenter(section: SegmenterSection, num_classes: int = NUM_CLASSES) -> keras.Model:
    """A U-Net or FPN with one sigmoid output per class that accepts uint8 images of any size.

    Args:
        section: the config's ``seg`` section (architecture, encoder, encoder_weights, decoder_filters,
            pyramid_filters).
        num_classes: output channels.

    Returns:
        A model ``(batch, h, w, 3) uint8 -> (batch, h, w, num_classes) float32`` probabilities.
    """
    encoder = check_backbone(section.encoder)
    weights, local_file = encoder_weights_setting(section.encoder_weights)
    common = {"input_shape": (None, None, 3), "classes": num_classes, "activation": "linear",
              "encoder_weights": weights}
    if section.architecture == "unet":
        filters = tuple(section.decoder_filters)
        network = _imagenet_guard(lambda: sm.Unet(encoder, decoder_filters=filters, **common))
    elif section.architecture == "fpn":
        network = _imagenet_guard(lambda: sm.FPN(encoder, pyramid_block_filters=section.pyramid_filters, **common))
    else:
        raise ValueError(f"seg.architecture must be 'unet' or 'fpn', got {section.architecture!r}")
    network._name = "network"
    if local_file is not None:
        _load_encoder_file(network, local_file)
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = ImageInput(encoder, name="normalise")(images)
    x = PadToMultiple(32, name="pad")(x)
    logits = CropToReference(32, name="crop")([network(x), images])  # (batch, h, w, classes)
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(logits)
    return keras.Model(images, probabilities, name=f"{section.architecture}_{encoder}")


def build_classifier(section: ClassifierSection, num_classes: int = NUM_CLASSES) -> keras.Model:
    """A backbone, global pooling and a small dense head with sigmoid outputs.

    Args:
        section: the config's ``cls`` section (backbone, encoder_weights, head, pooling: ``avg``,
            ``max`` (small defects are not averaged away) or ``avgmax`` (both, concatenated),
            dense_units, dropout).
        num_classes: outputs of a multilabel head.

    Returns:
        A model ``(batch, h, w, 3) uint8 -> (batch, num_classes)`` (head ``multilabel``) or
        ``(batch, 1)`` (head ``binary``) float32 probabilities.
    """
    name = check_backbone(section.backbone)
    head = section.head
    if head not in ("multilabel", "binary"):
        raise ValueError(f"cls.head must be 'multilabel' or 'binary', got {head!r}")
    weights, local_file = encoder_weights_setting(section.encoder_weights)
    backbone = _imagenet_guard(lambda: sm.Backbones.get_backbone(
        name, input_shape=(None, None, 3), weights=weights, include_top=False, **KERAS_MODULES))
    backbone._name = "backbone"
    if local_file is not None:
        _load_encoder_file(backbone, local_file)
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    features = backbone(ImageInput(name, name="normalise")(images))
    pooling = section.pooling
    pools = {"avg": [keras.layers.GlobalAveragePooling2D(name="average_pool")],
             "max": [keras.layers.GlobalMaxPooling2D(name="max_pool")],
             "avgmax": [keras.layers.GlobalAveragePooling2D(name="average_pool"),
                        keras.layers.GlobalMaxPooling2D(name="max_pool")]}
    if pooling not in pools:
        raise ValueError(f"cls.pooling must be avg, max or avgmax, got {pooling!r}")
    pooled = [pool(features) for pool in pools[pooling]]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="pooled")(pooled)
    x = keras.layers.Dropout(section.dropout, name="dropout_pooled")(x)
    x = keras.layers.Dense(section.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(section.dropout, name="dropout_dense")(x)
    x = keras.layers.Dense(num_classes if head == "multilabel" else 1, name="logits")(x)
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


def build_model(kind: str, section: ClassifierSection | SegmenterSection, num_classes: int = NUM_CLASSES,
                encoder_weights: bool = True) -> keras.Model:
    """``build_classifier`` for ``cls``, ``build_segmenter`` for ``seg``; ``bn_momentum`` applied if set.

    Args:
        kind: ``cls`` or ``seg``.
        section: the model's config section.
        num_classes: the number of classes.
        encoder_weights: load the section's encoder weights; False builds the bare architecture
            (every weight then comes from a trained fold's file: nothing is downloaded).
    """
    if not encoder_weights:
        section = dataclasses.replace(section, encoder_weights="none")
    if kind == "cls":
        model = build_classifier(section, num_classes)
    elif kind == "seg":
        model = build_segmenter(section, num_classes)
    else:
        raise ValueError(f"model kind must be 'cls' or 'seg', got {kind!r}")
    if section.bn_momentum is not None:
        set_batchnorm_momentum(model, float(section.bn_momentum))
    return model
