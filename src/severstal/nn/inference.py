"""Predict whole images with trained folds in one pass: every fold and flip of a model in one batched call.

Each image file is read and decoded once, at its own size, and area-resized to each model's input size
(the segmenter and classifier share one when their ``scale`` is the same) by the same tf.data code as
validation in training (:func:`pipeline.image_dataset`), and as an exported model does (``nn.export``). For
each kind of model, one compiled TensorFlow function stacks the batch's flipped copies, runs every
fold model on that stack once, flips the segmenter's outputs back and averages over folds and
flips on the device; only the mean comes back to the host, where it is resized once to each
image's own size (256 x 1600 on Kaggle). The segmenter pads to multiples of 32 inside the network.
Under mixed precision (``hardware.mixed_precision``, on a GPU) the models compute in float16 and the
mean is taken in float32; the OOF statistics use this same path. A fold whose outputs are not
finite (NaN weights) stops the prediction with a message naming it. :func:`tiled_probabilities`
predicts an image larger than the data set's images in overlapping tiles of their size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.ensemble import FLIPS
from ..core.tiles import blend, tile_grid
from ..infra.artifacts import BEST_WEIGHTS, CONFIG_FILE, FoldState, Paths, fold_status, read_saved_config
from ..infra.config import saved_config
from ..infra.errors import ConfigError, UserError
from .models import build_model
from .pipeline import InputSpec, area_resize, decode_any, image_dataset, input_spec
from .tfsetup import keras, tf


@dataclass
class FoldModel:
    """A trained fold ready to predict."""

    kind: str  # "cls" or "seg"
    fold: int
    model: keras.Model
    spec: InputSpec
    head: str  # "multilabel" or "binary" (classifier); "masks" (segmenter)
    fold_dir: Path
    num_classes: int

    @property
    def label(self) -> str:
        return f"{self.kind} fold {self.fold}"


def load_fold_model(paths: Paths, kind: str, fold: int) -> FoldModel:
    """Rebuild a fold's model from the config saved with it (its classes, size and model keys) and load its
    best weights.

    Raises:
        UserError: the fold has not finished training, its saved config is unusable, or its
            weights file is truncated or belongs to another model (with the command that fixes it).
    """
    fold_dir = paths.fold_dir(kind, fold)
    retrain = f"re-run severstal train --model {kind} --fold {fold} --force"
    if fold_status(fold_dir).state is not FoldState.FINISHED:
        raise UserError(f"{kind} fold {fold} has no finished model in {fold_dir}: train it first "
                        f"(severstal train --model {kind} --fold {fold})")
    saved = read_saved_config(fold_dir / CONFIG_FILE)
    try:
        config = saved_config(saved or {}, str(fold_dir / CONFIG_FILE))
    except ConfigError as error:
        raise UserError(f"{kind} fold {fold}: its saved config is not usable ({error}); {retrain}") from None
    section = config.model(kind)
    num_classes = config.data.num_classes
    model = build_model(kind, section, num_classes, encoder_weights=False)  # every weight comes from the file
    weights = fold_dir / BEST_WEIGHTS
    try:
        model.load_weights(str(weights))
    except (OSError, ValueError) as error:  # h5py: truncated or not HDF5; Keras: layers or shapes differ
        raise UserError(f"{kind} fold {fold}: {weights} is truncated or not a weights file of this model "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); {retrain}") from None
    spec = input_spec(*config.data.shape, section.scale)
    head = section.head if kind == "cls" else "masks"
    return FoldModel(kind, fold, model, spec, head, fold_dir, num_classes)


def flip_tensor(images, name: str):
    """``core.ensemble.flip`` of a ``(batch, h, w, ...)`` tensor, as a TensorFlow op."""
    if name not in FLIPS:
        raise ValueError(f"unknown flip {name!r}; expected one of {', '.join(FLIPS)}")
    axes = {"none": [], "hflip": [2], "vflip": [1], "both": [1, 2]}[name]
    return tf.reverse(images, axes) if axes else images


class FoldEnsemble:
    """The fold models of one kind, run as one: the arithmetic mean over folds and flips, in one compiled call.

    Args:
        fold_models: from :func:`load_fold_model`, one kind, one input size and head.
        tta: flip names (``core.ensemble.FLIPS``).

    Raises:
        UserError: the folds differ in input size or head (their configs differ).
    """

    def __init__(self, fold_models: Sequence[FoldModel], tta: Sequence[str]):
        if not fold_models:
            raise ValueError("no fold models to ensemble")
        first = fold_models[0]
        for other in fold_models[1:]:
            if (other.kind, other.spec, other.head, other.num_classes) != (first.kind, first.spec, first.head,
                                                                           first.num_classes):
                raise UserError(f"{first.label} and {other.label} cannot be averaged: their saved configs differ in "
                                f"image size, head or classes ({first.spec.size}, {first.head}, {first.num_classes} "
                                f"vs {other.spec.size}, {other.head}, {other.num_classes}); retrain one or choose "
                                "folds with --folds")
        self.fold_models, self.tta = list(fold_models), list(tta)
        self.kind, self.spec, self.head, self.num_classes = first.kind, first.spec, first.head, first.num_classes
        signature = tf.TensorSpec((None, *first.spec.size, 3), tf.uint8)
        self.function = tf.function(self.averaged, input_signature=[signature], reduce_retracing=True)

    def averaged(self, images):
        """TensorFlow ops: ``(mean over folds and flips, per-fold all-finite flags)`` of ``(batch, h, w, 3)`` uint8
        images at ``spec.size``; a classifier's mean is its raw outputs' (see :meth:`__call__`)."""
        flips = len(self.tta)
        stacked = tf.concat([flip_tensor(images, name) for name in self.tta], axis=0)  # (flips * batch, h, w, 3)
        total, finite = None, []
        for fold_model in self.fold_models:
            outputs = tf.cast(fold_model.model(stacked, training=False), tf.float32)  # (flips * batch, ...)
            finite.append(tf.reduce_all(tf.math.is_finite(outputs)))
            total = outputs if total is None else total + outputs
        parts = tf.split(total, flips, axis=0)  # per flip, summed over folds
        if self.kind == "seg":
            parts = [flip_tensor(part, name) for part, name in zip(parts, self.tta, strict=True)]
        mean = tf.add_n(parts) / float(flips * len(self.fold_models))  # (batch, h, w, classes) or (batch, outputs)
        return mean, tf.stack(finite)

    def __call__(self, images, start: int, what: str = "images") -> np.ndarray:
        """The mean over folds and flips of a batch ``(batch, h, w, 3)`` uint8 at ``spec.size`` (``start``: its
        first image's index and ``what`` they are, for messages); a classifier's as ``(batch, classes)``.

        Raises:
            UserError: a fold's outputs are not finite.
        """
        mean, finite = self.function(images)
        for fold_model, ok in zip(self.fold_models, finite.numpy(), strict=True):
            if not ok:
                raise UserError(f"{fold_model.label} predicts non-finite probabilities (NaN or infinity) for {what} "
                                f"{start}..{start + len(images) - 1}: its weights {fold_model.fold_dir / BEST_WEIGHTS} "
                                f"are broken (training diverged?). Re-run severstal train --model {fold_model.kind} "
                                f"--fold {fold_model.fold} --force, or leave the fold out with --folds")
        mean = mean.numpy()
        return class_probabilities(mean, self.head, self.num_classes) if self.kind == "cls" else mean


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(h, w, c)`` probabilities to ``shape`` = (height, width)."""
    height, width = int(shape[0]), int(shape[1])
    if probabilities.shape[:2] == (height, width):
        return probabilities
    resized = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, probabilities.shape[-1])


def class_probabilities(outputs: np.ndarray, head: str, num_classes: int) -> np.ndarray:
    """Classifier outputs as ``(batch, classes)``: a binary head's one probability repeated for every class."""
    return np.repeat(outputs, num_classes, axis=1) if head == "binary" else outputs


def ensembled_batches(fold_models: dict[str, list[FoldModel]], paths: Sequence, tta: Sequence[str],
                      batch_size: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Stream the fold- and flip-mean probabilities of the images, batch by batch, each file read once.

    Args:
        fold_models: ``{"seg": [FoldModel, ...], "cls": [...]}`` (either may be left out).
        paths: image files.
        tta: flips to average.
        batch_size: images per batch.

    Yields:
        ``(start, {kind: probabilities})``: the batch's first index into ``paths``; a segmenter's
        ``(batch, H, W, classes)`` float32 at each image's own size (images of one batch share a
        size), a classifier's ``(batch, classes)``.

    Raises:
        UserError: a fold's outputs are not finite, or the images of a batch differ in size.
    """
    ensembles = {kind: FoldEnsemble(models, tta) for kind, models in fold_models.items() if models}
    specs = list(dict.fromkeys(ensemble.spec for ensemble in ensembles.values()))
    start = 0
    for images, originals in image_dataset(paths, specs, batch_size):
        outputs = {kind: ensemble(images[specs.index(ensemble.spec)], start) for kind, ensemble in ensembles.items()}
        count = len(originals)
        if "seg" in outputs:
            originals = originals.numpy()  # (batch, 2)
            if len(np.unique(originals, axis=0)) > 1:
                raise UserError(f"images {start}..{start + count - 1} differ in size "
                                f"({np.unique(originals, axis=0).tolist()}): predict them with --batch-size 1")
            outputs["seg"] = np.stack([resize_probabilities(p, o) for p, o in zip(outputs["seg"], originals,
                                                                                     strict=True)])
        yield start, outputs
        start += count


def ensembled_tiles(fold_models: dict[str, list[FoldModel]], paths: Sequence, tta: Sequence[str], overlap: int,
                    batch_size: int, tile_shape: Sequence[int] | None = None
                    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """The fold- and flip-mean probabilities of images larger than the data set's, one image at a time, by tiles.

    Args:
        fold_models: as :func:`ensembled_batches`.
        paths: image files, each at least a tile in both directions.
        tta: flips to average.
        overlap: the least overlap of neighbouring tiles, in the image's pixels.
        batch_size: tiles per call of an ensemble.
        tile_shape: (height, width) of a tile; default the data set's image size.

    Yields:
        ``(index into paths, {kind: probabilities})``: a segmenter's ``(H, W, classes)`` at the image's size,
        a classifier's ``(classes,)`` (each class at its most probable tile), as :func:`tiled_probabilities`.
    """
    ensembles = {kind: FoldEnsemble(models, tta) for kind, models in fold_models.items() if models}
    for index, path in enumerate(paths):
        image = decode_any(tf.io.read_file(str(path))).numpy()
        yield index, {kind: tiled_probabilities(ensemble, image, overlap, batch_size, tile_shape)
                      for kind, ensemble in ensembles.items()}


def tiled_probabilities(ensemble: FoldEnsemble, image: np.ndarray, overlap: int, batch_size: int,
                        tile_shape: Sequence[int] | None = None) -> np.ndarray:
    """The fold- and flip-mean probabilities of one image larger than the data set's images, by tiles.

    The image is cut into overlapping tiles (``core.tiles.tile_grid``) of ``tile_shape``, each
    scaled to the models' input size as training scaled whole images (area resize), run through
    ``ensemble`` ``batch_size`` tiles at a time, and for a segmenter scaled back and blended
    (``core.tiles.blend``); a classifier's probability of a class is its highest over the tiles.

    Args:
        ensemble: one kind's :class:`FoldEnsemble`.
        image: ``(height, width, 3)`` uint8, at least ``tile_shape`` in both directions.
        overlap: the least overlap of neighbouring tiles, in the image's pixels.
        batch_size: tiles per call of the ensemble.
        tile_shape: (height, width) of a tile; default the data set's image size (``ensemble.spec.original``).

    Returns:
        A segmenter's ``(height, width, classes)`` float32, a classifier's ``(classes,)``.

    Raises:
        ValueError: the image is smaller than a tile, or a bad overlap or batch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a (height, width, 3) uint8 image, got {image.shape} {image.dtype}")
    tile_shape = tuple(int(n) for n in (tile_shape or ensemble.spec.original))
    origins = tile_grid(image.shape[:2], tile_shape, overlap)
    outputs = []
    for first in range(0, len(origins), batch_size):
        tiles = np.stack([image[top:top + tile_shape[0], left:left + tile_shape[1]]
                          for top, left in origins[first:first + batch_size]])  # (tiles, tile h, tile w, 3)
        if tile_shape != tuple(ensemble.spec.size):
            tiles = area_resize(tiles, ensemble.spec.size)
        outputs.append(ensemble(tiles, first, "tiles"))  # (tiles, h, w, classes) or (tiles, classes)
    outputs = np.concatenate(outputs)
    if ensemble.kind == "cls":
        return outputs.max(axis=0)
    scaled = np.stack([resize_probabilities(tile, tile_shape) for tile in outputs])  # (tiles, tile h, tile w, classes)
    return blend(scaled, origins, image.shape[:2], overlap)
