"""Demo data of the masks and folders layouts: other sizes, class counts and content than Severstal's.

- **Plates** (masks layout): colour images of brushed metal plates (192 x 320 by default) with three
  defect classes, each painted with its own look and outlined by a label map (pixel value = class
  number, 0 = no defect): 1 ``scratch`` (a thin straight or slightly bent line, bright or dark),
  2 ``dent`` (a dark round pit with a bright rim), 3 ``stain`` (a large irregular brownish blotch).
  A third of the plates are defect-free; where defects overlap, the higher class number wins.
- **Parts** (folders layout): colour photos (160 x 160 by default) of a round machined part with a
  bore on a dark bench, ``healthy`` or ``defective`` (a dark crack from the rim, or a chipped rim).

Seeded and pure: NumPy in, NumPy out; ``severstal demo-data --layout masks|folders`` writes the files.
"""

from __future__ import annotations

import cv2
import numpy as np

PLATE_CLASSES = ("scratch", "dent", "stain")
PLATE_SHAPE = (192, 320)
PART_CLASSES = ("defective", "healthy")  # folder names, sorted as the folders layout orders its classes
PART_SHAPE = (160, 160)
PLATE_STREAM, PART_STREAM, PLAN_STREAM = 11, 12, 13


def plan_plates(count: int, seed: int, split: int) -> list[tuple[int, ...]]:
    """The classes of each of ``count`` plates: a third defect-free, the others one class or two."""
    rng = np.random.default_rng([PLAN_STREAM, seed, split])
    plans = []
    for _ in range(count):
        if rng.random() < 1 / 3:
            plans.append(())
            continue
        first = int(rng.choice(3, p=[0.4, 0.35, 0.25])) + 1
        classes = {first}
        if rng.random() < 0.2:
            classes.add(int(rng.integers(1, 4)))
        plans.append(tuple(sorted(classes)))
    return plans


def plan_parts(count: int, seed: int, split: int) -> list[str]:
    """The class of each of ``count`` parts: ``defective`` about 45% of the time, else ``healthy``."""
    rng = np.random.default_rng([PLAN_STREAM, seed, split, 1])
    return ["defective" if value < 0.45 else "healthy" for value in rng.random(count)]


def _brushed(rng: np.random.Generator, shape: tuple[int, int], level: float) -> np.ndarray:
    """Brushed-metal brightness ``(h, w)`` float32: horizontal strokes, a lighting gradient and grain."""
    height, width = shape
    strokes = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), sigmaX=25, sigmaY=0.8)
    strokes *= 9 / max(float(strokes.std()), 1e-6)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) * rng.uniform(10, 30)
    grain = rng.normal(0, 3, (height, width)).astype(np.float32)
    return level + strokes + gradient + grain


def _tint(brightness: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    """``(h, w)`` brightness times an RGB colour, as ``(h, w, 3)`` float32."""
    return brightness[..., None] * np.asarray(colour, np.float32)[None, None, :]


def plate_image(rng: np.random.Generator, classes: tuple[int, ...], shape: tuple[int, int] = PLATE_SHAPE
                ) -> tuple[np.ndarray, np.ndarray]:
    """One plate: an RGB image ``(h, w, 3)`` uint8 and its label map ``(h, w)`` uint8 (0, or 1..3 by class)."""
    height, width = shape
    image = _tint(_brushed(rng, shape, rng.uniform(120, 165)), (0.95, 0.98, 1.04))
    label_map = np.zeros(shape, np.uint8)
    for class_id in sorted(classes):
        mask = np.zeros(shape, np.uint8)
        if class_id == 1:  # scratch
            length = rng.uniform(0.25, 0.7) * width
            angle = rng.uniform(-0.6, 0.6) + (np.pi / 2 if rng.random() < 0.3 else 0)
            cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
            dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
            bend = rng.normal(0, 6, 2)
            points = np.array([[cx - dx, cy - dy], [cx + bend[0], cy + bend[1]], [cx + dx, cy + dy]], np.int32)
            line = np.zeros(shape, np.uint8)
            cv2.polylines(line, [points], False, 1, int(rng.integers(2, 4)))
            sign = 1 if rng.random() < 0.6 else -1
            image += sign * rng.uniform(45, 70) * cv2.GaussianBlur(line.astype(np.float32), (3, 3), 0)[..., None]
            mask = cv2.dilate(line, np.ones((5, 5), np.uint8))
        elif class_id == 2:  # dent
            radius = rng.uniform(7, 18)
            cx, cy = rng.uniform(radius + 2, width - radius - 2), rng.uniform(radius + 2, height - radius - 2)
            yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
            distance = np.hypot(xx - cx, yy - cy) / radius
            pit = np.clip(1 - distance, 0, 1) ** 0.7
            rim = np.exp(-((distance - 1.05) / 0.12) ** 2)
            image += (-rng.uniform(60, 90) * pit + rng.uniform(25, 45) * rim)[..., None]
            mask = (distance <= 1.25).astype(np.uint8)
        else:  # stain
            blotch = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 12)
            cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.2, 0.8) * width
            yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
            spread = rng.uniform(0.12, 0.22)
            envelope = np.exp(-(((xx - cx) / (spread * width * 1.6)) ** 2 + ((yy - cy) / (spread * height * 2)) ** 2))
            field = blotch / max(float(blotch.std()), 1e-6) * 0.35 + envelope
            region = (field > 0.75).astype(np.float32)
            soft = cv2.GaussianBlur(region, (0, 0), 2)
            image = image * (1 - 0.35 * soft[..., None]) + soft[..., None] * np.array([40, 18, -10], np.float32)
            mask = region.astype(np.uint8)
        label_map[mask > 0] = class_id
    image += rng.normal(0, 2.5, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label_map


def part_image(rng: np.random.Generator, defective: bool, shape: tuple[int, int] = PART_SHAPE) -> np.ndarray:
    """One part photo: an RGB image ``(h, w, 3)`` uint8, with a crack or a chipped rim when ``defective``."""
    height, width = shape
    image = _tint(20 + rng.normal(0, 4, shape).astype(np.float32), (1.0, 0.95, 0.9))  # dark bench
    radius = rng.uniform(0.3, 0.4) * min(shape)
    cx, cy = width / 2 + rng.uniform(-0.1, 0.1) * width, height / 2 + rng.uniform(-0.1, 0.1) * height
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot(xx - cx, yy - cy)
    bore = radius * rng.uniform(0.25, 0.4)
    body = ((distance <= radius) & (distance >= bore)).astype(np.float32)
    light = rng.uniform(0, 2 * np.pi)
    shading = 150 + 45 * (np.cos(light) * (xx - cx) + np.sin(light) * (yy - cy)) / radius
    rings = 6 * np.sin(distance / rng.uniform(1.5, 3))  # turning marks
    metal = _tint(shading + rings + rng.normal(0, 3, shape).astype(np.float32), (0.97, 0.98, 1.02))
    image = image * (1 - body[..., None]) + metal * body[..., None]
    if defective:
        angle = rng.uniform(0, 2 * np.pi)
        if rng.random() < 0.6:  # a crack from the rim towards the bore
            steps = int(rng.integers(5, 9))
            radii = np.linspace(radius, bore + rng.uniform(0, radius - bore) * 0.5, steps)
            angles = angle + np.cumsum(rng.normal(0, 0.06, steps))
            points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).astype(np.int32)
            crack = np.zeros(shape, np.uint8)
            cv2.polylines(crack, [points], False, 1, int(rng.integers(2, 4)))
            image = image * (1 - 0.8 * crack[..., None])
        else:  # a chipped rim: a notch cut out of the body
            notch = np.hypot(xx - (cx + radius * np.cos(angle)), yy - (cy + radius * np.sin(angle)))
            chip = (notch < rng.uniform(0.2, 0.35) * radius) & (body > 0)
            image[chip] = image[chip] * 0.15 + 20
    image += rng.normal(0, 2, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def plate(seed: int, split: int, index: int, classes: tuple[int, ...], shape: tuple[int, int] = PLATE_SHAPE):
    """:func:`plate_image` of plate ``index`` of a split, from its own random stream."""
    return plate_image(np.random.default_rng([PLATE_STREAM, seed, split, index]), classes, shape)


def part(seed: int, split: int, index: int, label: str, shape: tuple[int, int] = PART_SHAPE) -> np.ndarray:
    """:func:`part_image` of part ``index`` of a split, from its own random stream."""
    return part_image(np.random.default_rng([PART_STREAM, seed, split, index]), label == "defective", shape)
