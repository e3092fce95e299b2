"""The fold ensemble as one TensorFlow SavedModel that plain TensorFlow loads and runs (``severstal export``).

The ``serving_default`` signature takes ``images``, uint8 ``(batch, height, width, 3)`` RGB at the data
set's size, and returns ``segmentation``, float32 ``(batch, height, width, classes)``: the fold- and
flip-mean probabilities of the segmenter folds, and ``classification``, float32 ``(batch, classes)``:
the classifier folds' mean, where the thresholds gate on a classifier (a classification data set has
this output alone). Inside, the images are area-resized to each model's input size and the
segmenter's mean is resized back bilinearly: what ``predict`` does to a decoded image
(``nn.inference``), so the thresholds tuned on out-of-fold predictions hold. The graph holds only
TensorFlow ops and the models' variables: loading it needs neither this package nor
segmentation-models. ``export.json`` beside it (``core.exports``) says how to post-process the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.exports import CLASSIFICATION, SEGMENTATION, SIGNATURE
from .inference import FoldEnsemble
from .pipeline import area_resize
from .tfsetup import tf


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
            scaled = images if size == (height, width) else area_resize(images, size)  # (batch, h, w, 3)
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


def save_serving_model(ensembles: Mapping[str, FoldEnsemble], shape: Sequence[int], directory: Path) -> None:
    """Write the SavedModel of :func:`serving_module` into ``directory`` (its ``serving_default`` signature)."""
    module = serving_module(ensembles, shape)
    signature = module.serve.get_concrete_function()
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: signature})
