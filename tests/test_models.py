"""Model builders, losses, the Kaggle Dice metric, the learning-rate schedule and hardware switches."""

import dataclasses
import socket
import urllib.error

import numpy as np
import pytest

from severstal.infra.schema import ClassifierSection, HardwareSection, SegmenterSection
from severstal.nn import models
from severstal.nn.hardware import configure_hardware
from severstal.nn.losses import KaggleDice, segmentation_loss
from severstal.nn.models import (
    KERAS_MODULES,
    build_classifier,
    build_model,
    build_segmenter,
    encoder_weights_file,
    imagenet_weights_file,
    pad_amounts,
)
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


@pytest.mark.parametrize("setting", ["none", "None", None, ""])
def test_encoder_weights_none_needs_no_file(setting):
    assert encoder_weights_file("resnet18", setting, fetcher=None) is None


RESNET18_URL = "https://github.com/qubvel/classification_models/releases/download/0.0.1/resnet18_imagenet_1000_no_top.h5"


@pytest.mark.parametrize("backbone, name, url_start, hash_length", [
    ("resnet18", "resnet18_imagenet_1000_no_top.h5", RESNET18_URL, 32),
    ("resnet34", "resnet34_imagenet_1000_no_top.h5", "https://github.com/qubvel/classification_models/", 32),
    ("efficientnetb0", "efficientnet-b0_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5",
     "https://github.com/Callidior/keras-applications/releases/download/efficientnet/", 64),
])
def test_imagenet_weights_files_come_from_the_libraries_tables(backbone, name, url_start, hash_length):
    file = imagenet_weights_file(backbone)
    assert (file.name, len(file.file_hash)) == (name, hash_length)
    assert file.url.startswith(url_start) and file.url.endswith("/" + name)


def save_backbone(path, backbone="resnet18"):
    """Save a bare backbone with known random weights as a Keras HDF5 weights file; return them by layer name."""
    model = sm.Backbones.get_backbone(backbone, input_shape=(None, None, 3), weights=None, include_top=False,
                                      **KERAS_MODULES)
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(size=weight.shape).astype(weight.dtype) for weight in model.get_weights()])
    model.save_weights(str(path))  # Keras' legacy HDF5 layout: loadable by layer name
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def assert_holds(model, expected):
    """Every layer of ``expected`` has exactly those weights in ``model``."""
    for name, weights in expected.items():
        for loaded, saved in zip(model.get_layer(name).get_weights(), weights, strict=True):
            np.testing.assert_array_equal(loaded, saved, err_msg=name)


def test_encoder_weights_from_a_local_file(tmp_path):
    path = tmp_path / "resnet18_encoder.h5"
    expected = save_backbone(path)
    assert len(expected) == 40
    segmenter = build_segmenter(segmenter_section(encoder_weights=str(path)))
    assert_holds(segmenter.get_layer("network"), expected)  # the backbone's layers are the U-Net's own
    classifier = build_classifier(classifier_section(encoder_weights=str(path)))
    assert_holds(classifier.get_layer("backbone"), expected)


def test_imagenet_weights_go_through_the_fetcher(tmp_path):
    path = tmp_path / "downloaded.h5"
    expected = save_backbone(path)
    calls = []

    def fetcher(*args):
        calls.append(args)
        return str(path)

    segmenter = build_model("seg", segmenter_section(encoder_weights="imagenet", architecture="fpn",
                                                     pyramid_filters=8), fetcher=fetcher)
    assert_holds(segmenter.get_layer("network"), expected)
    classifier = build_model("cls", classifier_section(encoder_weights="imagenet"), fetcher=fetcher)
    assert_holds(classifier.get_layer("backbone"), expected)
    md5 = "318e3ac0cd98d51e917526c9f62f0b50"
    assert calls == [("resnet18_imagenet_1000_no_top.h5", RESNET18_URL, md5)] * 2


def offline(*args):
    raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))


def keras_offline(*args, **kwargs):  # what keras' get_file raises without internet
    raise Exception(f"URL fetch failure on {args[1]}: None -- [Errno -2] Name or service not known")


def test_a_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cache = str(tmp_path / "models")
    with pytest.raises(ValueError) as caught:
        build_model("seg", segmenter_section(encoder_weights="imagenet"), fetcher=offline)
    monkeypatch.setattr(keras.utils, "get_file", keras_offline)  # the default fetcher, offline
    with pytest.raises(ValueError) as caught_by_default:
        build_model("cls", classifier_section(encoder_weights="imagenet"))
    for message in (str(caught.value), str(caught_by_default.value)):
        for part in ("resnet18", "resnet18_imagenet_1000_no_top.h5", RESNET18_URL, cache, "Name or service not known",
                     "from a machine with internet", "encoder_weights to the local file's path", "or to none"):
            assert part in message, (part, message)


def test_the_default_fetcher_uses_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: calls.append((args, kwargs)) or "x.h5")
    assert models.fetch_imagenet_weights("resnet18").name == "x.h5"
    assert calls == [(("resnet18_imagenet_1000_no_top.h5", RESNET18_URL),
                      {"cache_subdir": "models", "file_hash": "318e3ac0cd98d51e917526c9f62f0b50",
                       "cache_dir": str(tmp_path)})]


@pytest.mark.parametrize("other, message", [
    ("efficientnetb0", "no layer of .* matched the encoder by name .*stem_conv"),
    ("resnet34", "match no layer of the encoder by name and shapes .*stage1_unit3"),  # more units: in part
])
def test_a_weights_file_of_another_backbone_fails(tmp_path, other, message):
    path = tmp_path / f"{other}.h5"
    save_backbone(path, other)
    with pytest.raises(ValueError, match=message):
        build_classifier(classifier_section(encoder_weights=str(path)))


def test_a_file_that_is_not_hdf5_fails(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_text("not HDF5")
    with pytest.raises(ValueError, match="not a readable HDF5 weights file"):
        build_classifier(classifier_section(encoder_weights=str(path)))


def test_weights_command(tmp_path, monkeypatch, capsys, repo_root):
    from severstal.stages import weights

    cached = tmp_path / "resnet34_imagenet_1000_no_top.h5"
    cached.write_bytes(b"0" * 1234)
    calls = []
    monkeypatch.setattr(models, "fetch_with_keras", lambda *args: calls.append(args) or str(cached))
    config = ["--config", str(repo_root / "configs" / "default.yaml")]
    assert weights.main(config) == 0
    assert [call[0] for call in calls] == ["resnet34_imagenet_1000_no_top.h5"]  # one file for both models
    assert capsys.readouterr().out.splitlines() == [
        f"cls.encoder_weights, seg.encoder_weights: imagenet (resnet34): {cached}, 1,234 bytes"]
    local = ["--set", "cls.encoder_weights=none", "--set", f"seg.encoder_weights={cached}"]
    assert weights.main(config + local) == 0
    assert capsys.readouterr().out.splitlines() == [
        "cls.encoder_weights: none: nothing is needed (random initial weights)",
        f"seg.encoder_weights: {cached}, 1,234 bytes"]
    assert len(calls) == 1
    monkeypatch.setattr(models, "fetch_with_keras", offline)
    assert weights.main(config + ["--set", "seg.encoder_weights=missing.h5"]) == 1
    error = capsys.readouterr().err
    assert "seg.encoder_weights: missing.h5 is neither" in error
    assert "cls.encoder_weights: could not download the ImageNet weights of resnet34" in error


def test_batchnorm_momentum_is_applied():
    model = build_model("seg", segmenter_section(bn_momentum=0.9))
    momenta = {layer.momentum for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}


def test_unknown_loss():
    with pytest.raises(ValueError, match="seg.loss"):
        segmentation_loss("lovasz")


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
    (SegmenterSection(), ("val_tuned_dice", "max")), (ClassifierSection(), ("val_loss", "min")),
    (SegmenterSection(monitor="val_dice"), ("val_dice", "max")),
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
    monkeypatch.setattr(models, "fetch_with_keras", refuse)
    model = build_model("seg", segmenter_section(encoder_weights="imagenet"), encoder_weights=False)
    assert model.output_shape == (None, None, None, 4)


def test_a_softmax_inceptionv3_classifier_gives_one_class_per_image():
    model = build_model("cls", classifier_section(backbone="inceptionv3", head="softmax", pooling="avg"), 3)
    images = np.random.default_rng(0).integers(0, 256, (2, 80, 96, 3), dtype=np.uint8)
    probabilities = model.predict_on_batch(images)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    weights = imagenet_weights_file("inceptionv3")  # keras_applications' no-top file, md5 as keras checks it
    assert weights.name == "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" and len(weights.file_hash) == 32
