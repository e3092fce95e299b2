"""Training augmentations: defect-seeking crops, then albumentations 2.x flips, brightness/contrast, defect blackout.

Everything here works on NumPy arrays: an image ``(height, width, 3)`` uint8 and its class masks
``(height, width, 4)`` uint8. The input pipeline calls an :class:`Augmenter` from several threads,
each with its own instance (albumentations transforms keep per-call state).
"""

from __future__ import annotations

import albumentations as A
import numpy as np

from ..infra.schema import AugmentSection


def label_map(masks: np.ndarray) -> np.ndarray:
    """One channel of class ids (0 = background, the largest id where masks overlap) from ``(h, w, 4)`` masks."""
    weights = np.arange(1, masks.shape[-1] + 1, dtype=np.uint8)  # (4,)
    return (masks.astype(bool) * weights).max(axis=-1).astype(np.uint8)  # (h, w)


def crop_window(masks: np.ndarray, crop: tuple[int, int], on_defect: bool, rng: np.random.Generator
                ) -> tuple[int, int]:
    """Top-left corner of a training crop.

    Args:
        masks: ``(height, width, channels)`` masks.
        crop: ``(crop height, crop width)``, at most the mask's size.
        on_defect: centre the crop on a defect: one of the image's classes is picked uniformly, then
            a random pixel of that class lands at a random position inside the crop, so a small
            class-1 spot is sought as often as a large class-3 region on the same image (when the
            masks are empty, a uniformly random crop is taken).
        rng: random generator.

    Returns:
        ``(top, left)``.
    """
    height, width = masks.shape[:2]
    crop_height, crop_width = crop
    if on_defect:
        present = np.flatnonzero(masks.reshape(-1, masks.shape[-1]).any(axis=0))  # the image's class channels
        if present.size:
            rows, columns = np.nonzero(masks[..., int(present[rng.integers(present.size)])])
            pick = int(rng.integers(rows.size))
            top = int(rows[pick]) - int(rng.integers(crop_height))
            left = int(columns[pick]) - int(rng.integers(crop_width))
            return min(max(top, 0), height - crop_height), min(max(left, 0), width - crop_width)
    return int(rng.integers(height - crop_height + 1)), int(rng.integers(width - crop_width + 1))


class Augmenter:
    """A random crop (centred on a defect with probability ``crop_non_empty``), flips, brightness/contrast
    and, with probability ``mask_dropout``, "defect blackout": one connected defect is painted black and
    removed from its mask, so a classifier learns that the label follows the visible defect.

    The crop is a NumPy slice (:func:`crop_window`: a class first, then one of its pixels, unlike
    albumentations' ``CropNonEmptyMaskIfExists``, which favours the largest defect); the other
    steps are albumentations transforms applied to the crop.

    Args:
        augment: the model section's ``augment`` (``hflip``, ``vflip``, ``brightness_contrast``,
            ``mask_dropout``: probabilities).
        crop: ``(height, width)`` or None for the whole image.
        crop_non_empty: probability of a defect-centred crop when the image has a defect.
        seed: seed of this instance's random generators (None: random).
    """

    def __init__(self, augment: AugmentSection, crop: tuple[int, int] | None, crop_non_empty: float = 0.0,
                 seed: int | None = None):
        self.crop, self.crop_non_empty = crop, float(crop_non_empty)
        self.rng = np.random.default_rng(seed)
        self.geometry = A.Compose([
            A.HorizontalFlip(p=augment.hflip),
            A.VerticalFlip(p=augment.vflip),
            A.RandomBrightnessContrast(0.2, 0.2, p=augment.brightness_contrast),
        ], seed=seed)
        dropout = augment.mask_dropout
        # MaskDropout labels components of a one-channel mask only, so it sees the class-id map.
        self.dropout = A.Compose([A.MaskDropout(max_objects=1, p=dropout)], seed=seed) if dropout > 0 else None

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment one example.

        Args:
            image: ``(height, width, 3)`` uint8.
            masks: ``(height, width, 4)`` uint8 of 0/1.

        Returns:
            ``(image, masks)``, cropped to the crop size when one is set.
        """
        if self.crop is not None:
            on_defect = self.rng.random() < self.crop_non_empty
            top, left = crop_window(masks, self.crop, on_defect, self.rng)
            window = np.s_[top:top + self.crop[0], left:left + self.crop[1]]
            image, masks = image[window], masks[window]
        out = self.geometry(image=image, mask=masks)
        image, masks = out["image"], out["mask"]
        if self.dropout is not None and masks.any():
            labels = label_map(masks)  # (h, w)
            out = self.dropout(image=image, mask=labels)
            removed = (labels > 0) & (out["mask"] == 0)  # (h, w)
            image = out["image"]
            masks = np.where(removed[..., None], 0, masks).astype(np.uint8)
        return np.ascontiguousarray(image), np.ascontiguousarray(masks)
