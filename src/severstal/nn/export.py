"""The fold ensemble as one TensorFlow SavedModel that plain TensorFlow loads and runs (``severstal export``).

The ``serving_default`` signature takes ``images``, uint8 ``(batch, height, width, 3)`` RGB at the data
set's size, and returns ``segmentation``, float32 ``(batch, height, width, classes)``: the fold- and
flip-mean probabilities of the segmenter folds, and ``classification``, float32 ``(batch, classes)``:
the classifier folds' mean, where the thresholds gate on a classifier (a classification data set has
this output alone). Inside, the images are area-resized to each model's input size and the
segmenter's mean is resized back bilinearly: what ``predict`` does to a decoded image
(``nn.inference``), so the thresholds tuned on out-of-fold predictions hold. Where the scale is a
power of two (1/2, 1/4, 1/8, as in the demo) the area resize is written as an average pool, which
gives the same values exactly and which ONNX converters translate (tf2onnx turns TensorFlow's area
resize into nearest-neighbour sampling without a word). The graph holds only
TensorFlow ops and the models' variables: loading it needs neither this package nor
segmentation-models. ``export.json`` beside it (``core.exports``) says how to post-process the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.exports import CLASSIFICATION, INPUT, ONNX_OPSET, SEGMENTATION, SIGNATURE
from .inference import FoldEnsemble
from .pipeline import area_resize
from .tfsetup import tf


def pooling_factors(shape: Sequence[int], size: Sequence[int]) -> tuple[int, int] | None:
    """``(fh, fw)`` when ``size`` is ``shape`` divided by powers of two (an average pool then is the area resize, to
    the bit: the sums are exact in float32 and so are the divisions), else None."""
    factors = []
    for whole, part in zip(shape, size, strict=True):
        factor, remainder = divmod(int(whole), int(part))
        if remainder or factor & (factor - 1):
            return None
        factors.append(factor)
    return factors[0], factors[1]


def exported_resize(images, shape: Sequence[int], size: Sequence[int]):
    """:func:`pipeline.area_resize` of ``(batch, *shape, 3)`` uint8 images, as an average pool where
    :func:`pooling_factors` allows it."""
    factors = pooling_factors(shape, size)
    if factors is None:
        return area_resize(images, size)
    pooled = tf.nn.avg_pool2d(tf.cast(images, tf.float32), factors, factors, "VALID")  # (batch, *size, 3)
    return tf.cast(tf.round(pooled), tf.uint8)


def serving_module(ensembles: Mapping[str, FoldEnsemble], shape: Sequence[int]) -> tf.Module:
    """A ``tf.Module`` whose ``serve`` function runs the ensembles on images of ``shape`` = (height, width).

    Args:
        ensembles: ``{"seg": FoldEnsemble, "cls": FoldEnsemble}`` (either may be left out).
        shape: the data set's image size.

    Returns:
        The module; it tracks the models' variables only (not the Keras models), so a saved copy holds
        nothing but the traced graph and the weights.
    """
    if not ensembles:
        raise ValueError("nothing to export: no fold ensemble given")
    height, width = (int(n) for n in shape)
    module = tf.Module(name="severstal_ensemble")
    module.model_variables = [variable for ensemble in ensembles.values() for fold_model in ensemble.fold_models
                              for variable in fold_model.model.variables]

    @tf.function(input_signature=[tf.TensorSpec((None, height, width, 3), tf.uint8, name="images")])
    def serve(images):  # (batch, height, width, 3) uint8
        outputs = {}
        for kind, ensemble in ensembles.items():
            size = tuple(ensemble.spec.size)
            scaled = images if size == (height, width) else exported_resize(images, (height, width), size)
            mean, _ = ensemble.averaged(scaled)
            if kind == "seg":
                if size != (height, width):
                    mean = tf.image.resize(mean, (height, width), method="bilinear")
                outputs[SEGMENTATION] = mean  # (batch, height, width, classes)
            else:
                if ensemble.head == "binary":  # one probability, every class's
                    mean = tf.repeat(mean, ensemble.num_classes, axis=1)
                outputs[CLASSIFICATION] = mean  # (batch, classes)
        return outputs

    module.serve = serve
    return module


def save_serving_model(module: tf.Module, directory: Path) -> None:
    """Write the SavedModel of a :func:`serving_module` into ``directory`` (its ``serving_default`` signature)."""
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: module.serve.get_concrete_function()})


def onnx_problem(ensembles: Mapping[str, FoldEnsemble], shape: Sequence[int]) -> str | None:
    """Why the ensembles cannot be converted to ONNX faithfully (None: they can).

    tf2onnx translates TensorFlow's area resize into nearest-neighbour sampling (no error, wrong values), so an
    input scaled by anything but a power of two (which :func:`exported_resize` writes as an average pool) is refused.
    """
    for kind, ensemble in ensembles.items():
        size = tuple(ensemble.spec.size)
        if size != tuple(shape) and pooling_factors(shape, size) is None:
            return (f"the {'segmenter' if kind == 'seg' else 'classifier'} scales {shape[0]} x {shape[1]} images to "
                    f"{size[0]} x {size[1]}, not by a power of two: ONNX converters (tf2onnx) turn TensorFlow's area "
                    f"resize into nearest-neighbour sampling, which gives other probabilities. Use the SavedModel, or "
                    f"train with {kind}.scale 1, 1/2, 1/4 or 1/8")
    return None


def save_onnx(module: tf.Module, shape: Sequence[int], path: Path, opset: int = ONNX_OPSET) -> None:
    """Convert a :func:`serving_module`'s ``serve`` to ONNX at ``path`` with tf2onnx (input ``images``, outputs named
    as the SavedModel's)."""
    import tf2onnx

    signature = [tf.TensorSpec((None, int(shape[0]), int(shape[1]), 3), tf.uint8, name=INPUT)]
    tf2onnx.convert.from_function(module.serve, input_signature=signature, opset=opset, output_path=str(path))


def onnx_difference(module: tf.Module, path: Path, images) -> float:
    """The largest absolute difference between the ONNX model at ``path`` (run by onnxruntime on the CPU) and the
    module on ``images`` (``(batch, h, w, 3)`` uint8), over every output."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: tf2onnx's nearest upsampling draws a deprecation warning per load
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    converted = dict(zip(names, session.run(names, {INPUT: images}), strict=True))
    expected = {name: value.numpy() for name, value in module.serve(tf.constant(images)).items()}
    if set(converted) != set(expected):
        raise ValueError(f"the ONNX model's outputs {sorted(converted)} are not the SavedModel's {sorted(expected)}")
    return max(float(abs(converted[name] - expected[name]).max()) for name in expected)
