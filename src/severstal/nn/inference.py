"""Predict whole images with trained folds: scale, pad for the network, flip-TTA average, back to full size.

Images are read by the same tf.data code as in training (:func:`pipeline.read_image`), so a model
sees its inputs exactly as it was trained on them. The segmenter pads to multiples of 32 inside
the network; its probabilities are resized back to each image's own size (256 x 1600 on Kaggle).
A fold whose outputs are not finite (NaN weights) stops the prediction with a message naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.constants import NUM_CLASSES
from ..core.ensemble import flip, mean_probabilities
from ..infra.artifacts import BEST_WEIGHTS, CONFIG_FILE, FoldState, Paths, fold_status, read_saved_config
from ..infra.config import saved_config
from ..infra.errors import ConfigError, UserError
from .models import build_model
from .pipeline import InputSpec, image_dataset, input_spec
from .tfsetup import keras


@dataclass
class FoldModel:
    """A trained fold ready to predict."""

    kind: str  # "cls" or "seg"
    fold: int
    model: keras.Model
    spec: InputSpec
    head: str  # "multilabel" or "binary" (classifier); "masks" (segmenter)
    fold_dir: Path

    @property
    def label(self) -> str:
        return f"{self.kind} fold {self.fold}"


def load_fold_model(paths: Paths, kind: str, fold: int, num_classes: int = NUM_CLASSES) -> FoldModel:
    """Rebuild a fold's model from the config saved with it and load its best weights.

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
    model = build_model(kind, section, num_classes, encoder_weights=False)  # every weight comes from the file
    weights = fold_dir / BEST_WEIGHTS
    try:
        model.load_weights(str(weights))
    except (OSError, ValueError) as error:  # h5py: truncated or not HDF5; Keras: layers or shapes differ
        raise UserError(f"{kind} fold {fold}: {weights} is truncated or not a weights file of this model "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); {retrain}") from None
    spec = input_spec(config.data.height, config.data.width, section.scale)
    head = section.head if kind == "cls" else "masks"
    return FoldModel(kind, fold, model, spec, head, fold_dir)


def predict_tta(model: keras.Model, images: np.ndarray, tta: Sequence[str], kind: str) -> np.ndarray:
    """Arithmetic mean of the model's outputs over flipped copies of ``images``.

    Args:
        model: a segmenter (outputs ``(batch, h, w, classes)``) or classifier (``(batch, outputs)``).
        images: ``(batch, h, w, 3)`` uint8.
        tta: flip names (``core.ensemble.FLIPS``), validated with the config.
        kind: ``seg`` (outputs are flipped back) or ``cls``.

    Returns:
        float32 mean of the outputs.
    """
    def outputs():
        for name in tta:
            output = np.asarray(model.predict_on_batch(np.ascontiguousarray(flip(images, name))), dtype=np.float32)
            yield flip(output, name) if kind == "seg" else output

    return mean_probabilities(outputs())


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(h, w, c)`` probabilities to ``shape`` = (height, width)."""
    height, width = int(shape[0]), int(shape[1])
    if probabilities.shape[:2] == (height, width):
        return probabilities
    resized = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, probabilities.shape[-1])


def class_probabilities(outputs: np.ndarray, head: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Classifier outputs as ``(batch, classes)``: a binary head's one probability repeated for every class."""
    return np.repeat(outputs, num_classes, axis=1) if head == "binary" else outputs


def check_finite(outputs: np.ndarray, fold_model: FoldModel, start: int) -> None:
    """UserError when a fold's outputs hold NaN or infinity (its weights are broken)."""
    if not np.isfinite(outputs).all():
        raise UserError(f"{fold_model.label} predicts non-finite probabilities (NaN or infinity) for images "
                        f"{start}..{start + len(outputs) - 1}: its weights {fold_model.fold_dir / BEST_WEIGHTS} are "
                        f"broken (training diverged?). Re-run severstal train --model {fold_model.kind} --fold "
                        f"{fold_model.fold} --force, or leave the fold out with --folds")


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
        ``(batch, H, W, classes)`` float32 at each image's own size (images of one batch share a
        size), for a classifier ``(batch, classes)``.

    Raises:
        UserError: the fold's outputs are not finite.
    """
    start = 0
    for images, originals in image_dataset(paths, fold_model.spec, batch_size):
        outputs = predict_tta(fold_model.model, images.numpy(), tta, fold_model.kind)  # (batch, h, w, classes)
        check_finite(outputs, fold_model, start)
        if fold_model.kind == "cls":
            yield start, class_probabilities(outputs, fold_model.head)
        else:
            originals = originals.numpy()  # (batch, 2)
            if len(np.unique(originals, axis=0)) > 1:
                raise UserError(f"images {start}..{start + len(originals) - 1} differ in size "
                                f"({np.unique(originals, axis=0).tolist()}): predict them with --batch-size 1")
            yield start, np.stack([resize_probabilities(p, o) for p, o in zip(outputs, originals, strict=True)])
        start += len(outputs)


def ensembled_batches(fold_models: dict[str, list[FoldModel]], paths: Sequence[Path], tta: Sequence[str],
                      batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Stream the fold-mean probabilities of the images, batch by batch.

    Args:
        fold_models: ``{"seg": [FoldModel, ...], "cls": [...]}`` (``"cls"`` optional).
        paths: image files.
        tta: flips averaged inside each model's prediction.
        batch_size: images per batch.

    Yields:
        ``(start, segmentation (batch, H, W, classes) float32, classification (batch, classes) or None)``.
    """
    streams = {kind: [predict_images(model, paths, tta, batch_size) for model in models]
               for kind, models in fold_models.items() if models}
    kinds = list(streams)
    for outputs in zip(*(stream for kind in kinds for stream in streams[kind]), strict=True):
        starts = {start for start, _ in outputs}
        if len(starts) != 1:
            raise RuntimeError(f"fold models went out of step: batches start at {sorted(starts)}")
        by_kind, position = {}, 0
        for kind in kinds:
            count = len(streams[kind])
            by_kind[kind] = mean_probabilities(output for _, output in outputs[position:position + count])
            position += count
        yield starts.pop(), by_kind["seg"], by_kind.get("cls")
