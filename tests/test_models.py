"""Model builders, losses, the Kaggle Dice metric, the learning-rate schedule and hardware switches."""

import dataclasses
import math

import numpy as np
import pytest

from severstal.infra.schema import ClassifierSection, HardwareSection, SegmenterSection
from severstal.nn.hardware import configure_hardware
from severstal.nn.losses import KaggleDice, segmentation_loss
from severstal.nn.models import build_classifier, build_model, build_segmenter, encoder_weights_setting, pad_amounts
from severstal.nn.schedules import WarmupCosine
from severstal.nn.tfsetup import keras, sm
from severstal.nn.training import monitor_of

pytestmark = pytest.mark.slow
SMALL_SEGMENTER = SegmenterSection(encoder="resnet18", encoder_weights="none", decoder_filters=(16, 8, 8, 8, 8))


def segmenter_section(**changes) -> SegmenterSection:
    return dataclasses.replace(SMALL_SEGMENTER, **changes)


def classifier_section(**changes) -> ClassifierSection:
    return ClassifierSection(**{"backbone": "resnet18", "encoder_weights": "none", "dense_units": 8, **changes})


@pytest.mark.parametrize("size, expected", [(64, (0, 0)), (400, (8, 8)), (50, (7, 7)), (33, (15, 16)), (1, (15, 16))])
def test_pad_amounts(size, expected):
    assert pad_amounts(size) == expected
    assert (size + sum(expected)) % 32 == 0


def test_segmenter_and_classifier_outputs():
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 400, 3)).astype(np.uint8)
    segmenter = build_segmenter(segmenter_section(architecture="fpn", pyramid_filters=16))
    probabilities = segmenter.predict_on_batch(images)
    assert probabilities.shape == (2, 64, 400, 4) and probabilities.dtype == np.float32
    assert 0 <= probabilities.min() and probabilities.max() <= 1
    for head, outputs in (("multilabel", 4), ("binary", 1)):
        classifier = build_classifier(classifier_section(head=head))
        assert classifier.predict_on_batch(images).shape == (2, outputs)


@pytest.mark.parametrize("pooling, features", [("avg", 512), ("max", 512), ("avgmax", 1024)])
def test_classifier_pooling(pooling, features):
    classifier = build_classifier(classifier_section(pooling=pooling))
    assert classifier.get_layer("dense").input_shape == (None, features)


def test_unknown_pooling():
    with pytest.raises(ValueError, match="cls.pooling"):
        build_classifier(classifier_section(pooling="median"))


@pytest.mark.parametrize("changes, message", [  # sections made in code, not checked by the config schema
    ({"encoder": "vgg16"}, "unknown backbone"),
    ({"architecture": "linknet"}, "unet' or 'fpn"),
    ({"encoder_weights": "missing.h5"}, "neither 'imagenet'"),
    ({"bn_momentum": 1.5}, "bn_momentum"),
])
def test_bad_segmenter_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        build_model("seg", segmenter_section(**changes))


@pytest.mark.parametrize("value, expected", [("imagenet", ("imagenet", None)), ("none", (None, None)),
                                             (None, (None, None))])
def test_encoder_weights_setting(value, expected):
    assert encoder_weights_setting(value) == expected


def test_encoder_weights_from_a_local_file(tmp_path):
    modules = {"backend": keras.backend, "layers": keras.layers, "models": keras.models, "utils": keras.utils}
    backbone = sm.Backbones.get_backbone("resnet18", input_shape=(None, None, 3), weights=None, include_top=False,
                                         **modules)
    path = tmp_path / "resnet18_encoder.h5"  # Keras' legacy HDF5 layout: loadable by layer name
    backbone.save_weights(str(path))
    expected = backbone.get_layer("conv0").get_weights()[0]
    segmenter = build_segmenter(segmenter_section(encoder_weights=str(path)))
    np.testing.assert_array_equal(segmenter.get_layer("network").get_layer("conv0").get_weights()[0], expected)
    classifier = build_classifier(classifier_section(encoder_weights=str(path), dense_units=128))
    np.testing.assert_array_equal(classifier.get_layer("backbone").get_layer("conv0").get_weights()[0], expected)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="unrelated")])
    other.save_weights(str(tmp_path / "other.h5"))
    with pytest.raises(ValueError, match="no layer"):
        build_segmenter(segmenter_section(encoder_weights=str(tmp_path / "other.h5")))


def test_batchnorm_momentum_is_applied():
    model = build_model("seg", segmenter_section(bn_momentum=0.9))
    momenta = {layer.momentum for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}


def loss_value(name, truth, probability, **kwargs):
    loss = segmentation_loss(name, **kwargs)
    return float(np.mean(loss(np.asarray(truth, np.float32), np.asarray(probability, np.float32))))


def test_losses_by_hand():
    ones = np.ones((1, 2, 2, 4))
    half = np.full((1, 2, 2, 4), 0.5)
    # perfect prediction: BCE ~ 0 and every class Dice 1 (empty classes too)
    perfect = np.zeros((1, 2, 2, 4))
    perfect[0, 0, 0, 2] = 1
    assert loss_value("bce_dice", perfect, perfect) == pytest.approx(0.0, abs=1e-5)
    # empty truth, p = 0.5 everywhere: BCE ln 2; Dice per class (0 + 1) / (4 * 0.5 + 1) = 1/3
    assert loss_value("bce_dice", np.zeros_like(half), half) == pytest.approx(math.log(2) + 1 - 1 / 3, rel=1e-5)
    weights = [2.0, 2.0, 1.0, 1.5]
    assert loss_value("bce_weighted", ones, half, pos_weight=weights) == pytest.approx(
        np.mean(weights) * math.log(2), rel=1e-5)
    assert loss_value("focal", ones, half) == pytest.approx(0.25 * math.log(2), rel=1e-5)
    # Tversky per class: TP 2, FN 2, FP 0 -> (2 + 1) / (2 + 0.7 * 2 + 1)
    assert loss_value("focal_tversky", ones, half) == pytest.approx((1 - 3 / 4.4) ** 0.75, rel=1e-5)


def test_unknown_or_incomplete_loss():
    with pytest.raises(ValueError, match="seg.loss"):
        segmentation_loss("lovasz")
    with pytest.raises(ValueError, match="pos_weight"):
        segmentation_loss("bce_weighted", pos_weight=None)  # one weight per class: checked with the data


def test_kaggle_dice_metric_by_hand():
    truth = np.zeros((2, 1, 4, 4), np.uint8)  # 2 images of 1 x 4 pixels, 4 classes
    prediction = np.zeros((2, 1, 4, 4), np.float32)
    truth[0, 0, :2, 0] = 1  # image 0, class 1: true 2 px, predicted 1 of them + 1 more -> 2*1/(2+2) = 0.5
    prediction[0, 0, 1:3, 0] = 0.9
    prediction[0, 0, 0, 1] = 0.7  # image 0, class 2: predicted on an empty truth -> 0
    truth[1, 0, :, 2] = 1  # image 1, class 3: all 4 px true, nothing predicted -> 0
    prediction[1, 0, :, 3] = 0.4  # image 1, class 4: below the threshold on an empty truth -> 1
    metric = KaggleDice()
    metric.update_state(truth, prediction)
    assert float(metric.result()) == pytest.approx((0.5 + 0 + 1 + 1 + 1 + 1 + 0 + 1) / 8)
    positive = KaggleDice(class_index=0, positive_only=True)
    positive.update_state(truth, prediction)
    assert float(positive.result()) == pytest.approx(0.5)
    nothing = KaggleDice(class_index=1, positive_only=True)
    nothing.update_state(truth, prediction)
    assert float(nothing.result()) == 0.0


@pytest.mark.parametrize("step, expected", [(0, 0.5), (1, 1.0), (2, 1.0), (6, 0.505), (10, 0.01), (50, 0.01)])
def test_warmup_cosine(step, expected):
    assert float(WarmupCosine(1.0, 2, 10)(step)) == pytest.approx(expected, rel=1e-5)


def test_warmup_constant():
    schedule = WarmupCosine(0.1, 4, 10, cosine=False)
    assert [float(schedule(s)) for s in (0, 3, 9)] == pytest.approx([0.025, 0.1, 0.1])


def test_mixed_precision_keeps_float32_outputs():
    try:
        strategy, description = configure_hardware(HardwareSection(mixed_precision=True))
        assert "mixed precision" in description
        with strategy.scope():
            model = build_segmenter(SMALL_SEGMENTER)
        assert model.get_layer("network").compute_dtype == "float16"
        assert model.predict_on_batch(np.zeros((1, 32, 64, 3), np.uint8)).dtype == np.float32
    finally:
        configure_hardware(HardwareSection(mixed_precision=False))
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("section, expected", [
    (SegmenterSection(), ("val_dice", "max")), (ClassifierSection(), ("val_loss", "min")),
    (SegmenterSection(monitor="val_loss"), ("val_loss", "min")),
    (SegmenterSection(monitor="val_pos_dice_3"), ("val_pos_dice_3", "max")),
    (ClassifierSection(monitor="val_auc"), ("val_auc", "max")),
])
def test_monitor_of(section, expected):
    assert monitor_of(section) == expected


def test_build_model_without_encoder_weights_never_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was asked for")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    model = build_model("seg", segmenter_section(encoder_weights="imagenet"), encoder_weights=False)
    assert model.output_shape == (None, None, None, 4)
