"""Each defect of a post-processed prediction as an object: where, how big, how sure (``defects.json``).

A defect is one 8-connected component of a class's post-processed mask (the connectivity of
``postprocess``). Coordinates are pixel indices of the image: ``x`` the column, ``y`` the row, from
the top-left pixel; a bounding box is ``[x, y, width, height]`` and an outline is the component's outer
boundary as ``cv2.findContours`` traces it, through the centres of its border pixels (a one-pixel defect
has a one-point outline). The format is documented in docs/defects-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

FORMAT = "severstal-defects"
VERSION = 1


def _rounded(value: float) -> float:
    return round(float(value), 6)


def defect_objects(masks: np.ndarray, probabilities: np.ndarray, classifier_probabilities: np.ndarray | None,
                   class_ids: Sequence[int], class_names: Sequence[str]) -> list[dict]:
    """The defects of one image, class by class, each component in raster order of its first pixel.

    Args:
        masks: ``(H, W, classes)`` uint8 0/1 post-processed masks.
        probabilities: ``(H, W, classes)`` float probabilities the masks were made from.
        classifier_probabilities: ``(classes,)`` the classifier's probabilities, or None without a classifier.
        class_ids: the class number of each channel.
        class_names: the class name of each channel.

    Returns:
        One dict a defect: ``class``, ``name``, ``area`` (pixels), ``bbox`` ``[x, y, width, height]``,
        ``polygon`` ``[[x, y], ...]``, ``mean_probability`` and ``max_probability`` inside it and
        ``classifier_probability`` of its class (None without a classifier).
    """
    masks, probabilities = np.asarray(masks), np.asarray(probabilities)
    if masks.ndim != 3 or masks.shape != probabilities.shape:
        raise ValueError(f"masks and probabilities must both be (H, W, classes), got {masks.shape} and "
                         f"{probabilities.shape}")
    classes = masks.shape[-1]
    if len(class_ids) != classes or len(class_names) != classes:
        raise ValueError(f"expected {classes} class ids and names, got {len(class_ids)} and {len(class_names)}")
    if classifier_probabilities is not None:
        classifier_probabilities = np.asarray(classifier_probabilities, np.float64).reshape(-1)
        if classifier_probabilities.shape != (classes,):
            raise ValueError(f"classifier_probabilities must have {classes} values, got "
                             f"{classifier_probabilities.shape}")
    defects = []
    for channel in range(classes):
        mask = np.ascontiguousarray(masks[..., channel], dtype=np.uint8)
        if not mask.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        for component in range(1, count):
            x, y, width, height, area = (int(v) for v in stats[component, :5])
            inside = labels[y:y + height, x:x + width] == component  # (height, width) bool
            contours, _ = cv2.findContours(inside.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=(x, y))
            outline = max(contours, key=len).reshape(-1, 2)  # one outer contour per 8-connected component
            values = probabilities[y:y + height, x:x + width, channel][inside]
            defects.append({
                "class": int(class_ids[channel]), "name": str(class_names[channel]), "area": area,
                "bbox": [x, y, width, height], "polygon": outline.tolist(),
                "mean_probability": _rounded(values.mean()), "max_probability": _rounded(values.max()),
                "classifier_probability": None if classifier_probabilities is None
                else _rounded(classifier_probabilities[channel]),
            })
    return defects


def image_record(image_id: str, masks: np.ndarray, probabilities: np.ndarray,
                 classifier_probabilities: np.ndarray | None, class_ids: Sequence[int],
                 class_names: Sequence[str]) -> dict:
    """One image of ``defects.json``: the image-level decision, per class and overall, and its defects.

    Args:
        image_id: the image's name.
        masks, probabilities, classifier_probabilities, class_ids, class_names: as :func:`defect_objects`.

    Returns:
        ``{"image", "height", "width", "defective", "classes": [{"class", "name", "defective", "area",
        "classifier_probability"}], "defects": [...]}``.
    """
    defects = defect_objects(masks, probabilities, classifier_probabilities, class_ids, class_names)
    areas = np.count_nonzero(np.asarray(masks).reshape(-1, len(class_ids)), axis=0)  # (classes,) pixels set
    classes = [{"class": int(class_id), "name": str(name), "defective": bool(area > 0), "area": int(area),
                "classifier_probability": None if classifier_probabilities is None
                else _rounded(np.reshape(classifier_probabilities, -1)[channel])}
               for channel, (class_id, name, area) in enumerate(zip(class_ids, class_names, areas, strict=True))]
    height, width = np.asarray(masks).shape[:2]
    return {"image": image_id, "height": int(height), "width": int(width), "defective": bool(areas.any()),
            "classes": classes, "defects": defects}


def unusable_record(image_id: str, reason: str) -> dict:
    """An image that could not be read (``predict --skip-bad``): no decision, the reason."""
    return {"image": image_id, "unusable": reason, "defective": None, "classes": [], "defects": []}


def label_record(image_id: str, label: str, probabilities: np.ndarray, class_names: Sequence[str],
                 flags: np.ndarray | None = None) -> dict:
    """One image of a classification data set (the folders layout): its predicted class and probabilities.

    Args:
        flags: ``(classes,)`` bool, the classes the image is flagged as (``core.classification.class_flags``:
            per-class decision thresholds, or the most probable class); None: only ``label``.
    """
    probabilities = np.asarray(probabilities, np.float64).reshape(-1)
    if len(class_names) != probabilities.size:
        raise ValueError(f"expected {probabilities.size} class names, got {len(class_names)}")
    flagged = [str(label)] if flags is None else [str(n) for n, f in zip(class_names, flags, strict=True) if f]
    return {"image": image_id, "label": str(label), "flagged": flagged,
            "probabilities": {str(name): _rounded(p) for name, p in zip(class_names, probabilities, strict=True)}}


def defects_document(images: Sequence[Mapping], *, experiment: str, layout: str, class_ids: Sequence[int],
                     class_names: Sequence[str], thresholds: Mapping, models: Sequence[Mapping],
                     created: str) -> dict:
    """The whole ``defects.json``: what the run came from and one record per image.

    Args:
        images: records of :func:`image_record`, :func:`unusable_record` or :func:`label_record`.
        experiment: the experiment's name.
        layout: the data layout (``kaggle``, ``masks``, ``folders``).
        class_ids, class_names: the classes.
        thresholds: ``{"file", "sha256"}`` of the thresholds file applied.
        models: ``{"kind", "fold", "file", "sha256"}`` of each model file.
        created: an ISO 8601 time.
    """
    defective = sum(1 for record in images if record.get("defective"))
    return {"format": FORMAT, "version": VERSION, "experiment": experiment, "layout": layout, "created": created,
            "classes": [{"class": int(c), "name": str(n)} for c, n in zip(class_ids, class_names, strict=True)],
            "thresholds": dict(thresholds), "models": [dict(model) for model in models],
            "summary": {"images": len(images), "defective_images": defective,
                        "defects": sum(len(record.get("defects", ())) for record in images)},
            "images": list(images)}
