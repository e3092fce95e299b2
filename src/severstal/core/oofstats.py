"""Compact out-of-fold (OOF) statistics from which the Dice of every post-processing setting is exact.

Full-resolution OOF probability maps would take 82 GB; instead, for each (image, class) we keep,
for every pixel threshold ``P`` and minimum component size ``C`` of the tuning grid, the
predicted area left after component removal and its intersection with the truth, plus the
true area (and, in a separate file, the classifier probabilities). The minimum total area and
the classifier gate only decide whether the whole mask is kept, so the Dice of any setting
follows from these numbers (see ``thresholds``). The masks are those of
``postprocess.postprocess_class``: the same :func:`postprocess.binarize` and
:func:`postprocess.component_sizes` are used here.

``infra.oof_files`` writes and reads them as ``models/<experiment>/<seg|cls>/fold<K>/oof.npz``
(format in docs/oof-format.md); the functions here only pack, check and join arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .postprocess import binarize, component_sizes

FORMAT_VERSION = 1
SEGMENTATION_KIND = "segmentation"
CLASSIFIER_KIND = "classifier"
STATISTIC_KEYS = ("predicted_area", "intersection", "true_area")


def check_grid(
    pixel_thresholds: Sequence[float], min_component_sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a tuning grid and return it as ``(float64 (P,), int64 (C,))`` arrays."""
    pixels = np.asarray(pixel_thresholds, dtype=np.float64).reshape(-1)
    sizes = np.asarray(min_component_sizes, dtype=np.int64).reshape(-1)
    if pixels.size == 0 or sizes.size == 0:
        raise ValueError("pixel_thresholds and min_component_sizes must not be empty")
    if np.any(np.diff(pixels) <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError(f"grids must be strictly increasing: pixel_thresholds {pixels.tolist()}, "
                         f"min_component_sizes {sizes.tolist()}")
    if pixels[0] < 0 or pixels[-1] > 1 or sizes[0] < 0:
        raise ValueError(f"pixel thresholds must lie in [0, 1] and component sizes be >= 0, got "
                         f"{pixels.tolist()} and {sizes.tolist()}")
    return pixels, sizes


def class_statistics(
    probability: np.ndarray, truth: np.ndarray, pixel_thresholds: np.ndarray, min_component_sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Statistics of one (image, class).

    Args:
        probability: (H, W) float probability map at full resolution.
        truth: (H, W) true mask (nonzero = defect).
        pixel_thresholds: (P,) increasing thresholds (see :func:`check_grid`).
        min_component_sizes: (C,) increasing sizes.

    Returns:
        ``predicted_area`` (P, C) int32, ``intersection`` (P, C) int32 and the true area.
    """
    truth = np.asarray(truth) != 0
    predicted_area = np.zeros((len(pixel_thresholds), len(min_component_sizes)), dtype=np.int32)
    intersection = np.zeros_like(predicted_area)
    true_area = int(np.count_nonzero(truth))
    need_components = min_component_sizes[-1] > 1
    for index, threshold in enumerate(pixel_thresholds):
        # each threshold's mask lies inside the previous one's: look only inside its bounding box
        binary = binarize(probability, threshold)  # (h, w) uint8
        rows, columns = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
        if rows.size == 0:
            break  # this and every higher threshold predict nothing
        window = np.s_[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
        probability, truth, binary = probability[window], truth[window], np.ascontiguousarray(binary[window])
        if need_components:
            labels, sizes = component_sizes(binary)  # sizes (n + 1,), sizes[0] = 0
            hits = np.bincount(labels[truth], minlength=sizes.size)
            hits[0] = 0
            keep = sizes[None, :] >= min_component_sizes[:, None]  # (C, n + 1)
            predicted_area[index] = keep @ sizes
            intersection[index] = keep @ hits
        else:
            predicted_area[index] = np.count_nonzero(binary)
            intersection[index] = np.count_nonzero(binary[truth])
    return predicted_area, intersection, true_area


def segmentation_statistics(
    probabilities: np.ndarray,
    truth: np.ndarray,
    pixel_thresholds: Sequence[float],
    min_component_sizes: Sequence[int],
) -> dict[str, np.ndarray]:
    """OOF statistics of a batch of images (call per batch, then :func:`concatenate_statistics`).

    Args:
        probabilities: (N, H, W, classes) float probability maps at full resolution (256 x 1600 on
            Kaggle), e.g. the flip-TTA mean; component sizes are counted in these pixels.
        truth: (N, H, W, classes) true masks, uint8 or bool.
        pixel_thresholds: (P,) increasing pixel thresholds (the config's ``tune.pixel_thresholds``).
        min_component_sizes: (C,) increasing minimum component sizes.

    Returns:
        ``{"predicted_area": (N, classes, P, C) int32, "intersection": (N, classes, P, C) int32,
        "true_area": (N, classes) int32}``.
    """
    pixels, sizes = check_grid(pixel_thresholds, min_component_sizes)
    if probabilities.ndim != 4:
        raise ValueError(f"probabilities must be (N, H, W, classes), got shape {probabilities.shape}")
    if truth.shape != probabilities.shape:
        raise ValueError(f"truth shape {truth.shape} differs from probabilities shape {probabilities.shape}")
    count, classes = probabilities.shape[0], probabilities.shape[-1]
    predicted_area = np.zeros((count, classes, pixels.size, sizes.size), dtype=np.int32)
    intersection = np.zeros_like(predicted_area)
    true_area = np.zeros((count, classes), dtype=np.int32)
    for image in range(count):
        for channel in range(classes):
            area, overlap, true = class_statistics(probabilities[image, ..., channel],
                                                   truth[image, ..., channel], pixels, sizes)
            predicted_area[image, channel], intersection[image, channel] = area, overlap
            true_area[image, channel] = true
    return {"predicted_area": predicted_area, "intersection": intersection, "true_area": true_area}


def concatenate_statistics(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the per-batch results of :func:`segmentation_statistics` along the image axis."""
    if not parts:
        raise ValueError("no statistics to concatenate")
    return {key: np.concatenate([part[key] for part in parts], axis=0) for key in STATISTIC_KEYS}


def header(kind: str, fold: int) -> dict[str, np.ndarray]:
    """The entries every OOF file starts with."""
    return {"kind": np.array(kind), "format_version": np.array(FORMAT_VERSION), "fold": np.array(int(fold))}


def check_header(arrays: dict[str, np.ndarray], kind: str) -> None:
    """ValueError unless ``arrays`` are OOF arrays of ``kind`` in this code's format version."""
    found_kind = str(arrays.get("kind", ""))
    if found_kind != kind:
        raise ValueError(f"it holds {found_kind or 'unknown'} statistics, expected {kind}")
    if int(arrays.get("format_version", -1)) != FORMAT_VERSION:
        raise ValueError(f"it has format version {arrays.get('format_version')}, this code reads {FORMAT_VERSION}")


def image_id_array(image_ids: Sequence[str], count: int) -> np.ndarray:
    """Image ids as a unicode array of length ``count`` (ValueError on a wrong length or duplicates)."""
    ids = np.asarray([str(image_id) for image_id in image_ids], dtype=np.str_)
    if ids.shape != (count,):
        raise ValueError(f"expected {count} image ids, got {ids.size}")
    if np.unique(ids).size != ids.size:
        raise ValueError("image ids must be unique")
    return ids


def check_segmentation_statistics(stats: dict[str, np.ndarray], num_pixel: int, num_component: int) -> int:
    """Check the shapes of a statistics dict against a grid and return the image count."""
    missing = [key for key in STATISTIC_KEYS if key not in stats]
    if missing:
        raise ValueError(f"statistics lack {missing}")
    true_area = np.asarray(stats["true_area"])
    if true_area.ndim != 2:
        raise ValueError(f"true_area must be (N, classes), got {true_area.shape}")
    count, classes = true_area.shape
    expected = (count, classes, num_pixel, num_component)
    for key in ("predicted_area", "intersection"):
        if np.shape(stats[key]) != expected:
            raise ValueError(f"{key} must be {expected} (N, classes, pixel thresholds, component sizes), "
                             f"got {np.shape(stats[key])}")
    return count


def segmentation_arrays(image_ids: Sequence[str], fold: int, stats: dict[str, np.ndarray],
                        pixel_thresholds: Sequence[float], min_component_sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """The arrays of one fold's segmentation OOF file, checked.

    Args:
        image_ids: (N,) the fold's validation image ids, in the order of ``stats``.
        fold: the fold number K.
        stats: output of :func:`segmentation_statistics` / :func:`concatenate_statistics`.
        pixel_thresholds: the grid the statistics were computed on.
        min_component_sizes: idem.
    """
    pixels, sizes = check_grid(pixel_thresholds, min_component_sizes)
    count = check_segmentation_statistics(stats, pixels.size, sizes.size)
    return {**header(SEGMENTATION_KIND, fold), "image_ids": image_id_array(image_ids, count),
            "pixel_thresholds": pixels, "min_component_sizes": sizes,
            **{key: np.asarray(stats[key], dtype=np.int32) for key in STATISTIC_KEYS}}


def segmentation_from_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """The checked content of a segmentation OOF file.

    Returns:
        ``{"fold": int, "image_ids": (N,) str, "pixel_thresholds": (P,) float64,
        "min_component_sizes": (C,) int64, "predicted_area": (N, classes, P, C) int32,
        "intersection": (N, classes, P, C) int32, "true_area": (N, classes) int32}``.

    Raises:
        ValueError: another kind, another format version or malformed arrays.
    """
    check_header(arrays, SEGMENTATION_KIND)
    try:
        pixels, sizes = check_grid(arrays["pixel_thresholds"], arrays["min_component_sizes"])
        check_segmentation_statistics(arrays, pixels.size, sizes.size)
        result = {"fold": int(arrays["fold"]), "image_ids": arrays["image_ids"], "pixel_thresholds": pixels,
                  "min_component_sizes": sizes}
    except KeyError as error:
        raise ValueError(f"it lacks {error}") from None
    return result | {key: arrays[key] for key in STATISTIC_KEYS}


def classifier_arrays(image_ids: Sequence[str], fold: int, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one fold's classifier OOF file: (N, classes) probabilities that each class is present
    (a binary defect / no-defect head repeats its probability in every column)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, classes), got shape {probabilities.shape}")
    if not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise ValueError("classifier probabilities must lie in [0, 1]")
    return {**header(CLASSIFIER_KIND, fold), "image_ids": image_id_array(image_ids, probabilities.shape[0]),
            "probabilities": probabilities}


def classifier_from_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """The checked content of a classifier OOF file: ``{"fold", "image_ids" (N,), "probabilities" (N, classes)}``."""
    check_header(arrays, CLASSIFIER_KIND)
    try:
        probabilities, image_ids = arrays["probabilities"], arrays["image_ids"]
    except KeyError as error:
        raise ValueError(f"it lacks {error}") from None
    if probabilities.ndim != 2 or probabilities.shape[0] != image_ids.shape[0]:
        raise ValueError(f"probabilities shape {probabilities.shape} does not fit {image_ids.shape[0]} images")
    return {"fold": int(arrays["fold"]), "image_ids": image_ids, "probabilities": probabilities}


@dataclass
class OOFStatistics:
    """The OOF statistics of all folds, joined: what the threshold search works on."""

    image_ids: np.ndarray  # (N,) str
    folds: np.ndarray  # (N,) int: the fold whose model predicted each image
    pixel_thresholds: np.ndarray  # (P,) float64
    min_component_sizes: np.ndarray  # (C,) int64
    predicted_area: np.ndarray  # (N, classes, P, C) int32
    intersection: np.ndarray  # (N, classes, P, C) int32
    true_area: np.ndarray  # (N, classes) int32
    classifier_probabilities: np.ndarray | None = None  # (N, classes) float32, None: no classifier gate

    def __post_init__(self):
        pixels, sizes = check_grid(self.pixel_thresholds, self.min_component_sizes)
        count = check_segmentation_statistics(vars(self), pixels.size, sizes.size)
        if self.image_ids.shape != (count,) or self.folds.shape != (count,):
            raise ValueError(f"image_ids {self.image_ids.shape} and folds {self.folds.shape} "
                             f"must be ({count},)")
        gate = self.classifier_probabilities
        if gate is not None and gate.shape != (count, self.classes):
            raise ValueError(f"classifier_probabilities must be ({count}, {self.classes}), "
                             f"got {self.classifier_probabilities.shape}")

    @property
    def count(self) -> int:
        return int(self.true_area.shape[0])

    @property
    def classes(self) -> int:
        return int(self.true_area.shape[1])

    def select(self, rows: np.ndarray) -> OOFStatistics:
        """The statistics of some images (``rows``: a boolean mask or indices), e.g. of one fold."""
        gate = self.classifier_probabilities
        return OOFStatistics(
            image_ids=self.image_ids[rows], folds=self.folds[rows], pixel_thresholds=self.pixel_thresholds,
            min_component_sizes=self.min_component_sizes, predicted_area=self.predicted_area[rows],
            intersection=self.intersection[rows], true_area=self.true_area[rows],
            classifier_probabilities=None if gate is None else gate[rows])


def combine_folds(segmentation: Sequence[dict], classifier: Sequence[dict] | None = None) -> OOFStatistics:
    """Join the loaded files of all folds.

    Args:
        segmentation: :func:`segmentation_from_arrays` outputs, one per fold, all on the same grid.
        classifier: :func:`classifier_from_arrays` outputs (any order, same images), or None.

    Returns:
        :class:`OOFStatistics` in the order of ``segmentation``; classifier probabilities are
        matched by image id.

    Raises:
        ValueError: grids differ, an image occurs twice, or the classifier images differ.
    """
    if not segmentation:
        raise ValueError("no segmentation statistics given")
    first = segmentation[0]
    for part in segmentation[1:]:
        if not (np.array_equal(part["pixel_thresholds"], first["pixel_thresholds"])
                and np.array_equal(part["min_component_sizes"], first["min_component_sizes"])):
            raise ValueError(f"fold {part['fold']} was computed on another grid than fold {first['fold']}")
    image_ids = np.concatenate([part["image_ids"] for part in segmentation])
    unique, counts = np.unique(image_ids, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"image {unique[counts > 1][0]} occurs in more than one fold's statistics")
    folds = np.concatenate([np.full(part["image_ids"].size, part["fold"], dtype=np.int64)
                            for part in segmentation])
    probabilities = None
    if classifier is not None:
        classifier_ids = np.concatenate([part["image_ids"] for part in classifier])
        classifier_probabilities = np.concatenate([part["probabilities"] for part in classifier])
        order = np.argsort(classifier_ids)
        if not np.array_equal(classifier_ids[order], unique):
            raise ValueError("the classifier's OOF images differ from the segmenter's: "
                             "both must use the same folds")
        probabilities = classifier_probabilities[order][np.searchsorted(unique, image_ids)]
    return OOFStatistics(
        image_ids=image_ids, folds=folds, pixel_thresholds=first["pixel_thresholds"],
        min_component_sizes=first["min_component_sizes"], classifier_probabilities=probabilities,
        **{key: np.concatenate([part[key] for part in segmentation]) for key in STATISTIC_KEYS},
    )
