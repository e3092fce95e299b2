"""Drawing helpers shared by ``eda`` and ``show``: class masks over a steel image, a class legend.

Each class has one colour everywhere (``constants.CLASS_COLOURS_BGR`` / ``CLASS_COLOURS_RGB``).
"""

from __future__ import annotations

import cv2
import numpy as np
from matplotlib.patches import Patch

from ..core.constants import CLASS_COLOURS_BGR, CLASS_COLOURS_RGB, CLASS_IDS


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.35, outline: int = 2,
                  channel_order: str = "rgb") -> np.ndarray:
    """Draw class masks on an image: a translucent fill and a solid outline in each class's colour.

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3)`` uint8 image (in ``channel_order``).
        masks: ``(H, W, 4)`` class masks, channel = class id - 1; non-zero = defect.
        alpha: opacity of the fill, 0 (outline only) to 1 (solid).
        outline: outline width in pixels along the inside of each mask's border; 0 for none.
        channel_order: ``"rgb"`` (matplotlib) or ``"bgr"`` (OpenCV), for both input and output.

    Returns:
        ``(H, W, 3)`` uint8 image in ``channel_order``; classes are drawn in order 1..4.

    Raises:
        ValueError: for mismatched shapes or bad options.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if outline < 0:
        raise ValueError(f"outline must be a non-negative number of pixels, got {outline}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)  # (H, W, 3)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
    masks = np.asarray(masks)
    if masks.shape != (*image.shape[:2], len(CLASS_IDS)):
        raise ValueError(f"masks must be {(*image.shape[:2], len(CLASS_IDS))} for this image, got {masks.shape}")
    colours = np.array(CLASS_COLOURS_BGR, dtype=np.float32)  # (4, 3)
    if channel_order == "rgb":
        colours = colours[:, ::-1]
    result = image.astype(np.float32)
    kernel = np.ones((3, 3), dtype=np.uint8)
    for channel, colour in enumerate(colours):
        mask = masks[..., channel] != 0  # (H, W)
        if not mask.any():
            continue
        result[mask] = (1.0 - alpha) * result[mask] + alpha * colour
        if outline:
            inner = cv2.erode(mask.astype(np.uint8), kernel, iterations=outline, borderValue=1).astype(bool)
            result[mask & ~inner] = colour
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def legend_handles(class_ids=CLASS_IDS) -> list[Patch]:
    """Matplotlib legend entries ``class N`` in each class's colour."""
    return [Patch(facecolor=CLASS_COLOURS_RGB[class_id - 1], label=f"class {class_id}") for class_id in class_ids]
