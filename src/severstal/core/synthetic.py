"""Severstal-like synthetic steel images and masks: the pure, seeded generator behind ``severstal demo-data``.

Every image is grey steel texture (vertical banding, mottling, grain, faint unlabelled specks and
streaks, sometimes a black margin at one edge) with the defects of its planned classes painted in:

- class 1: small clusters of pits and spots (dark or bright, with a light-from-above highlight);
- class 2: tall thin vertical streaks, mostly dark, tapered at the ends;
- class 3: long near-vertical scratches, short bright flakes and large abraded regions up to the full width;
- class 4: compact dark dents with shaded rims and cracks.

Masks are hand-drawn-looking polygons (``cv2.fillPoly``) that cover the visible defect with a margin,
as the real annotations do. Class combinations follow the official training set's frequencies and
sizes its area quantiles (see ``/work/shared/severstal-sample/README.md``). Noise, blur and (in the
stage) JPEG are applied to defect and background alike. No file access: NumPy in, NumPy out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .constants import CLASS_IDS, HEIGHT, WIDTH

ID_DIGITS = 9  # real ids are 9 hex digits + ".jpg"
SPLITS = ("train", "test")
# Random streams are seeded with (stream, seed, split, ...); the leading tag keeps them apart
# (NumPy's SeedSequence treats [a, b] and [a, b, 0] alike, so tags cannot go last).
PIXEL_STREAM, ID_STREAM, ORDER_STREAM = 1, 2, 3

# Class combinations per image and how many of the 12,568 official training images have each. The
# first seven are published counts; the rare rest are inferred from the per-class totals
# (class 1: 897, 2: 247, 3: 5,150, 4: 801) and the two images with three classes.
COMBINATIONS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((), 5902), ((3,), 4759), ((1,), 769), ((4,), 516), ((3, 4), 284), ((2,), 195), ((1, 3), 91),
    ((1, 2), 35), ((2, 3), 14), ((1, 2, 3), 2), ((2, 4), 1),
)


@dataclass(frozen=True)
class ImageSpec:
    """One planned image: its file name, its defect classes and the entropy that seeds its pixels."""

    image_id: str  # e.g. "0a1b2c3d4.jpg"
    classes: tuple[int, ...]  # sorted class ids, () for a defect-free image
    entropy: tuple[int, ...]  # np.random.default_rng(entropy) draws the image


def combination_counts(count: int) -> list[tuple[tuple[int, ...], int]]:
    """Share ``count`` images among :data:`COMBINATIONS` in proportion (largest remainders).

    Args:
        count: number of images, >= 0.

    Returns:
        ``[(classes, images), ...]`` in the order of :data:`COMBINATIONS`, images summing to ``count``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    weights = np.array([n for _, n in COMBINATIONS], dtype=np.float64)
    exact = count * weights / weights.sum()
    shares = np.floor(exact).astype(int)
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[: count - shares.sum()]] += 1
    return [(classes, int(n)) for (classes, _), n in zip(COMBINATIONS, shares, strict=True)]


def image_id_for(seed: int, split: int, index: int, attempt: int = 0) -> str:
    """The deterministic id of image ``index`` of split number ``split`` (``attempt`` > 0 after a clash)."""
    value = np.random.default_rng([ID_STREAM, seed, split, index, attempt]).integers(16**ID_DIGITS)
    return f"{int(value):0{ID_DIGITS}x}.jpg"


def plan_dataset(num_train: int, num_test: int, seed: int) -> dict[str, list[ImageSpec]]:
    """Plan a demo data set: unique ids, each image's classes and pixel seed.

    Class combinations are shared out exactly in proportion (:func:`combination_counts`) and
    shuffled; an image's pixels depend only on ``(seed, split, index)`` and its classes.

    Args:
        num_train: training images.
        num_test: test images.
        seed: the data set's seed (>= 0).

    Returns:
        ``{"train": [ImageSpec, ...], "test": [...]}``, each list sorted by image id.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError(f"image counts must be >= 0, got train={num_train}, test={num_test}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    taken: set[str] = set()
    plan: dict[str, list[ImageSpec]] = {}
    for split, (name, count) in enumerate(zip(SPLITS, (num_train, num_test), strict=True)):
        classes = [c for c, n in combination_counts(count) for _ in range(n)]
        order = np.random.default_rng([ORDER_STREAM, seed, split]).permutation(count)
        specs = []
        for index in range(count):
            attempt = 0
            image_id = image_id_for(seed, split, index)
            while image_id in taken:
                attempt += 1
                image_id = image_id_for(seed, split, index, attempt)
            taken.add(image_id)
            specs.append(ImageSpec(image_id, classes[order[index]], (PIXEL_STREAM, seed, split, index)))
        plan[name] = sorted(specs, key=lambda spec: spec.image_id)
    return plan


def render(spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """Draw a planned image: :func:`generate_image` seeded with the spec's entropy."""
    return generate_image(np.random.default_rng(spec.entropy), spec.classes)


def generate_image(rng: np.random.Generator | int, classes: tuple[int, ...] | list[int] = ()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic steel image and its defect masks.

    Args:
        rng: a NumPy Generator (consumed) or an integer seed.
        classes: defect classes to paint (subset of 1..4, each gets a non-empty mask).

    Returns:
        ``(image, masks)``: image ``(256, 1600, 3)`` uint8 with three identical channels;
        masks ``(256, 1600, 4)`` uint8 of 0/1, channel = class id - 1.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    classes = tuple(sorted(set(classes)))
    if any(c not in CLASS_IDS for c in classes):
        raise ValueError(f"classes must be drawn from {CLASS_IDS}, got {classes}")
    level = float(np.clip(rng.normal(110, 17), 60, 150))  # steel's mean grey before margins
    steel = _steel_columns(rng, has_defects=bool(classes))  # (first, end) columns that are steel
    image = _background(rng, level)  # (256, 1600) float32
    delta = np.zeros((HEIGHT, WIDTH), np.float32)  # defect intensity changes
    masks = [np.zeros((HEIGHT, WIDTH), np.uint8) for _ in CLASS_IDS]  # 4 x (256, 1600), contiguous for cv2
    placer = _Placer(rng, steel)
    painters = {1: _paint_pits, 2: _paint_streaks, 3: _paint_class3, 4: _paint_dents}
    for class_id in sorted(classes, key=lambda c: (c != 4, c)):  # the large class-4 dents first
        mask = masks[class_id - 1]
        for _ in range(10):  # a painter always draws on the steel: one pass is enough in practice
            painters[class_id](rng, delta, mask, placer)
            if mask[:, steel[0]:steel[1]].any():
                break
        else:
            raise RuntimeError(f"could not place a class {class_id} defect on columns {steel}")
        mask[:, : steel[0]] = 0
        mask[:, steel[1]:] = 0
    image += delta * float(np.clip(level / 110, 0.6, 1.25))
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.8))
    image += _grain(rng, image.shape)
    _apply_margin(rng, image, steel)
    grey = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), np.stack(masks, axis=-1)  # (256, 1600, 3), (256, 1600, 4)


class _Placer:
    """Chooses defect positions on the steel, avoiding columns other defects occupy (when it can)."""

    def __init__(self, rng: np.random.Generator, steel: tuple[int, int]):
        self.rng, self.steel = rng, steel
        self.occupied = np.zeros(WIDTH, bool)  # columns some defect already covers

    def column(self, half_width: float, near: float | None = None, spread: float = 0.0) -> int:
        """A centre column for a defect ``2 * half_width`` wide (near ``near`` when given)."""
        first, end = self.steel
        half = min(half_width, (end - first) / 2 - 1)
        low, high = first + half, end - half
        for _ in range(20):
            if near is None:
                centre = self.rng.uniform(low, high)
            else:
                centre = float(np.clip(near + self.rng.normal(0, spread), low, high))
            if not self.occupied[max(int(centre - half), 0): int(centre + half) + 1].any():
                break
        self.occupied[max(int(centre - half), 0): int(centre + half) + 1] = True
        return int(round(centre))


def _lognormal(rng: np.random.Generator, median: float, p95: float, low: float, high: float) -> float:
    """A log-normal draw with the given median and 95th percentile, clipped to [low, high]."""
    sigma = np.log(p95 / median) / 1.645
    return float(np.clip(median * np.exp(sigma * rng.standard_normal()), low, high))


def _smooth_noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Smooth noise: a ``grid`` (rows, cols) of N(0, 1) values resized (cubic) to ``size`` (height, width)."""
    small = rng.standard_normal(grid, dtype=np.float32)
    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _steel_columns(rng: np.random.Generator, has_defects: bool) -> tuple[int, int]:
    """Columns ``[first, end)`` that show steel; about a quarter of images have a black margin at one edge."""
    if rng.random() >= 0.25:
        return 0, WIDTH
    fraction = rng.uniform(0.02, 0.3) if rng.random() < 0.7 else rng.uniform(0.3, 0.85)
    if has_defects:
        fraction = min(fraction, 0.8)
    margin = int(fraction * WIDTH)
    return (margin, WIDTH) if rng.random() < 0.6 else (0, WIDTH - margin)


def _background(rng: np.random.Generator, level: float) -> np.ndarray:
    """Defect-free steel around grey ``level``: shading, vertical banding, mottling, specks, dashes."""
    size = (HEIGHT, WIDTH)
    image = np.full(size, level, np.float32)  # (256, 1600)
    image += rng.uniform(3, 10) * _smooth_noise(rng, (2, 6), size)  # uneven illumination
    image += rng.uniform(4, 16) * _smooth_noise(rng, (3, 1), (HEIGHT, 1))  # top-to-bottom shading
    across = _smooth_noise(rng, (1, int(rng.integers(4, 12))), (1, WIDTH))
    image += rng.uniform(5, 18) * across  # brightness across the strip
    image += rng.uniform(1.5, 5) * _smooth_noise(rng, (2, int(rng.integers(60, 200))), size)  # broad bands
    image += rng.uniform(0.5, 2.5) * _smooth_noise(rng, (6, 533), size)  # streaks ~3 px wide
    image += rng.uniform(2, 7) * _smooth_noise(rng, (HEIGHT // 2, WIDTH // 2), size)  # coarse grain
    if rng.random() < 0.5:  # patches of lighter or darker flakes elongated along the strip
        field = _smooth_noise(rng, (int(rng.integers(8, 16)), int(rng.integers(150, 300))), size)
        field += 0.6 * _smooth_noise(rng, (24, 640), size)
        zones = _smooth_noise(rng, (2, int(rng.integers(3, 10))), size) + rng.uniform(-0.5, 0.8)
        flakes = np.clip((field - rng.uniform(0.6, 1.2)) * 4, 0, 1) * np.clip(zones * 2, 0, 1)
        image += rng.choice([-1, 1]) * rng.uniform(5, 14) * flakes
    image += rng.uniform(0, 1.5) * rng.standard_normal((HEIGHT, 1), dtype=np.float32)  # faint scan lines
    details = np.zeros(size, np.float32)  # small unlabelled marks, drawn as intensity changes
    for _ in range(int(rng.integers(0, 60))):  # specks
        centre = (int(rng.integers(WIDTH)), int(rng.integers(HEIGHT)))
        cv2.circle(details, centre, int(rng.integers(1, 3)), -rng.uniform(10, 30), -1)
    for _ in range(int(rng.integers(30, 300))):  # short thin dashes along the strip
        x, y = int(rng.integers(WIDTH)), int(rng.integers(HEIGHT))
        colour = rng.uniform(-16, 6)
        cv2.line(details, (x, y), (x + int(rng.normal(0, 1)), y + int(rng.integers(4, 60))), colour, 1)
    for _ in range(int(rng.integers(0, 6))):  # faint long lines
        x, y0 = int(rng.integers(WIDTH)), int(rng.integers(-50, HEIGHT - 40))
        end = (x + int(rng.normal(0, 4)), y0 + int(rng.integers(40, 320)))
        cv2.line(details, (x, y0), end, rng.choice([-1, 1]) * rng.uniform(3, 8), int(rng.integers(1, 3)))
    return image + details


def _grain(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Sensor grain: noise with sparse bright specks, plus short horizontal smears (real images vary more
    down than across)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    grain = rng.uniform(3.5, 7) * noise + rng.uniform(3, 12) * np.maximum(noise - 2.0, 0)
    smear = cv2.blur(rng.standard_normal(shape, dtype=np.float32), (7, 1))
    return grain + rng.uniform(3, 9) * smear


def _apply_margin(rng: np.random.Generator, image: np.ndarray, steel: tuple[int, int]) -> None:
    """Blacken the columns outside ``steel`` in place, with a rough bright rim on the steel's edge."""
    first, end = steel
    if (first, end) == (0, WIDTH):
        return
    edge = first if first > 0 else end
    columns = np.arange(WIDTH, dtype=np.float32)
    distance = (columns - edge) if first > 0 else (edge - columns)  # > 0 on the steel
    rim_width = rng.uniform(5, 45)
    rim = np.exp(-np.clip(distance, 0, None) / rim_width) * (distance >= 0) * rng.uniform(0, 25)
    image += rim[None, :] * (1 + 0.5 * rng.standard_normal(image.shape, dtype=np.float32))
    black = rng.uniform(1, 12) + rng.uniform(0.5, 2.5) * rng.standard_normal(image.shape, dtype=np.float32)
    weight = np.clip(distance / rng.uniform(1, 4) + 0.5, 0, 1)[None, :]  # 0 margin .. 1 steel
    image *= weight
    image += (1 - weight) * black


def _paste(target: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> None:
    """Add ``patch`` into ``target`` with its top-left corner at column ``x0``, row ``y0`` (clipped)."""
    height, width = target.shape
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + patch.shape[0], height), min(x0 + patch.shape[1], width)
    if bottom > top and right > left:
        target[top:bottom, left:right] += patch[top - y0: bottom - y0, left - x0: right - x0]


def _outline(rng: np.random.Generator, mask: np.ndarray, region: np.ndarray, x0: int, y0: int,
             pad: float, convex: bool = True, merge: bool = False) -> None:
    """Fill hand-drawn-looking polygons around ``region`` (a local binary patch at ``x0, y0``) into ``mask``.

    The region is grown by ``pad`` pixels, each connected part outlined (its convex hull when
    ``convex``; one hull around all parts when ``merge``), simplified to a few vertices and the
    vertices jittered, as an annotator would draw.
    """
    radius = max(int(round(pad)), 0)
    padded = cv2.copyMakeBorder(region.astype(np.uint8), radius + 2, radius + 2, radius + 2, radius + 2,
                                cv2.BORDER_CONSTANT, value=0)
    if radius:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        padded = cv2.dilate(padded, kernel)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if merge and contours:
        contours = [np.concatenate(contours)]
        convex = True
    polygons = []
    for contour in contours:
        if convex:
            contour = cv2.convexHull(contour)
        contour = cv2.approxPolyDP(contour, rng.uniform(1.5, 4.0), True).astype(np.float32)
        contour += rng.normal(0, 1.2, contour.shape).astype(np.float32)
        contour += np.float32([x0 - radius - 2, y0 - radius - 2])
        polygons.append(np.round(contour).astype(np.int32))
    cv2.fillPoly(mask, polygons, 1)


def _gaussian_line(xx: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    """Profile ``exp(-(x - centre)^2 / (2 sigma^2))`` of a line whose column per row is ``centre``."""
    return np.exp(-((xx - centre) ** 2) / (2 * sigma**2))


def _paint_pits(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """Class 1: 1..20 small clusters of pits and spots, mostly near each other."""
    blobs = min(1 + int(rng.exponential(2.9)), 20)
    centre_x = None
    for index in range(blobs):
        scale = 1.4 if index == 0 else 1.0  # the first cluster is the largest
        height = _lognormal(rng, 32 * scale, 110, 18, 200)
        width = _lognormal(rng, 17 * scale, 40, 12, 60)
        if centre_x is None or rng.random() < 0.25:
            centre_x = placer.column(width / 2 + 10)
        else:
            centre_x = placer.column(width / 2 + 10, near=centre_x, spread=60)
        centre_y = int(rng.uniform(height / 3, HEIGHT - height / 3))
        box_h, box_w = int(1.25 * height + 8), int(1.25 * width + 8)
        yy, xx = np.mgrid[0:box_h, 0:box_w].astype(np.float32)
        ellipse = ((yy - box_h / 2) / (height / 2)) ** 2 + ((xx - box_w / 2) / (width / 2)) ** 2
        ellipse += 0.5 * _smooth_noise(rng, (4, 3), (box_h, box_w)) * np.clip(1.5 - ellipse, 0, 1)
        core = np.clip((1 - ellipse) * 2.5, 0, 1)  # (box_h, box_w) soft 0..1
        sign = -1.0 if rng.random() < 0.65 else 1.0
        patch = sign * rng.uniform(18, 35) * core
        patch += core * rng.uniform(4, 10) * rng.standard_normal(core.shape, dtype=np.float32)  # rough
        inside = np.argwhere(core > 0.5)
        for _ in range(int(rng.integers(2, 9)) if len(inside) else 0):
            py, px = inside[rng.integers(len(inside))]
            radius = rng.uniform(1.5, 4.5)
            stretch = rng.uniform(1, 2.2)
            pit = np.exp(-((xx - px) ** 2 / (2 * radius**2) + (yy - py) ** 2 / (2 * (radius * stretch) ** 2)))
            shift = radius * stretch * rng.uniform(0.6, 1.2)  # light from above: highlight on the upper rim
            glint = np.exp(-((xx - px) ** 2 / (2 * radius**2) + (yy - py + shift) ** 2 / (2 * radius**2)))
            patch += rng.uniform(-70, -30) * pit + rng.uniform(15, 45) * glint
        x0, y0 = centre_x - box_w // 2, centre_y - box_h // 2
        _paste(delta, patch, x0, y0)
        _outline(rng, mask, core > 0.15, x0, y0, pad=rng.uniform(3, 8), merge=True)


def _paint_streaks(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """Class 2: one (sometimes 2..4) tall thin near-vertical streak, mostly dark, tapered at both ends."""
    count = 1 + int(rng.random() < 0.25) + int(rng.random() < 0.06) + int(rng.random() < 0.02)
    for _ in range(count):
        if rng.random() < 0.2:
            y0, length = -int(rng.integers(0, 20)), HEIGHT + 40
        else:
            length = int(_lognormal(rng, 150, 245, 60, HEIGHT))
            y0 = int(rng.integers(0, HEIGHT - length + 1))
        tilt = rng.normal(0, 5)  # column change over the streak's length
        half = int(abs(tilt) / 2 + 16)
        centre_x = placer.column(half)
        yy, xx = np.mgrid[0:length, 0: 2 * half + 1].astype(np.float32)
        wobble = 1.5 * _smooth_noise(rng, (4, 1), (length, 1))
        line_x = half + tilt * (yy / length - 0.5) + wobble  # (length, width) column of the line per row
        along = np.clip(np.minimum(yy, length - yy) / (0.15 * length), 0, 1)  # taper at the ends
        along *= 0.75 + 0.25 * _smooth_noise(rng, (5, 1), (length, 1))
        sigma = rng.uniform(1.2, 2.5)
        sign = -1.0 if rng.random() < 0.75 else 1.0
        side = rng.choice([-1, 1]) * sigma * 2.5
        patch = along * (sign * rng.uniform(35, 65) * _gaussian_line(xx, line_x, sigma)
                         - sign * rng.uniform(8, 20) * _gaussian_line(xx, line_x + side, sigma * 1.3))
        x0 = centre_x - half
        _paste(delta, patch, x0, y0)
        visible = along * _gaussian_line(xx, line_x, sigma) > 0.2
        _outline(rng, mask, visible, x0, y0, pad=_lognormal(rng, 5, 9, 3, 12))


def _paint_class3(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """Class 3: 1..19 parts, each a group of scratches, a cluster of bright flakes or an abraded region."""
    parts = min(1 + int(rng.exponential(2.2)), 19)
    for _ in range(parts):
        kind = rng.choice(3, p=[0.5, 0.2, 0.3])
        (_paint_scratches, _paint_flakes, _paint_abrasion)[kind](rng, delta, mask, placer)


def _paint_scratches(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """A group of 1..4 parallel long scratches: bright core with a dark shoulder, or a dark groove."""
    lines = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
    spacing = rng.uniform(6, 30)
    if rng.random() < 0.35:
        y0, length = -int(rng.integers(0, 20)), HEIGHT + 40
    else:
        length = int(_lognormal(rng, 120, 250, 30, HEIGHT))
        y0 = int(rng.integers(0, HEIGHT - length + 1))
    angle = rng.normal(0, 4) if rng.random() < 0.85 else rng.uniform(10, 35) * rng.choice([-1, 1])
    tilt = np.tan(np.radians(angle)) * length
    half = int(abs(tilt) / 2 + spacing * (lines - 1) / 2 + 20)
    centre_x = placer.column(half)
    yy, xx = np.mgrid[0:length, 0: 2 * half + 1].astype(np.float32)
    base_x = half + tilt * (yy / length - 0.5) - spacing * (lines - 1) / 2
    patch = np.zeros(yy.shape, np.float32)  # (length, width)
    drawn = np.zeros(yy.shape, bool)
    groove = rng.random() < 0.3
    for index in range(lines):
        line_x = base_x + index * spacing + rng.normal(0, 2) + 1.5 * _smooth_noise(rng, (4, 1), (length, 1))
        along = np.clip(np.minimum(yy, length - yy) / (0.1 * length), 0, 1)
        along *= np.clip(0.8 + 0.5 * _smooth_noise(rng, (int(rng.integers(3, 9)), 1), (length, 1)), 0.35, 1)
        sigma = rng.uniform(1.0, 3.0)
        shoulder = rng.choice([-1, 1]) * rng.uniform(2, 5)
        core = _gaussian_line(xx, line_x, sigma)
        sign = -1.0 if groove else 1.0
        patch += along * (sign * rng.uniform(30, 70) * core
                          - sign * rng.uniform(12, 30) * _gaussian_line(xx, line_x + shoulder, sigma * 1.3))
        drawn |= along * core > 0.2
    x0 = centre_x - half
    _paste(delta, patch, x0, y0)
    _outline(rng, mask, drawn, x0, y0, pad=_lognormal(rng, 7, 18, 4, 30), merge=True)


def _paint_flakes(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """A small cluster of short bright ragged flakes (rolled-in scale), slightly slanted."""
    box_h, box_w = int(_lognormal(rng, 70, 160, 25, 220)), int(_lognormal(rng, 30, 70, 14, 120))
    centre_x = placer.column(box_w / 2 + 10)
    y0 = int(rng.integers(0, HEIGHT - box_h + 1))
    patch = np.zeros((box_h + 20, box_w + 20), np.float32)
    drawn = np.zeros(patch.shape, np.uint8)
    slant = rng.normal(0, 0.3)  # radians from vertical
    rotation = np.array([[np.cos(slant), -np.sin(slant)], [np.sin(slant), np.cos(slant)]])
    for _ in range(int(rng.integers(2, 8))):
        length, thickness = rng.uniform(6, min(45, box_h / 2 + 6)), rng.uniform(1.5, 4.5)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(0.55, 1.0, 7)
        outline = np.stack([radii * np.cos(angles) * thickness, radii * np.sin(angles) * length / 2], axis=1)
        outline = outline @ rotation.T + [rng.uniform(10, box_w + 10), rng.uniform(10, box_h + 10)]
        polygon = [np.round(outline).astype(np.int32)]
        cv2.fillPoly(patch, polygon, rng.uniform(30, 70))
        cv2.fillPoly(drawn, polygon, 1)
    patch = cv2.GaussianBlur(patch, (0, 0), 1.0)
    x0 = centre_x - box_w // 2 - 10
    _paste(delta, patch, x0, y0 - 10)
    _outline(rng, mask, drawn, x0, y0 - 10, pad=rng.uniform(4, 10), merge=True)


def _paint_abrasion(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """A worn region, lighter or darker, with dense longitudinal striations; up to the full width."""
    width = int(_lognormal(rng, 70, 450, 30, WIDTH))
    if rng.random() < 0.5 or width > 300:
        height = HEIGHT + 20  # through the whole image
    else:
        height = int(rng.uniform(max(90, width / 2), HEIGHT))
    centre_x = placer.column(width / 2)
    y0 = -10 if height > HEIGHT else int(rng.integers(0, HEIGHT - height + 1))
    vertices = 8 + int(rng.integers(0, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = rng.uniform(0.85, 1.0, vertices)
    polygon = np.stack([width / 2 * (1 + radii * np.cos(angles)),
                        height / 2 * (1 + radii * np.sin(angles))], axis=1)
    region = np.zeros((height, width), np.uint8)
    cv2.fillPoly(region, [np.round(polygon).astype(np.int32)], 1)
    inset = int(rng.integers(3, 9))
    softness = cv2.GaussianBlur(cv2.erode(region, np.ones((2 * inset + 1,) * 2, np.uint8)).astype(np.float32),
                                (0, 0), inset / 2 + 1)
    striations = _smooth_noise(rng, (int(rng.integers(6, 16)), max(width // 4, 2)), (height, width))
    sign = rng.choice([-1, 1])
    patch = softness * (sign * rng.uniform(15, 30) + rng.uniform(8, 16) * striations)
    x0 = centre_x - width // 2
    _paste(delta, patch, x0, y0)
    _outline(rng, mask, region, x0, y0, pad=0, convex=False)


def _paint_dents(rng: np.random.Generator, delta: np.ndarray, mask: np.ndarray, placer: _Placer) -> None:
    """Class 4: 1..14 compact dark dents: ragged edges, a bright upper rim, mottled inside, dark cracks."""
    blobs = min(1 + int(rng.exponential(2.4)), 14)
    centre_x = None
    for index in range(blobs):
        scale = 1.0 if index == 0 else rng.uniform(0.3, 0.8)
        height = _lognormal(rng, 110 * scale, 240, 20, HEIGHT)
        width = _lognormal(rng, 130 * scale, 420, max(24, height / 3), min(600, 3 * height + 40))  # compact
        if centre_x is None or rng.random() < 0.3:
            centre_x = placer.column(width / 2)
        else:
            centre_x = placer.column(width / 2, near=centre_x, spread=250)
        centre_y = int(rng.uniform(height / 3, HEIGHT - height / 3))
        box_h, box_w = int(1.3 * height + 24), int(1.3 * width + 24)
        size = (box_h, box_w)
        yy, xx = np.mgrid[0:box_h, 0:box_w].astype(np.float32)
        ellipse = ((xx - box_w / 2) / (width / 2)) ** 2 + ((yy - box_h / 2) / (height / 2)) ** 2
        ragged = 0.6 * _smooth_noise(rng, (5, 5), size) + 0.25 * _smooth_noise(rng, (14, 14), size)
        ellipse += ragged * np.clip(1.6 - ellipse, 0, 1)
        region = (ellipse < 1).astype(np.uint8)
        soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), rng.uniform(1.0, 3.0))
        grid = (max(box_h // 24, 2), max(box_w // 24, 2))
        depth = rng.uniform(25, 50) * (0.8 + 0.3 * _smooth_noise(rng, grid, size))  # uneven floor
        depth += rng.uniform(3, 8) * rng.standard_normal(size, dtype=np.float32)  # rough surface
        rim = rng.uniform(15, 35) * np.clip(np.roll(soft, 3, axis=0) - soft, -1, 1)  # > 0 on the lower edge
        cracks = np.zeros(size, np.float32)
        for _ in range(int(rng.integers(1, 8))):
            steps = int(rng.integers(4, 12))
            points = np.cumsum(rng.normal(0, 7, (steps, 2)) * [1.5, 0.6], axis=0)
            points += [rng.uniform(0.2, 0.8) * box_w, rng.uniform(0.2, 0.8) * box_h]
            cv2.polylines(cracks, [np.round(points).astype(np.int32)], False, 1.0, int(rng.integers(1, 4)))
        cracks = cv2.GaussianBlur(cracks, (0, 0), 0.8) * soft
        lit_edges = np.clip(np.roll(cracks, -2, axis=0) - cracks, 0, 1)  # a highlight just above each crack
        patch = -soft * depth - rim - rng.uniform(20, 45) * cracks + rng.uniform(10, 30) * lit_edges
        x0, y0 = centre_x - box_w // 2, centre_y - box_h // 2
        _paste(delta, patch, x0, y0)
        _outline(rng, mask, region, x0, y0, pad=rng.uniform(4, 12), convex=rng.random() < 0.5)
