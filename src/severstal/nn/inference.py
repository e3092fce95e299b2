"""Predict whole images with a trained fold: scale, pad for the network, flip-TTA average, back to full size.

Images are read by the same tf.data code as in training (:func:`pipeline.read_image`), so a model
sees its inputs exactly as it was trained on them. The segmenter pads to multiples of 32 inside
the network; its probabilities are resized back to each image's own size (256 x 1600 on Kaggle).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..core.constants import BEST_WEIGHTS, FINISHED, NUM_CLASSES
from ..infra.config import Config
from .models import build_model
from .pipeline import InputSpec, image_dataset, input_spec
from .tfsetup import keras

FLIPS = ("none", "hflip", "vflip", "both")


def check_tta(tta) -> tuple[str, ...]:
    """Validate ``inference.tta`` (a flip name or a list of them) and return the names."""
    names = (tta,) if isinstance(tta, str) else tuple(tta or ())
    unknown = [name for name in names if name not in FLIPS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"inference.tta must be a non-empty list of distinct flips from {', '.join(FLIPS)}; "
                         f"got {tta!r}")
    return names


def flip(images: np.ndarray, name: str) -> np.ndarray:
    """Flip ``(batch, h, w, ...)`` arrays: ``hflip`` mirrors left-right, ``vflip`` top-bottom, ``both`` both.

    Every flip is its own inverse, so the same call maps predictions back.
    """
    if name == "none":
        return images
    if name == "hflip":
        return images[:, :, ::-1]
    if name == "vflip":
        return images[:, ::-1]
    if name == "both":
        return images[:, ::-1, ::-1]
    raise ValueError(f"unknown flip {name!r}; expected one of {', '.join(FLIPS)}")


@dataclass
class FoldModel:
    """A trained fold ready to predict."""

    kind: str  # "cls" or "seg"
    model: keras.Model
    spec: InputSpec
    head: str  # "multilabel" or "binary" (classifier); "masks" (segmenter)
    fold_dir: Path


def load_fold_model(config: Config, kind: str, fold: int) -> FoldModel:
    """Rebuild a fold's model from the config saved with it and load its best weights.

    Raises:
        FileNotFoundError: the fold has no finished training (``best.weights.h5`` or its config is missing).
    """
    fold_dir = config.fold_dir(kind, fold)
    weights, saved_config = fold_dir / BEST_WEIGHTS, fold_dir / "config.yaml"
    if not (fold_dir / FINISHED).is_file() or not weights.is_file() or not saved_config.is_file():
        raise FileNotFoundError(f"{kind} fold {fold} has no finished model in {fold_dir}: "
                                f"train it first (severstal train --model {kind} --fold {fold})")
    saved = yaml.safe_load(saved_config.read_text())
    section = saved[kind]
    model = build_model(kind, {**section, "encoder_weights": "none"})  # all weights come from the fold's file
    model.load_weights(str(weights))
    data = saved["data"]
    spec = input_spec(int(data["height"]), int(data["width"]), float(section.get("scale", 1.0)))
    head = section.get("head", "multilabel") if kind == "cls" else "masks"
    return FoldModel(kind, model, spec, head, fold_dir)


def predict_tta(model: keras.Model, images: np.ndarray, tta: Sequence[str], kind: str) -> np.ndarray:
    """Arithmetic mean of the model's outputs over flipped copies of ``images``.

    Args:
        model: a segmenter (outputs ``(batch, h, w, 4)``) or classifier (``(batch, outputs)``).
        images: ``(batch, h, w, 3)`` uint8.
        tta: flip names (see :func:`check_tta`).
        kind: ``seg`` (outputs are flipped back) or ``cls``.

    Returns:
        float32 mean of the outputs.
    """
    total = None
    for name in check_tta(tta):
        output = np.asarray(model.predict_on_batch(np.ascontiguousarray(flip(images, name))), dtype=np.float32)
        if kind == "seg":
            output = flip(output, name)
        total = output if total is None else total + output
    return total / len(tta)


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(h, w, c)`` probabilities to ``shape`` = (height, width)."""
    height, width = int(shape[0]), int(shape[1])
    if probabilities.shape[:2] == (height, width):
        return probabilities
    resized = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, probabilities.shape[-1])


def class_probabilities(outputs: np.ndarray, head: str) -> np.ndarray:
    """Classifier outputs as ``(batch, 4)``: a binary head's one probability repeated for every class."""
    return np.repeat(outputs, NUM_CLASSES, axis=1) if head == "binary" else outputs


def predict_images(fold_model: FoldModel, paths: Sequence, tta: Sequence[str], batch_size: int
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """Predict images in batches, streaming.

    Args:
        fold_model: from :func:`load_fold_model`.
        paths: image files.
        tta: flips to average.
        batch_size: images per batch.

    Yields:
        ``(start, probabilities)``: the batch's first index into ``paths`` and, for a segmenter,
        ``(batch, H, W, 4)`` float32 at each image's own size (images of one batch share a size),
        for a classifier ``(batch, 4)``.
    """
    start = 0
    for images, originals in image_dataset(paths, fold_model.spec, batch_size):
        outputs = predict_tta(fold_model.model, images.numpy(), tta, fold_model.kind)  # (batch, h, w, 4)
        if fold_model.kind == "cls":
            yield start, class_probabilities(outputs, fold_model.head)
        else:
            originals = originals.numpy()  # (batch, 2)
            if len(np.unique(originals, axis=0)) > 1:
                raise ValueError(f"images {start}..{start + len(originals) - 1} differ in size "
                                 f"({np.unique(originals, axis=0).tolist()}): predict them with batch size 1")
            yield start, np.stack([resize_probabilities(p, o) for p, o in zip(outputs, originals, strict=True)])
        start += len(outputs)
