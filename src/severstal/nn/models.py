"""Classifier and segmenter builders from the config's ``cls`` and ``seg`` sections.

Both models take uint8 images ``(batch, height, width, 3)`` (0..255) and normalise them inside the
network the way their backbone expects, so the input pipeline and inference feed raw pixels. The
segmenter pads its input to a multiple of 32 and crops its output back, so it accepts any size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import h5py
from classification_models.weights import WEIGHTS_COLLECTION
from efficientnet import model as efficientnet_model

from ..core.constants import NUM_CLASSES
from ..infra.schema import CLASSIFIER_BACKBONES, EFFICIENTNETS, ClassifierSection, SegmenterSection
from .tfsetup import keras, sm, tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERAS_MODULES = {"backend": keras.backend, "layers": keras.layers, "models": keras.models, "utils": keras.utils}
CACHE_SUBDIR = "models"  # the Keras cache's folder for weights files
Fetcher = Callable[[str, str, str], str | Path]  # (file name, URL, file hash) -> the local file's path


def check_backbone(name: str) -> str:
    """Return ``name`` if it is a supported backbone, else raise ValueError listing them."""
    if name not in CLASSIFIER_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(CLASSIFIER_BACKBONES)}")
    return name


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """A backbone's no-top ImageNet weights file, as the library that builds the backbone publishes it."""

    name: str
    url: str
    file_hash: str  # md5 (resnets) or sha256 (efficientnets); keras' get_file tells them apart by length


# keras_applications.inception_v3's no-top weights (classification_models builds InceptionV3 from it)
INCEPTION_V3_NO_TOP = WeightsFile(
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "https://github.com/fchollet/deep-learning-models/releases/download/v0.5/"
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "bcbd6486424b2319ff4ef7d526e38f63")


def imagenet_weights_file(backbone: str) -> WeightsFile:
    """The no-top ImageNet weights file of ``backbone``, from its library's own weight table.

    Args:
        backbone: a supported backbone: resnets come from classification_models' ``WEIGHTS_COLLECTION``,
            efficientnets from the efficientnet package's ``WEIGHTS_HASHES``.

    Returns:
        The file's name, URL and hash, e.g. ``resnet34_imagenet_1000_no_top.h5``.
    """
    check_backbone(backbone)
    if backbone == "inceptionv3":
        return INCEPTION_V3_NO_TOP
    if backbone in EFFICIENTNETS:
        model_name = f"efficientnet-b{backbone.removeprefix('efficientnetb')}"
        name = f"{model_name}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5"
        return WeightsFile(name, efficientnet_model.BASE_WEIGHTS_PATH + name,
                           efficientnet_model.WEIGHTS_HASHES[model_name][1])
    entries = [entry for entry in WEIGHTS_COLLECTION
               if entry["model"] == backbone and entry["dataset"] == "imagenet" and not entry["include_top"]]
    if len(entries) != 1:
        raise ValueError(f"classification_models lists {len(entries)} no-top ImageNet weights files for {backbone}, "
                         "expected one")
    return WeightsFile(entries[0]["name"], entries[0]["url"], entries[0]["md5"])


def weights_cache_folder() -> Path:
    """Where :func:`fetch_with_keras` keeps weights files: ``$KERAS_HOME/models``, else ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / CACHE_SUBDIR


def fetch_with_keras(name: str, url: str, file_hash: str) -> str:
    """The default fetcher: keras' ``get_file`` into :func:`weights_cache_folder` (a cached file is not downloaded).

    Args:
        name: the file's name in the cache.
        url: where to download it from when it is not cached.
        file_hash: its md5 or sha256; a cached file that does not match is downloaded again.

    Returns:
        The local file's path.

    Raises:
        OSError: the download failed (no internet, HTTP error).
    """
    try:
        return keras.utils.get_file(name, url, cache_subdir=CACHE_SUBDIR, file_hash=file_hash,
                                    cache_dir=str(weights_cache_folder().parent))
    except Exception as error:  # keras wraps urllib's errors in a bare Exception("URL fetch failure on ...")
        if type(error) is not Exception:
            raise
        raise OSError(str(error)) from error


def fetch_imagenet_weights(backbone: str, fetcher: Fetcher | None = None) -> Path:
    """Make sure the ImageNet weights file of ``backbone`` is available locally, downloading it if need be.

    Args:
        backbone: a supported backbone.
        fetcher: ``fetcher(name, url, file_hash) -> path``; None is :func:`fetch_with_keras`.

    Returns:
        The local file's path.

    Raises:
        ValueError: the file could not be fetched; the message says where to put it by hand.
    """
    file = imagenet_weights_file(backbone)
    fetch = fetch_with_keras if fetcher is None else fetcher
    try:
        return Path(fetch(file.name, file.url, file.file_hash))
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        raise ValueError(
            f"could not download the ImageNet weights of {backbone}, {file.name}, from {file.url} ({error}). "
            f"Without internet: copy {file.name} from a machine with internet (where `severstal weights` "
            f"downloads it into ~/.keras/{CACHE_SUBDIR}/) into {weights_cache_folder()}/ here, or set "
            f"encoder_weights to the local file's path (e.g. --set seg.encoder_weights=/path/to/{file.name}), or to "
            "none (random initial weights)") from None


def encoder_weights_file(backbone: str, setting: str | None, fetcher: Fetcher | None = None) -> Path | None:
    """The weights file the config's ``encoder_weights`` asks for: fetched (imagenet), given (a path) or None (none).

    Args:
        backbone: the encoder's backbone.
        setting: ``imagenet``, ``none`` (or None) or the path of an HDF5 weights file.
        fetcher: see :func:`fetch_imagenet_weights`.

    Returns:
        The file to load into the encoder by layer name, or None for random initial weights.
    """
    if setting is None or str(setting).lower() in ("none", "null", ""):
        return None
    if str(setting).lower() == "imagenet":
        return fetch_imagenet_weights(backbone, fetcher)
    path = Path(str(setting))
    if not path.is_file():
        raise ValueError(f"encoder_weights {setting!r} is neither 'imagenet', 'none' nor an existing weights file")
    return path


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
        elif self.backbone == "inceptionv3":  # keras_applications' "tf" mode: -1..1
            x = x / 127.5 - 1.0
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


def _hdf5_names(group: h5py.Group, attribute: str) -> list[str]:
    """A list of names Keras stores as an HDF5 attribute (split into ``name0``, ``name1``, ... when long)."""
    chunks = [group.attrs[attribute]] if attribute in group.attrs else []
    while f"{attribute}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{attribute}{len(chunks)}"])
    return [name.decode() if isinstance(name, bytes) else str(name) for chunk in chunks for name in chunk]


def weights_file_layers(path: Path) -> dict[str, list[tuple[int, ...]]]:
    """The layers with weights of a Keras HDF5 weights file, by name, with their weights' shapes.

    Args:
        path: a file in Keras' layer-by-layer HDF5 layout (``save_weights("x.h5")``, or a whole model's ``.h5``).

    Returns:
        ``{layer name: [shape of each weight]}`` in the file's order.
    """
    try:
        with h5py.File(path, "r") as file:
            group = file["model_weights"] if "layer_names" not in file.attrs and "model_weights" in file else file
            names = _hdf5_names(group, "layer_names")
            if not names:
                raise ValueError(f"{path} is not a Keras HDF5 weights file (it lists no layers)")
            layers = {name: [tuple(group[name][weight].shape) for weight in _hdf5_names(group[name], "weight_names")]
                      for name in names}
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 weights file ({error})") from None
    return {name: shapes for name, shapes in layers.items() if shapes}


def _first(names, count: int = 3) -> str:
    """Up to ``count`` names for a message, then ``...`` if there are more."""
    names = list(names)
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "") if names else "none"


def load_encoder_weights(model: keras.Model, path: Path) -> None:
    """Load a Keras HDF5 weights file into the layers of ``model`` that have the same names (the encoder's).

    Every layer of the file that has weights must find a layer of ``model`` with its name and weight
    shapes, so a file of another backbone fails instead of loading in part. Layers of ``model`` that
    the file lacks (a decoder, a head) keep their weights.

    Args:
        model: the segmentation-models network (the backbone's layers are its own) or the bare backbone.
        path: the weights file: ImageNet's, or one given as ``encoder_weights``.
    """
    in_file = weights_file_layers(path)
    in_model = {layer.name: [tuple(weight.shape) for weight in layer.trainable_weights + layer.non_trainable_weights]
                for layer in model.layers if layer.weights}
    unmatched = [name for name, shapes in in_file.items() if in_model.get(name) != shapes]
    if len(unmatched) == len(in_file):
        raise ValueError(f"no layer of {path} matched the encoder by name (the file's layers: {_first(in_file)}; the "
                         f"encoder's: {_first(in_model)}): is it a weights file for this backbone?")
    if unmatched:
        raise ValueError(f"{len(unmatched)} of the {len(in_file)} layers with weights of {path} match no layer of the "
                         f"encoder by name and shapes ({_first(unmatched, 5)}): it is the weights file of another "
                         "backbone, or one with a classification top; use this backbone's no-top file")
    model.load_weights(str(path), by_name=True)


def build_segmenter(section: SegmenterSection, num_classes: int = NUM_CLASSES, *,
                    fetcher: Fetcher | None = None) -> keras.Model:
    """A U-Net or FPN with one sigmoid output per class that accepts uint8 images of any size.

    Args:
        section: the config's ``seg`` section (architecture, encoder, encoder_weights, decoder_filters,
            pyramid_filters).
        num_classes: output channels.
        fetcher: fetches ImageNet weights files (see :func:`fetch_imagenet_weights`); None: keras' cache.

    Returns:
        A model ``(batch, h, w, 3) uint8 -> (batch, h, w, num_classes) float32`` probabilities.
    """
    encoder = check_backbone(section.encoder)
    if section.architecture not in ("unet", "fpn"):
        raise ValueError(f"seg.architecture must be 'unet' or 'fpn', got {section.architecture!r}")
    weights_file = encoder_weights_file(encoder, section.encoder_weights, fetcher)
    common = {"input_shape": (None, None, 3), "classes": num_classes, "activation": "linear", "encoder_weights": None}
    if section.architecture == "unet":
        network = sm.Unet(encoder, decoder_filters=tuple(section.decoder_filters), **common)
    else:
        network = sm.FPN(encoder, pyramid_block_filters=section.pyramid_filters, **common)
    network._name = "network"
    if weights_file is not None:
        load_encoder_weights(network, weights_file)
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = ImageInput(encoder, name="normalise")(images)
    x = PadToMultiple(32, name="pad")(x)
    logits = CropToReference(32, name="crop")([network(x), images])  # (batch, h, w, classes)
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(logits)
    return keras.Model(images, probabilities, name=f"{section.architecture}_{encoder}")


def build_classifier(section: ClassifierSection, num_classes: int = NUM_CLASSES, *,
                     fetcher: Fetcher | None = None) -> keras.Model:
    """A backbone, global pooling and a small dense head with sigmoid (or softmax) outputs.

    Args:
        section: the config's ``cls`` section (backbone, encoder_weights, head, pooling: ``avg``,
            ``max`` (small defects are not averaged away) or ``avgmax`` (both, concatenated),
            dense_units, dropout).
        num_classes: outputs of a multilabel head.
        fetcher: fetches ImageNet weights files (see :func:`fetch_imagenet_weights`); None: keras' cache.

    Returns:
        A model ``(batch, h, w, 3) uint8 -> (batch, num_classes)`` (head ``multilabel``: a sigmoid per class;
        ``softmax``: one class per image) or ``(batch, 1)`` (head ``binary``) float32 probabilities.
    """
    name = check_backbone(section.backbone)
    head = section.head
    if head not in ("multilabel", "binary", "softmax"):
        raise ValueError(f"cls.head must be 'multilabel', 'binary' or 'softmax', got {head!r}")
    weights_file = encoder_weights_file(name, section.encoder_weights, fetcher)
    backbone = sm.Backbones.get_backbone(name, input_shape=(None, None, 3), weights=None, include_top=False,
                                         **KERAS_MODULES)
    backbone._name = "backbone"
    if weights_file is not None:
        load_encoder_weights(backbone, weights_file)
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
    x = keras.layers.Dense(1 if head == "binary" else num_classes, name="logits")(x)
    activation = "softmax" if head == "softmax" else "sigmoid"
    probabilities = keras.layers.Activation(activation, dtype="float32", name="probabilities")(x)
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
                encoder_weights: bool = True, *, fetcher: Fetcher | None = None) -> keras.Model:
    """``build_classifier`` for ``cls``, ``build_segmenter`` for ``seg``; ``bn_momentum`` applied if set.

    Args:
        kind: ``cls`` or ``seg``.
        section: the model's config section.
        num_classes: the number of classes.
        encoder_weights: load the section's encoder weights; False builds the bare architecture
            (every weight then comes from a trained fold's file: nothing is downloaded).
        fetcher: fetches ImageNet weights files (see :func:`fetch_imagenet_weights`); None: keras' cache.
    """
    if not encoder_weights:
        section = dataclasses.replace(section, encoder_weights="none")
    if kind == "cls":
        model = build_classifier(section, num_classes, fetcher=fetcher)
    elif kind == "seg":
        model = build_segmenter(section, num_classes, fetcher=fetcher)
    else:
        raise ValueError(f"model kind must be 'cls' or 'seg', got {kind!r}")
    if section.bn_momentum is not None:
        set_batchnorm_momentum(model, float(section.bn_momentum))
    return model
