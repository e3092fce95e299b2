"""Training augmentations: defect-seeking crops, flips, brightness/contrast, defect blackout.

An :class:`Augmenter` draws what happens to one example (a :class:`Plan`) from the image's compact
masks (``core.crops.ImageRuns``) without touching its pixels: the crop window, the flips, the
brightness/contrast coefficients, and which defect "defect blackout" removes. :func:`apply_plan`
then does it to the decoded crop with TensorFlow ops, outside Python's lock. The draws and the
arithmetic are albumentations 2.x's ``HorizontalFlip``, ``VerticalFlip``,
``RandomBrightnessContrast(0.2, 0.2)`` (its uint8 lookup-table formula, bit for bit) and
``MaskDropout(max_objects=1)`` (albumentations' own component labelling). The input pipeline calls
an :class:`Augmenter` from several threads, each with its own instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import numpy as np

from ..core.crops import ImageRuns, crop_window, window_masks
from ..infra.schema import AugmentSection
from .tfsetup import tf

BRIGHTNESS_LIMIT = 0.2  # beta ~ U(-0.2, 0.2) x 255
CONTRAST_LIMIT = 0.2  # alpha ~ 1 + U(-0.2, 0.2)


def label_map(masks: np.ndarray, channels=None) -> np.ndarray:
    """One channel of class ids (0 = background, the largest id where masks overlap) from ``(h, w, 4)`` masks.

    Args:
        masks: ``(h, w, classes)``.
        channels: the channels that may be set (default: all), in increasing order.
    """
    labels = np.zeros(masks.shape[:2], np.uint8)  # (h, w)
    for channel in range(masks.shape[-1]) if channels is None else channels:
        labels[masks[..., channel] > 0] = channel + 1
    return labels


@dataclass(frozen=True)
class Plan:
    """What happens to one training example."""

    top: int  # the crop window at the scaled size
    left: int
    hflip: bool
    vflip: bool
    adjust: bool  # brightness/contrast applied
    alpha: float  # contrast factor
    beta: float  # brightness offset, in pixel values
    masks: np.ndarray  # (crop height, crop width, classes) uint8 0/1, unflipped, blacked-out defect removed
    presence: np.ndarray  # (classes,) float32: 1 where the crop's mask of the class is not empty
    dropped: np.ndarray | None  # (crop height, crop width) bool: pixels painted black, unflipped


class Augmenter:
    """Draws a :class:`Plan`: a random crop (centred on a defect with probability ``crop_non_empty``,
    ``core.crops.crop_window``), flips, brightness/contrast and, with probability ``mask_dropout``,
    "defect blackout": one connected defect is painted black and removed from its mask, so a
    classifier learns that the label follows the visible defect.

    Args:
        augment: the model section's ``augment`` (``hflip``, ``vflip``, ``brightness_contrast``,
            ``mask_dropout``: probabilities).
        crop: ``(height, width)`` or None for the whole image.
        crop_non_empty: probability of a defect-centred crop when the image has a defect.
        seed: seed of this instance's random generators (None: random).
    """

    def __init__(self, augment: AugmentSection, crop: tuple[int, int] | None, crop_non_empty: float = 0.0,
                 seed: int | None = None):
        self.augment, self.crop, self.crop_non_empty = augment, crop, float(crop_non_empty)
        self.rng = np.random.default_rng(seed)
        # MaskDropout labels components of a one-channel mask only, so it sees the class-id map.
        self.dropout = A.Compose([A.MaskDropout(max_objects=1, p=1.0)], seed=seed) if augment.mask_dropout > 0 else None

    def plan(self, runs: ImageRuns) -> Plan:
        """Draw the plan of one example whose masks are ``runs``."""
        crop = self.crop or runs.size
        top, left = 0, 0
        if self.crop is not None:
            on_defect = self.rng.random() < self.crop_non_empty
            top, left = crop_window(runs, crop, on_defect, self.rng)
        masks = window_masks(runs, top, left, crop)  # (h, w, classes)
        present = [int(c) for c in runs.present() if masks[..., c].any()]  # the crop's classes
        hflip = bool(self.rng.random() < self.augment.hflip)
        vflip = bool(self.rng.random() < self.augment.vflip)
        adjust = bool(self.rng.random() < self.augment.brightness_contrast)
        alpha, beta = 1.0, 0.0
        if adjust:
            alpha = 1.0 + float(self.rng.uniform(-CONTRAST_LIMIT, CONTRAST_LIMIT))
            beta = float(self.rng.uniform(-BRIGHTNESS_LIMIT, BRIGHTNESS_LIMIT)) * 255.0
        dropped = None
        if self.dropout is not None and self.rng.random() < self.augment.mask_dropout and present:
            labels = label_map(masks, present)  # (h, w)
            kept = self.dropout(image=np.zeros(labels.shape, np.uint8), mask=labels)["mask"]
            dropped = (labels > 0) & (kept == 0)  # (h, w)
            for channel in present:
                masks[dropped, channel] = 0
            present = [c for c in present if masks[..., c].any()]
        presence = np.zeros(runs.num_classes, np.float32)
        presence[present] = 1.0
        return Plan(top, left, hflip, vflip, adjust, alpha, beta, masks, presence, dropped)


def adjust_brightness_contrast(image, alpha, beta):
    """``clip(image * alpha + beta)`` of a uint8 image in float32 (albumentations' lookup table, bit for bit)."""
    return tf.cast(tf.clip_by_value(tf.cast(image, tf.float32) * alpha + beta, 0.0, 255.0), tf.uint8)


def apply_plan(image, masks, hflip, vflip, adjust, alpha, beta, dropped):
    """A plan's flips, brightness/contrast and blackout applied to the decoded crop, as TensorFlow ops.

    Args:
        image: ``(h, w, 3)`` uint8, the crop.
        masks: ``(h, w, classes)`` uint8, or None (a classifier's labels do not move with flips).
        hflip, vflip, adjust: bool scalars.
        alpha, beta: float32 scalars.
        dropped: ``(h, w)`` bool, or ``(0, 0)`` when nothing is blacked out.

    Returns:
        ``(image, masks)``.
    """
    image = tf.cond(adjust, lambda: adjust_brightness_contrast(image, alpha, beta), lambda: image)
    image = tf.cond(tf.size(dropped) > 0, lambda: tf.where(dropped[..., None], tf.zeros_like(image), image),
                    lambda: image)
    image = _flipped(_flipped(image, hflip, 1), vflip, 0)
    if masks is not None:
        masks = _flipped(_flipped(masks, hflip, 1), vflip, 0)
    return image, masks


def _flipped(tensor, flag, axis: int):
    return tf.cond(flag, lambda: tf.reverse(tensor, [axis]), lambda: tensor)
