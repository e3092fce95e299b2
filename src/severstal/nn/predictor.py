"""The inspection line's Python API: an exported model (``severstal export``) with its post-processing.

    from severstal import Predictor
    predictor = Predictor.load("exports/demo")
    result = predictor.predict(image)        # (height, width, 3) uint8 RGB, a batch of them, or an image file
    result.masks, result.defective, result.defects, result.latency_ms

It needs NumPy, OpenCV and TensorFlow only: it imports TensorFlow directly (not through ``nn.tfsetup``,
which loads segmentation-models for training) and this package's pure core (post-processing, defects,
tiles), so it runs where neither the training stack nor this package's other dependencies are installed.
The SavedModel gives the fold- and flip-mean probabilities; the thresholds of ``export.json`` are applied
exactly as ``severstal predict`` applies them (``core.postprocess``), and each image's record is the one
``defects.json`` holds (``core.defects``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..core.classification import class_flags, thresholded_classes
from ..core.defects import image_record, label_record
from ..core.exports import CLASSIFICATION, INPUT, MANIFEST, SEGMENTATION, check_manifest
from ..core.postprocess import ClassThresholds, final_masks, postprocess_masks
from ..core.tiles import blend, tile_grid

TILES_PER_CALL = 8  # tiles of a large image per call of the SavedModel (each runs every fold and flip)


@dataclass
class Prediction:
    """One image's prediction.

    Attributes:
        record: the image's ``defects.json`` record (docs/defects-format.md): the decision and the defects.
        masks: ``(height, width, classes)`` uint8 0/1 post-processed masks (segmentation data), else None.
        probabilities: ``(height, width, classes)`` float32 fold- and flip-mean probabilities (segmentation
            data), else None.
        classifier_probabilities: ``(classes,)`` float32, where the export has a classifier, else None.
        label_map: ``(height, width)`` uint8, class number per pixel (masks layout exports), else None.
        latency_ms: the time of the whole call (model and post-processing) divided by its images.
    """

    record: dict
    masks: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    classifier_probabilities: np.ndarray | None = None
    label_map: np.ndarray | None = None
    latency_ms: float = 0.0
    defects: list = field(init=False)
    defective: bool | None = field(init=False)

    def __post_init__(self):
        self.defects = self.record.get("defects", [])
        self.defective = self.record.get("defective")

    @property
    def label(self) -> str | None:
        """The predicted class of a classification export, else None."""
        return self.record.get("label")


class Predictor:
    """An exported model and its post-processing (load with :meth:`load`).

    Args:
        model: the loaded SavedModel (``tf.saved_model.load``).
        manifest: its ``export.json``, parsed.
        directory: the export folder.
    """

    def __init__(self, model, manifest: dict, directory: str | os.PathLike):
        self.model, self.manifest, self.directory = model, manifest, Path(directory)
        self.function = model.signatures[self.manifest["signature"]]
        self.class_ids = [int(item["class"]) for item in self.manifest["classes"]]
        self.class_names = [str(item["name"]) for item in self.manifest["classes"]]
        self.shape = tuple(self.manifest["input"]["shape"][1:3])  # (height, width)
        self.segmentation = SEGMENTATION in self.manifest["outputs"]
        self.thresholds = [ClassThresholds.from_dict(item, f"postprocessing.{i + 1}.")
                           for i, item in enumerate(self.manifest.get("postprocessing") or [])]
        tiles = self.manifest.get("tiles")
        self.tile_overlap = int(tiles["overlap"]) if isinstance(tiles, dict) else None
        decision = self.manifest.get("decision") or {}  # checked by check_manifest
        self.decision_thresholds = None if decision.get("rule", "argmax") == "argmax" else np.array(
            [float(decision["thresholds"][name]) for name in self.class_names])  # (classes,)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Predictor:
        """Load ``directory``'s SavedModel and ``export.json`` (written by ``severstal export``).

        Raises:
            FileNotFoundError: the folder or its ``export.json`` is missing.
            ValueError: ``export.json`` is not a severstal export manifest this version reads.
        """
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export a model with `severstal export` (it writes "
                                    "exports/<experiment>/ with the SavedModel and export.json)")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): export the model again") from None
        import tensorflow as tf  # plain TensorFlow: the SavedModel needs nothing else

        manifest = check_manifest(manifest, str(path))
        return cls(tf.saved_model.load(str(directory)), manifest, directory)

    def read_image(self, path: str | os.PathLike) -> np.ndarray:
        """An image file as ``(height, width, 3)`` uint8 RGB, decoded by OpenCV as ``predict`` decodes it (an EXIF
        orientation is ignored, as TensorFlow's decoders ignore it)."""
        image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise ValueError(f"{path} cannot be read as an image (missing, or not JPEG/PNG/BMP/TIFF)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def _batch(self, images) -> tuple[list[np.ndarray], bool]:
        """The images as a list of ``(h, w, 3)`` uint8 arrays and whether one image was given."""
        if isinstance(images, str | os.PathLike):
            return [self._image(self.read_image(images))], True
        if isinstance(images, Sequence) and not isinstance(images, np.ndarray):
            return [self._image(self.read_image(item) if isinstance(item, str | os.PathLike) else item)
                    for item in images], False
        array = np.asarray(images)
        if array.ndim == 4:
            return [self._image(item) for item in array], False
        return [self._image(array)], True

    def _image(self, image) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (0..255), got {image.dtype}")
        if image.ndim == 2:  # grey: the three channels the models take
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"an image must be (height, width, 3) RGB or (height, width) grey, got {image.shape}")
        large = image.shape[0] >= self.shape[0] and image.shape[1] >= self.shape[1]
        if image.shape[:2] != self.shape and not (large and self.tile_overlap is not None):
            raise ValueError(f"this model takes images of {self.shape[0]} x {self.shape[1]} (height x width), got "
                             f"{image.shape[0]} x {image.shape[1]}"
                             + ("; larger images are predicted by tiles" if self.tile_overlap is not None else ""))
        return image

    def probabilities(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The SavedModel's outputs for ``(batch, height, width, 3)`` uint8 images at the export's size.

        Raises:
            ValueError: the outputs are not finite (broken weights).
        """
        outputs = {name: value.numpy() for name, value in self.function(**{INPUT: images}).items()}
        for name, value in outputs.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"the exported model's {name} output is not finite (NaN or infinity): its weights are "
                                 "broken; train and export again")
        return outputs

    def _tiled(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One image larger than the export's size, by overlapping tiles (as ``predict`` does in the masks layout)."""
        origins = tile_grid(image.shape[:2], self.shape, self.tile_overlap)
        parts = []
        for first in range(0, len(origins), TILES_PER_CALL):  # (tiles, h, w, classes), (tiles, classes) each
            parts.append(self.probabilities(np.stack([image[top:top + self.shape[0], left:left + self.shape[1]]
                                                      for top, left in origins[first:first + TILES_PER_CALL]])))
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        result = {}
        if SEGMENTATION in outputs:
            result[SEGMENTATION] = blend(outputs[SEGMENTATION], origins, image.shape[:2], self.tile_overlap)
        if CLASSIFICATION in outputs:
            result[CLASSIFICATION] = outputs[CLASSIFICATION].max(axis=0)  # each class at its most probable tile
        return result

    def _postprocess(self, name: str, outputs: dict[str, np.ndarray]) -> Prediction:
        gate = outputs.get(CLASSIFICATION)
        if not self.segmentation:  # one class per image: export.json's decision rule
            label = self.class_names[int(thresholded_classes(gate[None], self.decision_thresholds)[0])]
            flags = class_flags(gate[None], self.decision_thresholds)[0]
            return Prediction(label_record(name, label, gate, self.class_names, flags), classifier_probabilities=gate)
        probabilities = outputs[SEGMENTATION]  # (height, width, classes)
        masks, label_map = final_masks(postprocess_masks(probabilities, self.thresholds, gate), probabilities,
                                       bool(self.manifest.get("single_label_map")))  # masks layout: one class a pixel
        record = image_record(name, masks, probabilities, gate, self.class_ids, self.class_names)
        return Prediction(record, masks, probabilities, gate, label_map)

    def predict(self, images, names: Sequence[str] | None = None) -> Prediction | list[Prediction]:
        """Predict and post-process images.

        Args:
            images: one ``(height, width, 3)`` uint8 RGB image (or ``(height, width)`` grey), a batch
                ``(batch, height, width, 3)``, a list of images, or image file paths (read by :meth:`read_image`).
                Images are at the export's size (``export.json`` ``input.shape``); larger ones are predicted by
                tiles where the export says how (masks layout).
            names: the images' names in the records (default: the file names, else ``image_<i>``).

        Returns:
            A :class:`Prediction` for one image, a list of them for a batch.
        """
        started = time.perf_counter()
        batch, single = self._batch(images)
        if not batch:
            raise ValueError("no images to predict")
        if names is None:
            items = [images] if single else list(images)
            names = [Path(item).name if isinstance(item, str | os.PathLike) else f"image_{i}"
                     for i, item in enumerate(items)]
        if len(names) != len(batch):
            raise ValueError(f"{len(names)} names for {len(batch)} images")
        whole = [i for i, image in enumerate(batch) if image.shape[:2] == self.shape]
        outputs: list[dict] = [{} for _ in batch]
        if whole:
            joined = self.probabilities(np.stack([batch[i] for i in whole]))
            for position, index in enumerate(whole):
                outputs[index] = {key: value[position] for key, value in joined.items()}
        for index in set(range(len(batch))) - set(whole):
            outputs[index] = self._tiled(batch[index])
        results = [self._postprocess(name, output) for name, output in zip(names, outputs, strict=True)]
        latency = (time.perf_counter() - started) * 1000 / len(batch)
        for result in results:
            result.latency_ms = latency
        return results[0] if single else results
