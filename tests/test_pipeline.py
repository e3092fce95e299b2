"""The tf.data input pipeline and the augmentations."""

import dataclasses

import cv2
import numpy as np
import pytest

from severstal.core.labels import rle_lookup
from severstal.core.rle import encode
from severstal.infra.schema import AugmentSection, ClassifierSection, SegmenterSection
from severstal.infra.tables import read_table
from severstal.nn.augment import Augmenter, crop_window, label_map
from severstal.nn.pipeline import (
    decode_masks,
    image_dataset,
    input_spec,
    make_samples,
    read_image,
    sampling_groups,
    training_dataset,
    validation_dataset,
)

pytestmark = pytest.mark.slow
NO_AUGMENT = AugmentSection(hflip=0.0, vflip=0.0, brightness_contrast=0.0, mask_dropout=0.0)


@pytest.mark.parametrize("height, width, scale, size, ratio", [
    (256, 1600, 0.25, (64, 400), 4), (256, 1600, 0.5, (128, 800), 2), (256, 1600, 1.0, (256, 1600), 1),
    (256, 1600, 0.3, (77, 480), 1), (250, 1600, 0.25, (62, 400), 1),
])
def test_input_spec(height, width, scale, size, ratio):
    spec = input_spec(height, width, scale)
    assert spec.size == size and spec.jpeg_ratio == ratio


def test_input_spec_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        input_spec(256, 1600, 1.5)


def write_image(path, image):
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 98])
    return str(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_read_image_scales_like_an_area_resize(tmp_path, suffix):
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (256, 1600)).astype(np.uint8), (9, 9), 3)  # (256, 1600)
    path = write_image(tmp_path / f"image{suffix}", image)
    decoded, original = read_image(path, input_spec(256, 1600, 0.25))
    assert decoded.shape == (64, 400, 3) and decoded.dtype.name == "uint8"
    assert original.numpy().tolist() == [256, 1600]
    expected = cv2.resize(cv2.imread(path, cv2.IMREAD_GRAYSCALE), (400, 64), interpolation=cv2.INTER_AREA)
    difference = np.abs(decoded.numpy()[..., 0].astype(int) - expected.astype(int))
    assert difference.mean() < 1.5 and difference.max() < 16
    np.testing.assert_array_equal(decoded.numpy()[..., 0], decoded.numpy()[..., 2])  # grey -> 3 equal channels


def test_decode_masks_at_quarter_resolution():
    full = np.zeros((256, 1600), np.uint8)
    full[8:16, 40:48] = 1  # an 8 x 8 block -> 2 x 2 at quarter resolution
    full[100:102, 200:202] = 1  # a 2 x 2 speck: a quarter of one quarter-resolution pixel -> dropped (< 1/2)
    masks = decode_masks([b"", b"", encode(full).encode(), b""], (256, 1600), (64, 400))
    assert masks.shape == (64, 400, 4) and masks.dtype == np.uint8
    expected = np.zeros((64, 400), np.uint8)
    expected[2:4, 10:12] = 1
    np.testing.assert_array_equal(masks[..., 2], expected)
    assert masks[..., [0, 1, 3]].sum() == 0
    assert decode_masks([b""] * 4, (256, 1600), (64, 400)).sum() == 0


def test_crop_non_empty_always_holds_the_defect():
    masks = np.zeros((64, 400, 4), np.uint8)
    masks[20:30, 350:360, 3] = 1
    augmenter = Augmenter(NO_AUGMENT, (64, 64), crop_non_empty=1.0, seed=0)
    image = np.zeros((64, 400, 3), np.uint8)
    for _ in range(20):
        cropped_image, cropped = augmenter(image, masks)
        assert cropped_image.shape == (64, 64, 3) and cropped.shape == (64, 64, 4)
        assert cropped[..., 3].sum() > 0


def test_crop_window_rule():
    rng = np.random.default_rng(0)
    masks = np.zeros((64, 400, 4), np.uint8)
    masks[10, 350, 1] = 1  # one defect pixel near the right edge
    lefts = set()
    for _ in range(200):
        top, left = crop_window(masks, (32, 64), True, rng)
        assert top <= 10 < top + 32 and left <= 350 < left + 64 and left + 64 <= 400
        lefts.add(left)
    assert len(lefts) > 20  # the defect lands anywhere in the crop, not always at the same place
    for on_defect, source in ((False, masks), (True, np.zeros_like(masks))):  # uniform windows
        windows = {crop_window(source, (64, 100), on_defect, rng) for _ in range(300)}
        assert {top for top, _ in windows} == {0} and max(left for _, left in windows) <= 300
        assert min(left for _, left in windows) < 30 and max(left for _, left in windows) > 270


def test_defect_crops_pick_a_class_first():
    """A one-pixel class-1 spot beside a large class-3 region is sought half the time, not once in 20,000."""
    rng = np.random.default_rng(0)
    masks = np.zeros((64, 400, 4), np.uint8)
    masks[:, 100:, 2] = 1  # class 3: 19,200 pixels
    masks[10, 5, 0] = 1  # class 1: one pixel, far left
    windows = [crop_window(masks, (32, 64), True, rng) for _ in range(400)]
    holding = [top <= 10 < top + 32 and left <= 5 < left + 64 for top, left in windows]
    assert 0.4 < np.mean(holding) < 0.6  # every class-1 draw holds it; class-3 draws never reach column 5
    assert all(left + 64 > 100 for (top, left), held in zip(windows, holding, strict=True) if not held)


def test_mask_dropout_blacks_out_one_defect_and_clears_it():
    image = np.full((32, 64, 3), 100, np.uint8)
    masks = np.zeros((32, 64, 4), np.uint8)
    masks[2:6, 2:6, 0] = 1
    masks[20:30, 40:60, 2] = 1
    augmenter = Augmenter(dataclasses.replace(NO_AUGMENT, mask_dropout=1.0), None, seed=3)
    out_image, out_masks = augmenter(image, masks)
    removed = masks.sum(axis=(0, 1)) - out_masks.sum(axis=(0, 1))
    assert (removed > 0).sum() == 1 and removed.max() in (16, 200)  # one whole defect removed
    channel = int(np.argmax(removed))
    assert (out_image[masks[..., channel] > 0] == 0).all()  # painted black
    assert (out_image[masks[..., 2 - channel] > 0] == 100).all()  # the other one untouched


def test_label_map():
    masks = np.zeros((1, 3, 4), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 3] = masks[0, 1, 2] = 1
    assert label_map(masks).tolist() == [[1, 4, 0]]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Six 64 x 256 images; images 0-2 have a class-3 rectangle, 3-5 are clean."""
    directory = tmp_path_factory.mktemp("pipeline")
    lookup = {}
    for index in range(6):
        image = np.full((64, 256), 90, np.uint8)
        if index < 3:
            mask = np.zeros((64, 256), np.uint8)
            mask[10:30, 100:140] = 1
            image[mask > 0] = 200
            lookup[f"i{index}.jpg"] = {3: encode(mask)}
        write_image(directory / f"i{index}.jpg", image)
    return make_samples([f"i{i}.jpg" for i in range(6)], directory, lookup)


def test_training_batches_for_both_models(small_data):
    spec = input_spec(64, 256, 1.0)
    section = SegmenterSection(crop=(32, 64), crop_non_empty=1.0, augment=dataclasses.replace(NO_AUGMENT, hflip=0.5))
    dataset, steps = training_dataset(small_data, "seg", section, spec, seed=0, batch_size=4)
    assert steps == 1
    images, masks = next(iter(dataset))
    assert images.shape == (4, 32, 64, 3) and images.dtype.name == "uint8"
    assert masks.shape == (4, 32, 64, 4) and masks.dtype.name == "uint8"
    section = ClassifierSection(crop=None, head="binary", balanced_sampling="defect")
    dataset, _ = training_dataset(small_data, "cls", section, spec, 0, 3)
    presence = np.concatenate([labels.numpy() for _, labels in dataset.take(20)])  # (60, 1)
    assert presence.shape == (60, 1) and 0.3 < presence.mean() < 0.7


def test_sampling_groups():
    samples = make_samples(["a", "b", "c", "d"], ".", {"a": {1: "1 1"}, "b": {1: "1 1", 3: "5 1"}, "c": {4: "1 1"}})
    assert [g.image_ids for g in sampling_groups(samples, False)] == [("a", "b", "c", "d")]
    assert [g.image_ids for g in sampling_groups(samples, "defect")] == [("a", "b", "c"), ("d",)]
    assert [g.image_ids for g in sampling_groups(samples, True)] == [("a", "b", "c"), ("d",)]
    assert [g.image_ids for g in sampling_groups(samples, "classes")] == [("a", "b"), ("b",), ("c",), ("d",)]
    with pytest.raises(ValueError, match="balanced_sampling"):
        sampling_groups(samples, "rare")


def test_training_needs_a_full_batch(small_data):
    with pytest.raises(ValueError, match="fewer than the batch size"):
        training_dataset(small_data, "seg", SegmenterSection(crop=None), input_spec(64, 256, 1.0), 0, 8)


def test_validation_targets(small_data):
    spec = input_spec(64, 256, 0.5)
    images, masks = next(iter(validation_dataset(small_data, "seg", SegmenterSection(), spec, 6)))
    assert images.shape == (6, 32, 128, 3) and masks.shape == (6, 32, 128, 4)
    assert masks.numpy()[:3, 5:15, 50:70, 2].all() and masks.numpy()[3:].sum() == 0
    _, presence = next(iter(validation_dataset(small_data, "cls", ClassifierSection(head="multilabel"), spec, 6)))
    np.testing.assert_array_equal(presence.numpy(), small_data.presence())
    np.testing.assert_array_equal(small_data.presence()[:, 2], [1, 1, 1, 0, 0, 0])


def test_image_dataset_keeps_order_and_sizes(small_data):
    batches = list(image_dataset(small_data.paths, input_spec(64, 256, 0.5), 4))
    assert [len(images) for images, _ in batches] == [4, 2]
    assert batches[0][1].numpy().tolist() == [[64, 256]] * 4
    bright = [float(images.numpy()[:, 5:15, 50:70].mean(axis=(1, 2, 3)).max()) for images, _ in batches]
    assert bright[0] > 150 and bright[1] < 100  # images 0-2 (with the rectangle) come first


def test_real_sample_masks(sample_dir):
    labels = read_table(sample_dir / "train.csv")
    ids = sorted(labels["ImageId"].unique())[:4]
    samples = make_samples(ids, sample_dir / "train_images", rle_lookup(labels))
    images, masks = next(iter(validation_dataset(samples, "seg", SegmenterSection(), input_spec(256, 1600, 0.25), 4)))
    assert images.shape == (4, 64, 400, 3)
    np.testing.assert_array_equal(masks.numpy().max(axis=(1, 2)), samples.presence())
