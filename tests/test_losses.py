"""The segmenter's losses from logits, the tuned-Dice monitor, and which keys a config leaves without effect."""

import dataclasses
import math

import numpy as np
import pytest

from severstal.core.oofstats import OOFStatistics, segmentation_statistics
from severstal.core.thresholds import SearchGrid, search_thresholds
from severstal.infra.config import load_config
from severstal.infra.schema import ineffective_keys
from severstal.nn.losses import TunedDice, segmentation_loss
from severstal.nn.tfsetup import keras, tf

pytestmark = pytest.mark.slow
WEIGHTS = (2.0, 2.0, 1.0, 1.5)


def loss_value(name, truth, probability, **kwargs):
    loss = segmentation_loss(name, **kwargs)
    return float(np.mean(loss(np.asarray(truth, np.float32), np.asarray(probability, np.float32))))


def sigmoid_model():
    """logits (batch, 1, 1, 4) -> probabilities through a float32 sigmoid, as the models end."""
    logits = keras.Input((1, 1, 4))
    return keras.Model(logits, keras.layers.Activation("sigmoid", dtype="float32")(logits))


def test_losses_by_hand():
    ones = np.ones((1, 2, 2, 4))
    half = np.full((1, 2, 2, 4), 0.5)
    perfect = np.zeros((1, 2, 2, 4))
    perfect[0, 0, 0, 2] = 1
    assert loss_value("bce_dice", perfect, perfect) == pytest.approx(0.0, abs=1e-5)
    # empty truth, p = 0.5 everywhere: BCE ln 2; Dice per class (0 + 1) / (4 * 0.5 + 1) = 1/3
    assert loss_value("bce_dice", np.zeros_like(half), half, bce_weight=0.75, dice_weight=0.25) == pytest.approx(
        0.75 * math.log(2) + 0.25 * (1 - 1 / 3), rel=1e-5)
    assert loss_value("bce_dice", np.zeros_like(half), half, pos_weight=WEIGHTS) == pytest.approx(
        math.log(2) + 1 - 1 / 3, rel=1e-5)  # no positive pixel: the weights change nothing
    assert loss_value("bce", ones, half, pos_weight=WEIGHTS) == pytest.approx(np.mean(WEIGHTS) * math.log(2), rel=1e-5)
    assert loss_value("bce", ones, half) == pytest.approx(math.log(2), rel=1e-5)
    assert loss_value("focal", ones, half) == pytest.approx(0.25 * math.log(2), rel=1e-5)
    assert loss_value("focal", ones, half, pos_weight=WEIGHTS) == pytest.approx(
        0.25 * np.mean(WEIGHTS) * math.log(2), rel=1e-5)
    # Tversky per class: TP 2, FN 2, FP 0 -> (2 + 1) / (2 + 0.7 * 2 + 1)
    assert loss_value("focal_tversky", ones, half) == pytest.approx((1 - 3 / 4.4) ** 0.75, rel=1e-5)


@pytest.mark.parametrize("name, expected", [
    # one pixel per class; class 1 (weight 2) true with logit -30, class 2 (weight 2) empty with logit +30:
    # cross-entropy 2 * 30 and 30 (softplus(30) = 30 + 1e-13), classes 3 and 4 near 0
    ("bce", (2 * 30 + 30) / 4),
    ("bce_dice", 0.75 * (2 * 30 + 30) / 4 + 0.25 * (1 - (1 / 2 + 1 / 2 + 1 + 1) / 4)),
])
def test_confidently_wrong_pixels_keep_their_loss_and_gradient(name, expected):
    logits = tf.constant([[[[-30.0, 30.0, -30.0, 30.0]]]])
    truth = np.array([[[[1, 0, 0, 1]]]], np.float32)
    loss = segmentation_loss(name, pos_weight=WEIGHTS, bce_weight=0.75, dice_weight=0.25)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = tf.reduce_mean(loss(truth, sigmoid_model()(logits)))
    gradient = tape.gradient(value, logits).numpy().ravel()
    assert float(value) == pytest.approx(expected, rel=1e-4)
    # d/dz of the cross-entropy: -weight * (1 - sigmoid(z)) for a positive pixel, sigmoid(z) for a negative one
    scale = (0.75 if name == "bce_dice" else 1.0) / 4
    assert gradient[0] == pytest.approx(-2.0 * scale, rel=1e-3) and gradient[1] == pytest.approx(scale, rel=1e-3)
    # the clipped probability of the old loss capped the cross-entropy at -log(1e-7) and had no gradient there
    assert float(value) > 16.2


def test_fit_uses_the_logits():
    model = sigmoid_model()
    model.compile(loss=segmentation_loss("bce"), optimizer=keras.optimizers.SGD(0.0))
    loss = model.evaluate(np.full((1, 1, 1, 4), 40.0, np.float32), np.zeros((1, 1, 1, 4), np.float32), verbose=0)
    assert loss == pytest.approx(40.0, rel=1e-5)


def tuned_dice(truth, probabilities, thresholds, min_areas, area_scale=1.0, batch=None):
    metric = TunedDice(thresholds, min_areas, area_scale, num_classes=truth.shape[-1])
    batch = batch or len(truth)
    for start in range(0, len(truth), batch):
        metric.update_state(truth[start:start + batch], probabilities[start:start + batch])
    return float(metric.result())


@pytest.mark.parametrize("area_scale, expected", [(1.0, 1.8 / 2), (2.0, (2 / 3 + 1) / 2)])
def test_tuned_dice_by_hand(area_scale, expected):
    # 2 images of 1 x 4 pixels, 1 class. Image 0: true [1 1 0 0]; image 1: empty truth.
    truth = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.uint8).reshape(2, 1, 4, 1)
    probabilities = np.array([[0.9, 0.6, 0.6, 0.0], [0.6, 0.0, 0.0, 0.0]], np.float32).reshape(2, 1, 4, 1)
    # threshold 0.5: image 0 area 3, Dice 0.8; image 1 area 1, Dice 0 (1 when emptied).
    # threshold 0.8: image 0 area 1, Dice 2/3; image 1 area 0, Dice 1.
    # scale 1, min area 2: image 0 kept (0.8), image 1 emptied (1) -> 1.8, the best of the four settings.
    # scale 2 (areas doubled): image 1 reaches 2 at 0.5, so the best is threshold 0.8: 2/3 + 1.
    assert tuned_dice(truth, probabilities, (0.5, 0.8), (0, 2), area_scale) == pytest.approx(expected, rel=1e-6)


def test_tuned_dice_equals_the_threshold_search():
    """Brute force: the tuner's exact search (no component filter, no gate) on the same probabilities."""
    rng = np.random.default_rng(3)
    truth = np.zeros((12, 16, 24, 4), np.uint8)
    for image in range(12):
        for channel in rng.choice(4, size=rng.integers(0, 3), replace=False):
            top, left = rng.integers(0, 10), rng.integers(0, 16)
            truth[image, top:top + rng.integers(2, 6), left:left + rng.integers(2, 8), channel] = 1
    noise = rng.random(truth.shape).astype(np.float32)
    probabilities = np.clip(0.6 * truth + 0.5 * noise, 0, 1).astype(np.float32)
    thresholds, min_areas = (0.3, 0.5, 0.7, 0.9), (0, 5, 10, 20, 40)
    stats = segmentation_statistics(probabilities, truth, thresholds, (0,))
    oof = OOFStatistics(image_ids=np.array([f"{i}.jpg" for i in range(12)]), folds=np.zeros(12, np.int64),
                        pixel_thresholds=np.array(thresholds), min_component_sizes=np.array([0]), **stats)
    expected = search_thresholds(oof, SearchGrid(thresholds, (0,), min_areas, (0.0,))).tuned_mean
    assert tuned_dice(truth, probabilities, thresholds, min_areas, batch=5) == pytest.approx(expected, abs=1e-9)


def test_tuned_dice_is_the_default_segmenter_monitor():
    assert load_config("configs/default.yaml").seg.monitor == "val_tuned_dice"


@pytest.mark.parametrize("overrides, kind, expected", [
    ([], "seg", []),
    (["seg.loss=focal_tversky"], "seg", ["seg.pos_weight has no effect", "seg.bce_weight and seg.dice_weight"]),
    (["seg.loss=focal_tversky", "seg.pos_weight=null"], "seg", ["seg.bce_weight and seg.dice_weight"]),
    (["seg.loss=focal", "seg.focal_gamma=3"], "seg", ["seg.bce_weight and seg.dice_weight"]),
    (["seg.loss=bce", "seg.focal_gamma=3"], "seg", ["seg.bce_weight and seg.dice_weight", "seg.focal_gamma"]),
    (["seg.early_stopping_patience=5"], "seg", ["seg.early_stopping_patience has no effect"]),
    (["seg.early_stopping_patience=5", "seg.schedule=constant"], "seg", []),
    (["cls.crop=null", "cls.crop_non_empty=0.5"], "cls", ["cls.crop_non_empty has no effect"]),
])
def test_ineffective_keys(overrides, kind, expected):
    notes = ineffective_keys(load_config("configs/default.yaml", overrides), kind)
    assert len(notes) == len(expected)
    for note, start in zip(notes, expected, strict=True):
        assert note.startswith(start)


def test_default_recipe_sets_nothing_without_effect():
    config = load_config("configs/default.yaml")
    assert ineffective_keys(config, "seg") == [] and ineffective_keys(config, "cls") == []
    assert dataclasses.asdict(config.seg)["pos_weight"] == WEIGHTS
