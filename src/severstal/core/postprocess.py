"""Turn per-class probability maps into binary masks: the post-processing rules of the submission.

For one (image, class), given a full-resolution probability map ``p`` and optionally the
classifier's probability ``c`` that the class is present:

1. ``binary = p > pixel_threshold`` (strictly greater; the comparison is made in ``p``'s dtype);
2. connected components (8-connectivity) with fewer than ``min_component_size`` pixels are removed;
3. if fewer than ``min_area`` pixels remain, the mask becomes empty;
4. if ``c`` is given and ``c < classifier_threshold``, the mask becomes empty.

``oofstats`` computes its statistics with exactly these rules (it calls :func:`binarize`
and :func:`component_sizes`), so the Dice that ``thresholds`` tunes on out-of-fold
statistics is the Dice these masks reach.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .constants import NUM_CLASSES


@dataclass(frozen=True)
class ClassThresholds:
    """Post-processing settings of one class; the defaults are the untuned baseline."""

    pixel_threshold: float = 0.5  # a pixel is on when its probability is strictly greater
    min_component_size: int = 0  # connected components with fewer pixels are removed
    min_area: int = 0  # a mask with fewer pixels left becomes empty
    classifier_threshold: float = 0.0  # the mask becomes empty when the classifier says less; 0: no gate

    def __post_init__(self):
        if not 0.0 <= self.pixel_threshold <= 1.0:
            raise ValueError(f"pixel_threshold must be in [0, 1], got {self.pixel_threshold}")
        if not 0.0 <= self.classifier_threshold <= 1.0:
            raise ValueError(f"classifier_threshold must be in [0, 1], got {self.classifier_threshold}")
        if self.min_component_size < 0 or self.min_area < 0:
            raise ValueError(f"min_component_size and min_area must be >= 0, got {self.min_component_size}, "
                             f"{self.min_area}")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict with the four field names as keys."""
        return {key: (int(value) if isinstance(value, int | np.integer) else float(value))
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "") -> ClassThresholds:
        """Inverse of :meth:`to_dict`; missing keys take the defaults.

        Args:
            values: the four settings (or some of them).
            where: a prefix naming them in messages, e.g. ``"classes.3."``.

        Raises:
            ValueError: an unknown key, or a value that is not a finite number in its range (naming the key).
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"{where.rstrip('.') or 'thresholds'} must be a mapping of "
                             f"{', '.join(cls.__dataclass_fields__)}, got {values!r}")
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown threshold keys {sorted(where + str(key) for key in unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        converted = {}
        for key, value in values.items():
            whole = key in ("min_component_size", "min_area")
            valid = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if whole:
                valid = valid and float(value).is_integer() and value >= 0
                expects = "a whole number of pixels >= 0"
            else:
                valid = valid and 0.0 <= value <= 1.0
                expects = "a number in [0, 1]"
            if not valid:
                raise ValueError(f"{where}{key} must be {expects}, got {value!r}")
            converted[key] = int(value) if whole else float(value)
        return cls(**converted)


DEFAULT_THRESHOLDS = ClassThresholds()


def per_class_thresholds(
    thresholds: ClassThresholds | Sequence[ClassThresholds] | Mapping[int, ClassThresholds | Mapping],
    num_classes: int = NUM_CLASSES, where: str = "",
) -> list[ClassThresholds]:
    """Normalise thresholds to a list, one per channel (class id 1..num_classes).

    Args:
        thresholds: one ``ClassThresholds`` for every class, a sequence of them (channel order),
            or a mapping from class id (int or str) to ``ClassThresholds`` or its dict.
        num_classes: the number of classes.
        where: a prefix for messages, e.g. ``"classes."``.

    Returns:
        ``[ClassThresholds] * num_classes`` in channel order.
    """
    class_ids = list(range(1, num_classes + 1))
    if isinstance(thresholds, ClassThresholds):
        return [thresholds] * num_classes
    if isinstance(thresholds, Mapping):
        try:
            keyed = {int(key): value for key, value in thresholds.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{where or 'thresholds'}: the keys must be class ids {class_ids}, "
                             f"got {sorted(map(str, thresholds))}") from None
        if sorted(keyed) != class_ids:
            raise ValueError(f"{where or 'thresholds'}: the keys must be class ids {class_ids}, got {sorted(keyed)}")
        items = [keyed[class_id] for class_id in class_ids]
    else:
        items = list(thresholds)
        if len(items) != num_classes:
            raise ValueError(f"expected {num_classes} class thresholds, got {len(items)}")
    return [item if isinstance(item, ClassThresholds) else ClassThresholds.from_dict(item, f"{where}{class_id}.")
            for class_id, item in zip(class_ids, items, strict=True)]


def binarize(probability: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """``probability > pixel_threshold`` as uint8 0/1, compared in the probability map's dtype."""
    return np.greater(probability, float(pixel_threshold)).view(np.uint8)


def component_sizes(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a 0/1 uint8 mask.

    Returns:
        ``labels`` (H, W) int32 with 0 for background and 1..n for the components, and
        ``sizes`` (n + 1,) int64 with ``sizes[0] = 0`` so that ``sizes[labels]`` is safe.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
    sizes = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    sizes[0] = 0
    return labels, sizes


def remove_small_components(binary: np.ndarray, min_component_size: int) -> np.ndarray:
    """Drop 8-connected components with fewer than ``min_component_size`` pixels (uint8 0/1 in and out)."""
    binary = np.ascontiguousarray(binary, dtype=np.uint8)
    if min_component_size <= 1 or not binary.any():
        return binary
    labels, sizes = component_sizes(binary)
    keep = sizes >= min_component_size
    keep[0] = False
    return keep[labels].view(np.uint8)


def postprocess_class(
    probability: np.ndarray, thresholds: ClassThresholds, classifier_probability: float | None = None
) -> np.ndarray:
    """Binary mask of one class from its probability map (rules 1-4 of the module docstring).

    Args:
        probability: (H, W) float probabilities at full resolution.
        thresholds: the class's settings.
        classifier_probability: the classifier's probability that the class is present, or None
            (no gate).

    Returns:
        (H, W) uint8 mask of 0/1.
    """
    if probability.ndim != 2:
        raise ValueError(f"probability must be (H, W), got shape {probability.shape}")
    empty = np.zeros(probability.shape, dtype=np.uint8)
    if classifier_probability is not None and float(classifier_probability) < thresholds.classifier_threshold:
        return empty
    binary = binarize(probability, thresholds.pixel_threshold)
    mask = remove_small_components(binary, thresholds.min_component_size)
    if np.count_nonzero(mask) < thresholds.min_area:
        return empty
    return mask


def postprocess_masks(
    probabilities: np.ndarray,
    thresholds: ClassThresholds | Sequence[ClassThresholds] | Mapping[int, ClassThresholds | Mapping],
    classifier_probabilities: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """Binary masks of every class of one image.

    Args:
        probabilities: (H, W, classes) float probability maps at full resolution.
        thresholds: see :func:`per_class_thresholds`.
        classifier_probabilities: (classes,) classifier probabilities per class, or None (no gate).

    Returns:
        (H, W, classes) uint8 masks of 0/1.
    """
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be (H, W, classes), got shape {probabilities.shape}")
    classes = probabilities.shape[-1]
    settings = per_class_thresholds(thresholds, classes)
    if classifier_probabilities is not None:
        classifier_probabilities = np.asarray(classifier_probabilities, dtype=np.float64).reshape(-1)
        if classifier_probabilities.shape != (classes,):
            raise ValueError(f"classifier_probabilities must have {classes} values, "
                             f"got shape {classifier_probabilities.shape}")
    masks = np.zeros(probabilities.shape, dtype=np.uint8)  # (H, W, classes)
    for channel, setting in enumerate(settings):
        gate = None if classifier_probabilities is None else classifier_probabilities[channel]
        masks[..., channel] = postprocess_class(probabilities[..., channel], setting, gate)
    return masks


# ----------------------------------------------------------------------------- one label per pixel (label maps)

def label_map_of(masks: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One label map from per-class binary masks: where classes overlap, the most probable one.

    Args:
        masks: ``(height, width, C)`` 0/1 (or bool) masks after post-processing.
        probabilities: ``(height, width, C)`` the probabilities they were made from.

    Returns:
        ``(height, width)`` uint8: 0 where no mask is set, else the class number 1..C of the set mask
        with the highest probability (the lower class number on a tie).
    """
    masks, probabilities = np.asarray(masks).astype(bool), np.asarray(probabilities, np.float32)
    if masks.shape != probabilities.shape or masks.ndim != 3:
        raise ValueError(f"masks and probabilities must both be (height, width, classes), got {masks.shape} and "
                         f"{probabilities.shape}")
    if masks.shape[2] > 255:
        raise ValueError(f"a uint8 label map holds at most 255 classes, got {masks.shape[2]}")
    scores = np.where(masks, probabilities, -np.inf)  # (height, width, C)
    label_map = (np.argmax(scores, axis=2) + 1).astype(np.uint8)
    label_map[~masks.any(axis=2)] = 0
    return label_map


def final_masks(masks: np.ndarray, probabilities: np.ndarray, single_label: bool) -> tuple[np.ndarray,
                                                                                          np.ndarray | None]:
    """The masks an image is reported with: as post-processed, or with ``single_label`` (the masks layout's label
    maps) one class per pixel, the most probable where masks overlap.

    Returns:
        ``(masks (H, W, C) uint8, label map (H, W) uint8 or None)``.
    """
    if not single_label:
        return masks, None
    label_map = label_map_of(masks, probabilities)
    return one_hot(label_map, masks.shape[-1]), label_map


def one_hot(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class 0/1 masks ``(height, width, num_classes)`` uint8 of a label map (class c in channel c - 1)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"a label map must be 2-D (height, width), got shape {label_map.shape}")
    return (label_map[..., None] == np.arange(1, num_classes + 1)).view(np.uint8)
