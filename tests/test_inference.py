"""Whole-image prediction: padding to multiples of 32, flip TTA, resizing, and the OOF statistics."""

import cv2
import numpy as np
import pandas as pd
import pytest
from training_fixtures import tiny_run  # noqa: F401

from severstal.core import oofstats
from severstal.core.labels import masks_for, read_table, rle_lookup
from severstal.infra.config import load_config
from severstal.nn.inference import (
    check_tta,
    class_probabilities,
    flip,
    load_fold_model,
    predict_images,
    predict_tta,
    resize_probabilities,
)
from severstal.nn.models import build_classifier, build_segmenter
from severstal.nn.pipeline import read_image
from severstal.stages.oof import classification_summary, raw_dice, segmentation_summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def segmenter():
    return build_segmenter({"encoder": "resnet18", "encoder_weights": "none", "decoder_filters": [8, 8, 8, 8, 8]})


@pytest.mark.parametrize("height, width", [(64, 400), (50, 70), (33, 31), (32, 64), (7, 9)])
def test_any_size_is_padded_and_cropped_back(segmenter, height, width):
    images = np.random.default_rng(height).integers(0, 256, (2, height, width, 3)).astype(np.uint8)
    output = segmenter.predict_on_batch(images)
    assert output.shape == (2, height, width, 4)
    pad_h, pad_w = -height % 32, -width % 32
    padding = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    mode = "constant" if min(height, width) < 17 else "symmetric"
    padded_output = segmenter.predict_on_batch(np.pad(images, padding, mode=mode))  # already a multiple of 32
    cropped = padded_output[:, pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width]
    np.testing.assert_allclose(output, cropped, atol=1e-6)


def test_flip_tta_is_the_mean_of_unflipped_predictions(segmenter):
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 96, 3)).astype(np.uint8)
    flips = ("none", "hflip", "vflip", "both")
    expected = np.mean([flip(segmenter.predict_on_batch(np.ascontiguousarray(flip(images, f))), f) for f in flips],
                       axis=0)
    np.testing.assert_allclose(predict_tta(segmenter, images, flips, "seg"), expected, atol=1e-6)
    classifier = build_classifier({"backbone": "resnet18", "encoder_weights": "none", "dense_units": 4})
    expected = np.mean([classifier.predict_on_batch(np.ascontiguousarray(images[:, :, ::-1])),
                        classifier.predict_on_batch(images)], axis=0)
    np.testing.assert_allclose(predict_tta(classifier, images, ["hflip", "none"], "cls"), expected, atol=1e-6)


def test_flip_is_its_own_inverse():
    array = np.arange(24).reshape(1, 2, 3, 4)
    assert flip(array, "hflip")[0, 0, 0, 0] == array[0, 0, 2, 0]
    assert flip(array, "vflip")[0, 0, 0, 0] == array[0, 1, 0, 0]
    for name in ("none", "hflip", "vflip", "both"):
        np.testing.assert_array_equal(flip(flip(array, name), name), array)


@pytest.mark.parametrize("tta", [[], ["none", "none"], ["rotate"], None])
def test_check_tta_rejects(tta):
    with pytest.raises(ValueError, match="inference.tta"):
        check_tta(tta)


def test_check_tta_accepts_a_single_name():
    assert check_tta("hflip") == ("hflip",)


def test_resize_probabilities_and_binary_head():
    probabilities = np.full((64, 400, 4), 0.25, np.float32)
    probabilities[:, :200, 0] = 0.75
    resized = resize_probabilities(probabilities, (256, 1600))
    assert resized.shape == (256, 1600, 4)
    assert resized[:, :790, 0].min() == pytest.approx(0.75) and resized[:, 810:, 0].max() == pytest.approx(0.25)
    one = np.full((1, 64, 400, 1), 0.5, np.float32)[0]
    assert resize_probabilities(one, (128, 800)).shape == (128, 800, 1)
    np.testing.assert_array_equal(class_probabilities(np.array([[0.2], [0.9]]), "binary"),
                                  [[0.2] * 4, [0.9] * 4])


def test_raw_dice_and_summaries_by_hand():
    truth = np.zeros((2, 1, 4, 4), np.uint8)
    probabilities = np.zeros((2, 1, 4, 4), np.float32)
    truth[0, 0, :2, 2] = 1
    probabilities[0, 0, 1:3, 2] = 0.8  # Dice 2 * 1 / 4
    truth[1, 0, :, 3] = 1  # missed: 0
    dice = raw_dice(probabilities, truth)
    np.testing.assert_allclose(dice, [[1, 1, 0.5, 1], [1, 1, 1, 0]])
    summary = segmentation_summary(dice, truth.sum(axis=(1, 2)))
    assert summary["dice_at_0.5"] == pytest.approx(6.5 / 8)
    assert summary["dice_on_images_with_class"] == {"1": None, "2": None, "3": 0.5, "4": 0.0}
    assert summary["images_with_class"] == {"1": 0, "2": 0, "3": 1, "4": 1}
    classes = classification_summary(np.array([[0.9, 0.1, 0.6, 0.2], [0.2, 0.1, 0.1, 0.7], [0.1, 0.1, 0.1, 0.1]]),
                                     np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]))
    assert classes["class 1"]["f1"] == 1.0 and classes["class 3"]["true_positive"] == 0
    assert (classes["class 3"]["false_positive"], classes["class 3"]["false_negative"]) == (1, 1)
    assert classes["any defect"]["recall"] == pytest.approx(2 / 3) and classes["any defect"]["precision"] == 1.0
    assert np.isnan(classes["class 2"]["precision"])


def brute_force_statistics(probability, truth, thresholds, sizes):
    """``(P, C)`` predicted area and intersection after dropping 8-connected components under each size."""
    area = np.zeros((len(thresholds), len(sizes)), np.int64)
    overlap = np.zeros_like(area)
    for i, threshold in enumerate(thresholds):
        count, labels, stats, _ = cv2.connectedComponentsWithStats((probability > threshold).astype(np.uint8),
                                                                   connectivity=8)
        for j, size in enumerate(sizes):
            kept = np.isin(labels, [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= size])
            area[i, j], overlap[i, j] = kept.sum(), (kept & (truth > 0)).sum()
    return area, overlap


def test_oof_statistics_match_a_brute_force_computation(tiny_run):  # noqa: F811
    arguments = tiny_run.arguments()
    config = load_config(arguments[1], arguments[3::2])
    stats = oofstats.load_segmentation_oof(tiny_run.fold_dir("seg") / "oof.npz")
    fold_model = load_fold_model(config, "seg", 0)
    lookup = rle_lookup(read_table(tiny_run.data_dir / "train.csv"))
    folds = pd.read_csv(tiny_run.folds_file)
    ids = folds.loc[folds["fold"] == 0, "ImageId"].tolist()[:3]
    paths = [str(tiny_run.data_dir / "train_images" / i) for i in ids]
    streamed = np.concatenate([p for _, p in predict_images(fold_model, paths, ["none", "hflip"], 2)])
    for row, (image_id, path) in enumerate(zip(ids, paths, strict=True)):
        image = read_image(path, fold_model.spec)[0].numpy()[None]  # (1, 64, 400, 3)
        direct = (fold_model.model.predict_on_batch(image)
                  + fold_model.model.predict_on_batch(np.ascontiguousarray(image[:, :, ::-1]))[:, :, ::-1]) / 2
        np.testing.assert_allclose(streamed[row], direct[0], atol=1e-5)
        truth = masks_for(lookup.get(image_id, {}), (64, 400))
        for channel in range(4):
            area, overlap = brute_force_statistics(direct[0, ..., channel], truth[..., channel],
                                                   stats["pixel_thresholds"], stats["min_component_sizes"])
            np.testing.assert_array_equal(stats["predicted_area"][row, channel], area)
            np.testing.assert_array_equal(stats["intersection"][row, channel], overlap)
            assert stats["true_area"][row, channel] == truth[..., channel].sum()
