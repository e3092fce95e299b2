"""tf.data input pipeline: stream JPEGs from disk, decode only each training crop, augment with TensorFlow ops.

Whole images (validation, OOF statistics, predict) are decoded at their own size with libjpeg's exact
integer IDCT (the pixels OpenCV's ``imread`` gives) and scaled to the config's ``scale`` by an area
resize: exactly what an exported model (``nn.export``) does to a camera frame of the data set's size,
so the thresholds tuned on OOF predictions hold for both. For training, each image's masks are parsed
once into run lengths at the model's size and kept (``core.crops``: a few kilobytes an image); a
sample's crop window, flips and brightness are drawn from them (``augment.Augmenter``, the only Python
step), then only the window is decoded from the JPEG (``tf.io.decode_and_crop_jpeg``, scaled by
libjpeg's DCT scaling when the scale is 1/2, 1/4 or 1/8: at most 2 grey levels from the area resize,
0.5 on average, on the demo images) and only the window's masks from the runs, and the flips, brightness/contrast and
blackout run as TensorFlow ops (``augment.apply_plan``) in parallel ``map`` workers. Files are
read again every epoch (the operating system caches them), so memory does not grow with them.

Every stream runs with fixed parallelism (one ``map`` worker per core this process may use, two
batches prefetched) rather than tf.data's autotuning: autotuning's background thread sleeps up to a
minute between its rounds, and destroying the iterator of a stream that ran for minutes waits for
it, so ``model.fit`` returned up to a minute after its last epoch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import cv2
import numpy as np

from ..core.constants import CLASS_IDS
from ..core.crops import ImageRuns, image_runs, window_masks
from ..infra.schema import AugmentSection, ClassifierSection, SegmenterSection
from .augment import Augmenter, apply_plan
from .tfsetup import tf

PREFETCH_BATCHES = 2


def map_workers() -> int:
    """Parallel ``map`` calls of every stream: one per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Samples:
    """Images and their masks as RLE strings (``""`` for an empty class), in a fixed order."""

    image_ids: tuple[str, ...]
    paths: tuple[str, ...]
    rles: tuple[tuple[str, ...], ...]  # one string per class per image
    num_classes: int = len(CLASS_IDS)

    def __len__(self) -> int:
        return len(self.image_ids)

    def presence(self) -> np.ndarray:
        """``(images, classes)`` float32: 1 where the class mask is not empty."""
        return np.array([[rle != "" for rle in row] for row in self.rles], dtype=np.float32).reshape(
            -1, self.num_classes)

    def subset(self, keep) -> Samples:
        """The samples where the boolean array ``keep`` is true."""
        keep = np.asarray(keep, dtype=bool)
        pick = [i for i in range(len(self)) if keep[i]]
        return Samples(tuple(self.image_ids[i] for i in pick), tuple(self.paths[i] for i in pick),
                       tuple(self.rles[i] for i in pick), self.num_classes)


def make_samples(image_ids, image_dir, lookup: dict[str, dict[int, str]], class_ids=CLASS_IDS) -> Samples:
    """Samples for ``image_ids`` in ``image_dir``, masks from ``labels.rle_lookup`` output."""
    image_ids = tuple(image_ids)
    return Samples(
        image_ids=image_ids,
        paths=tuple(str(Path(image_dir) / image_id) for image_id in image_ids),
        rles=tuple(tuple(lookup.get(image_id, {}).get(c, "") for c in class_ids) for image_id in image_ids),
        num_classes=len(class_ids),
    )


@dataclass(frozen=True)
class InputSpec:
    """How images reach a model: the size data are expected at and the scaled size the model sees."""

    original: tuple[int, int]  # (height, width) of the data, e.g. (256, 1600)
    size: tuple[int, int]  # (height, width) after scaling, e.g. (64, 400)
    jpeg_ratio: int  # libjpeg scale-down factor that gives ``size`` from ``original`` exactly (1 if none)


def input_spec(height: int, width: int, scale: float) -> InputSpec:
    """The :class:`InputSpec` for images of ``height x width`` scaled by ``scale`` (0 < scale <= 1)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    ratio = next((r for r in (8, 4, 2) if size == (height / r, width / r)), 1)
    return InputSpec((int(height), int(width)), size, ratio)


def read_image(path, spec: InputSpec):
    """Read and decode an image file at ``spec.size`` inside a tf.data map.

    Returns:
        ``(image, original_shape)``: ``(h, w, 3)`` uint8 and the file's own ``(height, width)`` int32.
    """
    return decode_image(tf.io.read_file(path), spec)


def area_resize(images, size):
    """uint8 ``(..., h, w, 3)`` images resized to ``size`` = (height, width) by area averaging, rounded to uint8."""
    return tf.cast(tf.round(tf.image.resize(images, size, method="area")), tf.uint8)


TIFF_MAGIC = (b"II*\x00", b"MM\x00*")  # little- and big-endian TIFF
EXACT_IDCT = "INTEGER_ACCURATE"  # libjpeg's JDCT_ISLOW, as OpenCV decodes


def _opencv_rgb(contents: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB of an image file's bytes (a uint8 array) decoded by OpenCV (grey and 16-bit images
    converted)."""
    image = cv2.imdecode(contents, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # as tf.io ignores it
    if image is None:
        raise ValueError("the image cannot be decoded (severstal check-data lists unreadable images)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_any(contents):
    """An image file's bytes as ``(h, w, 3)`` uint8 RGB at its own size, the pixels OpenCV's ``imread`` gives:
    JPEG with libjpeg's exact integer IDCT (TensorFlow's default, the fast IDCT, is up to 10 grey levels off),
    PNG, BMP and GIF with TensorFlow's decoders, TIFF with OpenCV's (``tf.io`` cannot read it)."""
    header = tf.strings.substr(contents, 0, 4)
    tiff = tf.reduce_any(tf.equal(header, tf.constant(TIFF_MAGIC)))

    def opencv():
        data = tf.io.decode_raw(contents, tf.uint8)  # the bytes as uint8 (a string would lose trailing zeros)
        image = tf.numpy_function(_opencv_rgb, [data], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (None, None, 3))

    def other():
        return tf.cond(tiff, opencv, lambda: tf.io.decode_image(contents, channels=3, expand_animations=False))

    return tf.cond(tf.io.is_jpeg(contents),
                   lambda: tf.io.decode_jpeg(contents, channels=3, dct_method=EXACT_IDCT), other)


def decode_image(contents, spec: InputSpec):
    """:func:`read_image` of a file's bytes: decoded whole (:func:`decode_any`), then area-resized."""
    image = decode_any(contents)
    return scale_image(image, spec), tf.shape(image)[:2]


def scale_image(image, spec: InputSpec):
    """A decoded ``(h, w, 3)`` uint8 image area-resized to ``spec.size`` (left alone when it has that size)."""
    same = tf.reduce_all(tf.shape(image)[:2] == tf.constant(spec.size, tf.int32))
    image = tf.cond(same, lambda: image, lambda: area_resize(image, spec.size))
    return tf.ensure_shape(image, (*spec.size, 3))


def decode_window(contents, spec: InputSpec, crop: tuple[int, int]):
    """A reader of one window of an image file's bytes: ``(original shape, read(top, left))``.

    A JPEG of the data set's size is decoded inside the window only (at ``spec``'s libjpeg scale) where that scale
    gives ``spec.size`` (1, 1/2, 1/4, 1/8); any other file, or scale, is decoded whole at ``spec.size``
    (:func:`decode_image`) and the window cut out.
    """
    jpeg = tf.io.is_jpeg(contents)
    shape = tf.cond(jpeg, lambda: tf.io.extract_jpeg_shape(contents)[:2], lambda: tf.constant([-1, -1], tf.int32))
    scalable = spec.jpeg_ratio > 1 or tuple(spec.size) == tuple(spec.original)  # libjpeg alone reaches spec.size
    direct = tf.logical_and(tf.constant(scalable), tf.reduce_all(shape == tf.constant(spec.original, tf.int32)))
    whole, original = tf.cond(direct, lambda: (tf.zeros((0, 0, 3), tf.uint8), shape),
                              lambda: decode_image(contents, spec))

    def read(top, left):
        window = tf.stack([top, left, crop[0], crop[1]])
        image = tf.cond(direct, lambda: tf.io.decode_and_crop_jpeg(contents, window, channels=3,
                                                                   ratio=spec.jpeg_ratio, dct_method=EXACT_IDCT),
                        lambda: tf.slice(whole, [top, left, 0], [crop[0], crop[1], 3]))
        return tf.ensure_shape(image, (*crop, 3))

    return original, read


def decode_masks(rles, original_shape, size) -> np.ndarray:
    """Masks ``(h, w, classes)`` uint8 at ``size`` from one RLE string per class of an image of ``original_shape``.

    A pixel of the scaled mask is set when at least half of the area it covers is set (an area
    resize of 0/255 values: exact, and three times faster than in floating point).
    """
    size = (int(size[0]), int(size[1]))
    return window_masks(image_runs(rles, original_shape, size), 0, 0, size)


class _ThreadAugmenters:
    """One :class:`Augmenter` per worker thread, seeded ``seed, seed + 1, ...`` in order of first use."""

    def __init__(self, augment: AugmentSection, crop, crop_non_empty: float, seed: int):
        self.arguments = (augment, crop, crop_non_empty)
        self.seeds = count(seed)
        self.local = threading.local()
        self.lock = threading.Lock()

    def get(self) -> Augmenter:
        augmenter = getattr(self.local, "augmenter", None)
        if augmenter is None:
            with self.lock:
                seed = next(self.seeds)
            augmenter = self.local.augmenter = Augmenter(*self.arguments, seed=seed)
        return augmenter


class _MaskStore:
    """Each image's masks as :class:`core.crops.ImageRuns` at the model's size, parsed on first use.

    Worker threads share it; two threads that parse one image at once store equal values.
    """

    def __init__(self, samples: Samples, size: tuple[int, int]):
        self.samples, self.size, self.runs = samples, size, {}

    def get(self, index: int, original) -> ImageRuns:
        runs = self.runs.get(index)
        if runs is None:
            runs = self.runs[index] = image_runs(self.samples.rles[index], original, self.size)
        return runs


def _fixed_options(one_thread_per_element: bool = False):
    """Options of every stream: autotuning off (see the module's docstring); optionally each element's
    ops on one thread, the parallelism coming from the map's workers and the model's kernels keeping
    the other threads (tf.data's performance guide recommends this for training streams)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    if one_thread_per_element:
        options.threading.max_intra_op_parallelism = 1
    return options


def _parallel_map(dataset, load, batch_size: int, drop_remainder: bool = False, deterministic: bool = True):
    """``dataset`` mapped by ``load`` in :func:`map_workers` parallel calls, batched and prefetched."""
    dataset = dataset.map(load, num_parallel_calls=map_workers(), deterministic=deterministic)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(PREFETCH_BATCHES)


def _sample_dataset(samples: Samples):
    rles = np.array(samples.rles, dtype=object).reshape(-1, samples.num_classes).astype(str)
    return tf.data.Dataset.from_tensor_slices((list(samples.paths), rles))


SAMPLING = (False, "defect", "classes")


def sampling_groups(samples: Samples, sampling) -> list[Samples]:
    """The groups a balanced stream draws from equally often (each group's images uniformly).

    Args:
        samples: the training images.
        sampling: ``False`` (one group), ``"defect"`` or ``True`` (defective / defect-free) or
            ``"classes"`` (the images of each class, and the defect-free ones; an image with two
            classes is in two groups). Empty groups are dropped.
    """
    if sampling is True:
        sampling = "defect"
    if sampling not in SAMPLING:
        raise ValueError(f"balanced_sampling must be false, 'defect' or 'classes', got {sampling!r}")
    presence = samples.presence() > 0  # (images, 4)
    clean = ~presence.any(axis=1)
    if not sampling:
        groups = [np.ones(len(samples), bool)]
    elif sampling == "defect":
        groups = [~clean, clean]
    else:
        groups = [presence[:, c] for c in range(samples.num_classes)] + [clean]
    return [samples.subset(group) for group in groups if group.any()]


def training_dataset(samples: Samples, kind: str, section: ClassifierSection | SegmenterSection, spec: InputSpec,
                     seed: int, batch_size: int):
    """An endless, shuffled, augmented stream of training batches.

    Args:
        samples: the training images.
        kind: ``seg`` (targets: masks ``(batch, ch, cw, 4)`` uint8) or ``cls`` (targets: presence
            ``(batch, classes)``, or ``(batch, 1)`` for a binary head, float32).
        section: the model's config section (``crop``, ``crop_non_empty``, ``augment``, ``head``,
            ``balanced_sampling``: see :func:`sampling_groups`).
        spec: image sizes.
        seed: shuffling and augmentation seed.
        batch_size: examples per batch.

    Returns:
        ``(dataset, steps_per_epoch)``: one epoch is ``len(samples) // batch_size`` batches.
    """
    if len(samples) < batch_size:
        raise ValueError(f"{len(samples)} training images are fewer than the batch size {batch_size}")
    crop = section.crop  # checked against the scaled size with the config
    out_size = tuple(crop or spec.size)
    binary = kind == "cls" and section.head == "binary"
    classes = samples.num_classes
    augmenters = _ThreadAugmenters(section.augment, crop, section.crop_non_empty, seed)
    store = _MaskStore(samples, spec.size)
    no_blackout = np.zeros((0, 0), bool)

    def plan(index, original):  # NumPy, in a worker thread: the only step under Python's lock
        chosen = augmenters.get().plan(store.get(int(index), original))
        flags = np.array([chosen.hflip, chosen.vflip, chosen.adjust])
        coefficients = np.array([chosen.alpha, chosen.beta], np.float32)
        dropped = no_blackout if chosen.dropped is None else chosen.dropped
        if kind == "seg":
            target = chosen.masks
        else:
            target = chosen.presence.max(keepdims=True) if binary else chosen.presence
        return np.int32(chosen.top), np.int32(chosen.left), flags, coefficients, target, dropped

    def load(index, path):
        original, read = decode_window(tf.io.read_file(path), spec, out_size)
        target_type = tf.uint8 if kind == "seg" else tf.float32
        top, left, flags, coefficients, target, dropped = tf.numpy_function(
            plan, [index, original], [tf.int32, tf.int32, tf.bool, tf.float32, target_type, tf.bool], stateful=True)
        image = read(tf.ensure_shape(top, ()), tf.ensure_shape(left, ()))  # (h, w, 3)
        flags, coefficients = tf.ensure_shape(flags, (3,)), tf.ensure_shape(coefficients, (2,))
        masks = tf.ensure_shape(target, (*out_size, classes)) if kind == "seg" else None
        image, masks = apply_plan(image, masks, flags[0], flags[1], flags[2], coefficients[0], coefficients[1],
                                  tf.ensure_shape(dropped, (None, None)))
        if kind == "seg":
            return image, masks
        return image, tf.ensure_shape(target, (1 if binary else classes,))

    position = {image_id: i for i, image_id in enumerate(samples.image_ids)}

    def endless(part: Samples, part_seed: int):  # (index into samples, path), shuffled, endless
        indices = np.array([position[image_id] for image_id in part.image_ids], np.int64)
        dataset = tf.data.Dataset.from_tensor_slices((indices, list(part.paths)))
        return dataset.shuffle(len(part), seed=part_seed, reshuffle_each_iteration=True).repeat()

    groups = sampling_groups(samples, section.balanced_sampling)
    if len(groups) == 1:
        dataset = endless(groups[0], seed)
    else:
        dataset = tf.data.Dataset.sample_from_datasets(
            [endless(group, seed + i) for i, group in enumerate(groups)], [1.0 / len(groups)] * len(groups),
            seed=seed)
    dataset = _parallel_map(dataset, load, batch_size, drop_remainder=True, deterministic=False)
    return dataset.with_options(_fixed_options(one_thread_per_element=True)), len(samples) // batch_size


def validation_dataset(samples: Samples, kind: str, section: ClassifierSection | SegmenterSection, spec: InputSpec,
                       batch_size: int):
    """Whole images (no augmentation) with their targets, once, in order.

    Targets are masks ``(batch, h, w, 4)`` uint8 at ``spec.size`` for ``seg``, presence ``(batch, 4)``
    (or ``(batch, 1)`` for a binary head) float32 for ``cls``.
    """
    binary = kind == "cls" and section.head == "binary"

    def load(path, rles):
        image, original = read_image(path, spec)
        if kind == "seg":
            masks = tf.numpy_function(lambda r, o: decode_masks(r, o, spec.size), [rles, original], tf.uint8,
                                      stateful=False)
            return image, tf.ensure_shape(masks, (*spec.size, samples.num_classes))
        presence = tf.cast(tf.strings.length(rles) > 0, tf.float32)  # (4,)
        return image, tf.reduce_max(presence, keepdims=True) if binary else presence

    return _parallel_map(_sample_dataset(samples), load, batch_size).with_options(_fixed_options())


def image_dataset(paths, specs: Sequence[InputSpec], batch_size: int):
    """Batches ``((images at specs[0], images at specs[1], ...), original shapes (batch, 2) int32)`` for prediction.

    Each file is read and decoded once, then area-resized to each spec; images are ``(batch, h, w, 3)`` uint8, in
    order.
    """
    specs = tuple(specs)

    def load(path):
        image = decode_any(tf.io.read_file(path))
        return tuple(scale_image(image, spec) for spec in specs), tf.shape(image)[:2]

    dataset = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    return _parallel_map(dataset, load, batch_size).with_options(_fixed_options())
