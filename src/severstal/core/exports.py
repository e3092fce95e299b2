"""``export.json``: what an exported model is, what it takes and returns, and how to post-process its outputs.

``severstal export`` writes it beside the SavedModel (``nn.export``); ``Predictor`` (``nn.predictor``)
reads it. The format is documented in docs/export-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .postprocess import ClassThresholds

MANIFEST = "export.json"
FORMAT = "severstal-export"
VERSION = 1
SIGNATURE = "serving_default"
INPUT = "images"
SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"
CHANNEL_ORDER = "RGB"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4  # the largest difference from the SavedModel accepted for a converted model


def export_manifest(*, experiment: str, layout: str, class_ids: Sequence[int], class_names: Sequence[str],
                    shape: Sequence[int], outputs: Sequence[str], postprocessing: Sequence[Mapping] | None,
                    decision: Mapping | None, tile_overlap: int | None, tta: Sequence[str], folds: Sequence[int],
                    precision: str, made_from: Mapping, created: str, tensorflow: str,
                    onnx: Mapping | None = None) -> dict:
    """The ``export.json`` document.

    Args:
        experiment, layout: the experiment's name and its data layout (``kaggle``, ``masks``, ``folders``).
        class_ids, class_names: the classes, in channel order.
        shape: (height, width) of the images the signature takes.
        outputs: the signature's outputs (:data:`SEGMENTATION`, :data:`CLASSIFICATION`).
        postprocessing: per class, ``ClassThresholds.to_dict()`` (segmentation data), else None.
        decision: a classification data set's decision rule (``{"rule": "argmax"}`` or per-class thresholds).
        tile_overlap: the least overlap of tiles for images larger than ``shape`` (masks layout), else None.
        tta, folds, precision: how the probabilities are made (as the thresholds were tuned).
        made_from: ``{"thresholds": {...}, "models": [...], "config": {...}}``.
        created: an ISO 8601 time; tensorflow: the TensorFlow version that wrote the SavedModel.
        onnx: ``{"file", "opset", "converter", "max_abs_difference", "checked_on"}`` of the ONNX copy, or None.
    """
    height, width = (int(n) for n in shape)
    unknown = set(outputs) - {SEGMENTATION, CLASSIFICATION}
    if unknown or not outputs:
        raise ValueError(f"outputs must be some of {SEGMENTATION}, {CLASSIFICATION}; got {list(outputs)}")
    if (SEGMENTATION in outputs) != (postprocessing is not None):
        raise ValueError("a segmentation export needs its post-processing thresholds, and only it")
    classes = len(class_ids)
    shapes = {SEGMENTATION: [None, height, width, classes], CLASSIFICATION: [None, classes]}
    return {
        "format": FORMAT, "version": VERSION, "experiment": experiment, "layout": layout, "created": created,
        "tensorflow": tensorflow, "signature": SIGNATURE,
        "input": {"name": INPUT, "dtype": "uint8", "shape": [None, height, width, 3], "channel_order": CHANNEL_ORDER},
        "outputs": {name: {"dtype": "float32", "shape": shapes[name]} for name in outputs},
        "classes": [{"class": int(c), "name": str(n)} for c, n in zip(class_ids, class_names, strict=True)],
        "postprocessing": None if postprocessing is None else [dict(item) for item in postprocessing],
        "single_label_map": layout == "masks",
        "decision": None if decision is None else dict(decision),
        "tiles": None if tile_overlap is None else {"overlap": int(tile_overlap)},
        "tta": list(tta), "folds": [int(f) for f in folds], "precision": precision,
        "made_from": dict(made_from),
        "onnx": None if onnx is None else dict(onnx),
    }


def check_manifest(document: object, where: str = MANIFEST) -> dict:
    """``export.json`` read back: ValueError naming what is wrong, else the document.

    Raises:
        ValueError: not this format or version, or a key missing or of the wrong kind.
    """
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise ValueError(f"{where} is not a severstal export manifest (format {FORMAT!r}): export the model with "
                         "severstal export")
    if document.get("version") != VERSION:
        raise ValueError(f"{where} has version {document.get('version')!r}; this predictor reads version {VERSION}: "
                         "export the model again with this version of severstal")
    required = {"input": Mapping, "outputs": Mapping, "classes": list, "tta": list, "folds": list}
    for key, kind in required.items():
        if not isinstance(document.get(key), kind):
            raise ValueError(f"{where}: {key!r} is missing or not a {kind.__name__.lower()}")
    shape = document["input"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(n, int) for n in shape[1:])
            and shape[3] == 3):
        raise ValueError(f"{where}: input.shape must be [null, height, width, 3], got {shape!r}")
    if not isinstance(document.get("signature"), str):
        raise ValueError(f"{where}: 'signature' (the SavedModel's signature name) is missing")
    names = [item.get("name") if isinstance(item, Mapping) else None for item in document["classes"]]
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{where}: 'classes' must list {{\"class\", \"name\"}} of each class")
    if SEGMENTATION in document["outputs"]:
        settings = document.get("postprocessing")
        if not isinstance(settings, list) or len(settings) != len(names):
            raise ValueError(f"{where}: a segmentation export needs its 'postprocessing' thresholds, one per class")
        for number, item in enumerate(settings, 1):
            ClassThresholds.from_dict(item, f"{where}: postprocessing.{number}.")
    else:
        decision = document.get("decision")
        if not isinstance(decision, Mapping) or decision.get("rule") not in ("argmax", "thresholded"):
            raise ValueError(f"{where}: a classification export needs its 'decision' rule (argmax or thresholded)")
        if decision["rule"] == "thresholded":
            values = decision.get("thresholds")
            wrong = [name for name in names if not isinstance(values, Mapping) or not isinstance(
                values.get(name), int | float) or not 0 <= values[name] <= 1]
            if wrong:
                raise ValueError(f"{where}: decision.thresholds needs a number in [0, 1] for {', '.join(wrong)}")
    return dict(document)
