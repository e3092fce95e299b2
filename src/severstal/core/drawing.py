"""Class masks drawn over an image (NumPy in, NumPy out), in each class's colour (``constants.CLASS_COLOURS_BGR``)."""

from __future__ import annotations

import cv2
import numpy as np

from .constants import CLASS_COLOURS_BGR


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.35, outline: int = 2,
                  channel_order: str = "rgb") -> np.ndarray:
    """Draw class masks on an image: a translucent fill and a solid outline in each class's colour.

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3)`` uint8 image (in ``channel_order``).
        masks: ``(H, W, classes)`` class masks, channel = class id - 1; non-zero = defect (at most as
            many classes as there are colours).
        alpha: opacity of the fill, 0 (outline only) to 1 (solid).
        outline: outline width in pixels along the inside of each mask's border; 0 for none.
        channel_order: ``"rgb"`` (matplotlib) or ``"bgr"`` (OpenCV), for both input and output.

    Returns:
        ``(H, W, 3)`` uint8 image in ``channel_order``; classes are drawn in order 1, 2, ...

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
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2] or masks.shape[2] > len(CLASS_COLOURS_BGR):
        raise ValueError(f"masks must be (H, W, classes) with (H, W) = {image.shape[:2]}, the image's, and at most "
                         f"{len(CLASS_COLOURS_BGR)} classes, got {masks.shape}")
    colours = np.array(CLASS_COLOURS_BGR[:masks.shape[2]], dtype=np.float32)  # (classes, 3)
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



def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    left, top, right, bottom = box
    return any(left < o_right and o_left < right and top < o_bottom and o_top < bottom
               for o_left, o_top, o_right, o_bottom in others)


def draw_defects(image: np.ndarray, defects: list[dict], class_ids: list[int], thickness: int = 2) -> np.ndarray:
    """Draw defects (``core.defects`` objects) on an RGB image: each outline in its class's colour, named.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        defects: dicts with ``class``, ``name``, ``bbox`` ``[x, y, width, height]`` and ``polygon`` ``[[x, y], ...]``.
        class_ids: the data set's classes (a class's colour is that of its position).
        thickness: outline width in pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB: a copy with the outlines and, beside each defect's box (above it, else below, else
        inside its top, where no other label is), its class name (``class 3`` for a name that is a number) and
        mean probability, on black. The labels are drawn after every outline, in a font scaled to the image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    unknown = sorted({defect["class"] for defect in defects} - set(class_ids))
    if unknown:
        raise ValueError(f"defect of class {unknown[0]} is not one of the classes {class_ids}")
    result = np.ascontiguousarray(image.copy())
    height_px, width_px = result.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = min(0.5, max(0.3, height_px / 512))  # 0.5 at Severstal's 256 rows and more
    colours = {class_id: tuple(int(v) for v in CLASS_COLOURS_BGR[i % len(CLASS_COLOURS_BGR)][::-1])  # RGB
               for i, class_id in enumerate(class_ids)}
    for defect in defects:
        points = np.asarray(defect["polygon"], np.int32).reshape(-1, 1, 2)  # (points, 1, 2) x, y
        cv2.polylines(result, [points], True, colours[defect["class"]], thickness, lineType=cv2.LINE_8)
    placed: list[tuple[int, int, int, int]] = []
    for defect in defects:
        x, y, _, height = defect["bbox"]
        name = f"class {defect['name']}" if str(defect["name"]).isdigit() else str(defect["name"])
        if defect.get("mean_probability") is not None:
            name += f" {defect['mean_probability']:.2f}"
        (text_width, text_height), baseline = cv2.getTextSize(name, font, scale, 1)
        label_height = text_height + baseline
        left = min(max(x, 0), max(width_px - text_width - 2, 0))
        tops = [top for top in (y - label_height - 1, y + height + 1, y + 1)
                if 0 <= top and top + label_height <= height_px] or [max(0, min(y + 1, height_px - label_height))]
        boxes = [(left, top, left + text_width + 2, top + label_height) for top in tops]
        box = next((box for box in boxes if not _overlaps(box, placed)), boxes[0])
        placed.append(box)
        cv2.rectangle(result, box[:2], box[2:], (0, 0, 0), -1)
        cv2.putText(result, name, (box[0] + 1, box[1] + text_height), font, scale, colours[defect["class"]], 1,
                    cv2.LINE_AA)
    return result
