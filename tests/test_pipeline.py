"""The tf.data input pipeline and the augmentations."""

import dataclasses

import albumentations as A
import cv2
import numpy as np
import pytest
from test_crops import runs_of

from severstal.core.crops import image_runs
from severstal.core.labels import rle_lookup
from severstal.core.rle import decode, encode
from severstal.infra.schema import AugmentSection, ClassifierSection, SegmenterSection
from severstal.infra.tables import read_table
from severstal.nn.augment import Augmenter, apply_plan, label_map
from severstal.nn.pipeline import (
    EXACT_IDCT,
    decode_masks,
    image_dataset,
    input_spec,
    make_samples,
    read_image,
    sampling_groups,
    training_dataset,
    validation_dataset,
)
from severstal.nn.tfsetup import tf

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


def reference_masks(rles, original, size):
    """The masks as the first pipeline made them: every class decoded whole, area-resized as 0/255."""
    masks = np.zeros((*size, len(rles)), np.uint8)
    for channel, rle in enumerate(rles):
        if rle:
            mask = decode(rle, original).astype(np.uint8)
            if tuple(original) != tuple(size):
                mask = cv2.resize(mask * np.uint8(255), (size[1], size[0]), interpolation=cv2.INTER_AREA) >= 128
            masks[..., channel] = mask
    return masks


def training_image(path, spec):
    """The whole image training crops are cut from: a JPEG of the data set's size decoded at libjpeg's DCT scale
    (``spec.jpeg_ratio``, exact IDCT), anything else as prediction reads it (decoded whole, area-resized)."""
    contents = tf.io.read_file(str(path))
    if spec.jpeg_ratio > 1 and tf.io.is_jpeg(contents) and \
            tuple(tf.io.extract_jpeg_shape(contents)[:2].numpy()) == spec.original:
        return tf.io.decode_jpeg(contents, channels=3, ratio=spec.jpeg_ratio, dct_method=EXACT_IDCT).numpy()
    return read_image(path, spec)[0].numpy()


def reference_example(image, masks, plan, crop):
    """One example made the way the albumentations pipeline made it: crop, flips, brightness/contrast, blackout."""
    window = np.s_[plan.top:plan.top + crop[0], plan.left:plan.left + crop[1]]
    image, masks = image[window].copy(), masks[window].copy()
    if plan.hflip:
        image, masks = image[:, ::-1], masks[:, ::-1]
    if plan.vflip:
        image, masks = image[::-1], masks[::-1]
    if plan.adjust:
        image = A.RandomBrightnessContrast(p=1.0).apply(np.ascontiguousarray(image), alpha=plan.alpha, beta=plan.beta)
    if plan.dropped is not None:
        dropped = plan.dropped[:, ::-1] if plan.hflip else plan.dropped
        dropped = dropped[::-1] if plan.vflip else dropped
        image, masks = image.copy(), masks.copy()
        image[dropped] = 0
        masks[dropped] = 0
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


def test_plan_draws_like_albumentations():
    """Flip and brightness/contrast draws: albumentations' probabilities and ranges."""
    runs = image_runs(["", "", "", ""], (64, 400), (64, 400))
    augment = AugmentSection(hflip=0.5, vflip=0.25, brightness_contrast=0.5, mask_dropout=0.0)
    augmenter = Augmenter(augment, (64, 128), seed=0)
    plans = [augmenter.plan(runs) for _ in range(4000)]
    assert abs(np.mean([p.hflip for p in plans]) - 0.5) < 0.04 and abs(np.mean([p.vflip for p in plans]) - 0.25) < 0.04
    adjusted = [p for p in plans if p.adjust]
    assert abs(len(adjusted) / len(plans) - 0.5) < 0.04
    alphas, betas = np.array([p.alpha for p in adjusted]), np.array([p.beta for p in adjusted])
    assert 0.8 <= alphas.min() < 0.82 and 1.18 < alphas.max() <= 1.2
    assert -51 <= betas.min() < -49 and 49 < betas.max() <= 51  # 0.2 x 255
    assert all(p.alpha == 1.0 and p.beta == 0.0 for p in plans if not p.adjust)


def test_mask_dropout_blacks_out_one_defect_and_clears_it():
    masks = np.zeros((32, 64, 4), np.uint8)
    masks[2:6, 2:6, 0] = 1
    masks[20:30, 40:60, 2] = 1
    runs = runs_of(masks)
    augmenter = Augmenter(dataclasses.replace(NO_AUGMENT, mask_dropout=1.0), None, seed=3)
    for _ in range(10):
        plan = augmenter.plan(runs)
        removed = masks.sum(axis=(0, 1)) - plan.masks.sum(axis=(0, 1))
        assert (removed > 0).sum() == 1 and removed.max() in (16, 200)  # one whole defect removed
        channel = int(np.argmax(removed))
        np.testing.assert_array_equal(plan.dropped, masks[..., channel] > 0)  # painted black
        np.testing.assert_array_equal(plan.presence, plan.masks.max(axis=(0, 1)))


def test_label_map():
    masks = np.zeros((1, 3, 4), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 3] = masks[0, 1, 2] = 1
    assert label_map(masks).tolist() == [[1, 4, 0]]
    assert label_map(masks, [0, 2]).tolist() == [[1, 3, 0]]


def test_apply_plan_is_albumentations_bit_for_bit():
    """Flips, brightness/contrast (albumentations' uint8 lookup table) and blackout as TF ops give the same pixels."""
    rng = np.random.default_rng(0)
    masks = np.zeros((48, 80, 4), np.uint8)
    masks[5:20, 10:30, 1] = 1
    masks[30:40, 50:75, 3] = 1
    runs = runs_of(masks)
    augment = AugmentSection(hflip=0.5, vflip=0.5, brightness_contrast=0.7, mask_dropout=0.5)
    augmenter = Augmenter(augment, (32, 64), crop_non_empty=0.8, seed=1)
    for _ in range(40):
        image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
        plan = augmenter.plan(runs)
        np.testing.assert_array_equal(
            np.where(plan.dropped[..., None], 0, masks[plan.top:plan.top + 32, plan.left:plan.left + 64])
            if plan.dropped is not None else masks[plan.top:plan.top + 32, plan.left:plan.left + 64], plan.masks)
        crop = tf.constant(image[plan.top:plan.top + 32, plan.left:plan.left + 64])
        dropped = np.zeros((0, 0), bool) if plan.dropped is None else plan.dropped
        got_image, got_masks = apply_plan(crop, tf.constant(plan.masks), plan.hflip, plan.vflip, plan.adjust,
                                          np.float32(plan.alpha), np.float32(plan.beta), tf.constant(dropped))
        want_image, want_masks = reference_example(image, masks, plan, (32, 64))
        np.testing.assert_array_equal(got_image.numpy(), want_image)
        np.testing.assert_array_equal(got_masks.numpy(), want_masks)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Six 64 x 256 grey ramps; images 0-2 have a class-3 rectangle, 3-5 are clean."""
    directory = tmp_path_factory.mktemp("pipeline")
    lookup = {}
    for index in range(6):
        rows, columns = np.mgrid[:64, :256]
        image = (60 + columns // 4 + rows // 4).astype(np.uint8)  # every window differs
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
    section = ClassifierSection(crop=None, head="binary", balanced_sampling="defect", augment=NO_AUGMENT)
    dataset, _ = training_dataset(small_data, "cls", section, spec, 0, 3)
    presence = np.concatenate([labels.numpy() for _, labels in dataset.take(20)])  # (60, 1)
    assert presence.shape == (60, 1) and 0.3 < presence.mean() < 0.7


class RecordingAugmenter(Augmenter):
    """An :class:`Augmenter` that keeps every plan it draws (worker threads share the list)."""

    plans = []

    def plan(self, runs):
        chosen = super().plan(runs)
        self.plans.append(chosen)
        return chosen


@pytest.mark.parametrize("kind, scale, crop", [("seg", 1.0, (32, 64)), ("seg", 0.5, (32, 64)), ("cls", 1.0, (48, 240)),
                                               ("cls", 0.5, None), ("cls", 0.75, None)])  # 0.75: no libjpeg scale
def test_training_examples_are_the_reference_examples(small_data, monkeypatch, kind, scale, crop):
    """Every example the pipeline makes is, pixel for pixel, the crop, flips, brightness/contrast and blackout of
    one drawn plan applied the albumentations way to the fully decoded image and its fully decoded masks."""
    import severstal.nn.pipeline as pipeline

    monkeypatch.setattr(pipeline, "Augmenter", RecordingAugmenter)
    RecordingAugmenter.plans = []
    spec = input_spec(64, 256, scale)
    augment = AugmentSection(hflip=0.5, vflip=0.5, brightness_contrast=0.5, mask_dropout=0.5 if kind == "cls" else 0)
    section_type = SegmenterSection if kind == "seg" else ClassifierSection
    section = section_type(crop=crop, crop_non_empty=0.8, augment=augment)
    dataset, _ = training_dataset(small_data, kind, section, spec, seed=0, batch_size=4)
    examples = [example for images, targets in dataset.take(6)
                for example in zip(images.numpy(), targets.numpy(), strict=True)]
    images = {i: training_image(path, spec) for i, path in enumerate(small_data.paths)}
    masks = {i: reference_masks(rles, (64, 256), spec.size) for i, rles in enumerate(small_data.rles)}
    size = crop or spec.size
    matched = 0
    for image, target in examples:
        for plan in RecordingAugmenter.plans:
            for index in images:
                want_image, want_masks = reference_example(images[index], masks[index], plan, size)
                if np.array_equal(want_image, image):
                    want = want_masks if kind == "seg" else want_masks.max(axis=(0, 1)).astype(np.float32)
                    np.testing.assert_array_equal(target, want)
                    matched += 1
                    break
            else:
                continue
            break
    assert matched == len(examples) == 24


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
    half, whole = input_spec(64, 256, 0.5), input_spec(64, 256, 1.0)
    batches = list(image_dataset(small_data.paths, [half, whole], 4))
    assert [len(images) for (images, _), _ in batches] == [4, 2]
    assert batches[0][1].numpy().tolist() == [[64, 256]] * 4
    bright = [float(images.numpy()[:, 5:15, 50:70].mean(axis=(1, 2, 3)).max()) for (images, _), _ in batches]
    assert bright[0] > 150 and bright[1] < 100  # images 0-2 (with the rectangle) come first
    for (scaled, full), _ in batches:  # every file decoded at each size, as read_image decodes it
        assert scaled.shape[1:] == (32, 128, 3) and full.shape[1:] == (64, 256, 3)
    np.testing.assert_array_equal(batches[1][0][1].numpy()[0], read_image(small_data.paths[4], whole)[0].numpy())


def test_every_stream_runs_without_autotuning(small_data):
    # tf.data's autotuning thread sleeps up to a minute between rounds and a long stream's iterator
    # waits for it when destroyed: model.fit returned up to 58 s after its last epoch
    spec = input_spec(64, 256, 0.5)
    streams = [training_dataset(small_data, "seg", SegmenterSection(crop=None), spec, 0, 4)[0],
               validation_dataset(small_data, "seg", SegmenterSection(), spec, 4),
               image_dataset(small_data.paths, [spec], 4)]
    assert [stream.options().autotune.enabled for stream in streams] == [False, False, False]
    assert streams[0].options().threading.max_intra_op_parallelism == 1


def test_real_sample_masks(sample_dir):
    labels = read_table(sample_dir / "train.csv")
    ids = sorted(labels["ImageId"].unique())[:4]
    samples = make_samples(ids, sample_dir / "train_images", rle_lookup(labels))
    images, masks = next(iter(validation_dataset(samples, "seg", SegmenterSection(), input_spec(256, 1600, 0.25), 4)))
    assert images.shape == (4, 64, 400, 3)
    np.testing.assert_array_equal(masks.numpy().max(axis=(1, 2)), samples.presence())
