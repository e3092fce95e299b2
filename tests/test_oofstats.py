"""OOF statistics: exact against post-processing on full masks, batching, file format."""

import itertools

import numpy as np
import pytest

from severstal.core.metric import dice, dice_from_areas
from severstal.core.oofstats import class_statistics, combine_folds, concatenate_statistics, segmentation_statistics
from severstal.core.postprocess import ClassThresholds, postprocess_class
from severstal.infra.oof_files import (
    load_classifier_oof,
    load_segmentation_oof,
    save_classifier_oof,
    save_segmentation_oof,
)

PIXELS = [0.3, 0.5, 0.7]
SIZES = [0, 3]


def test_class_statistics_hand_computed():
    probability = np.array([
        [0.8, 0.4, 0.0, 0.0, 0.6],
        [0.8, 0.0, 0.0, 0.0, 0.6],
        [0.0, 0.0, 0.0, 0.9, 0.0],
    ], dtype=np.float32)
    truth = np.array([
        [1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1],
    ], dtype=np.uint8)
    # > 0.3: {(0,0),(1,0),(0,1)} 3 px and {(0,4),(1,4),(2,3)} 3 px (diagonal link); > 0.5: 2 px + 3 px;
    # > 0.7: 2 px + 1 px. Truth hits: left component 2 / 1 / 1, right component 1 / 1 / 1.
    area, overlap, true_area = class_statistics(probability, truth, np.array(PIXELS), np.array(SIZES))
    np.testing.assert_array_equal(area, [[6, 6], [5, 3], [3, 0]])
    np.testing.assert_array_equal(overlap, [[3, 3], [2, 1], [2, 0]])
    assert true_area == 4
    assert area.dtype == np.int32


def test_class_statistics_of_an_empty_map():
    grid = np.array(PIXELS), np.array(SIZES)
    area, overlap, true_area = class_statistics(np.zeros((3, 5)), np.ones((3, 5)), *grid)
    assert area.sum() == 0 and overlap.sum() == 0 and true_area == 15


def random_maps(rng, count, height, width):
    """Smooth random probability maps with blobs of several sizes, and true masks that overlap them."""
    rows, columns = np.mgrid[0:height, 0:width]
    maps = np.zeros((count, height, width, 4), dtype=np.float32)
    for image, channel in np.ndindex(count, 4):
        for _ in range(rng.integers(0, 6)):
            y, x = rng.uniform(0, height), rng.uniform(0, width)
            spread_y, spread_x = rng.uniform(1, 20), rng.uniform(1, 60)
            blob = np.exp(-((rows - y) / spread_y) ** 2 - ((columns - x) / spread_x) ** 2)
            blob *= rng.uniform(0.4, 1)
            maps[image, ..., channel] = np.maximum(maps[image, ..., channel], blob)
    maps += rng.uniform(0, 0.35, maps.shape).astype(np.float32)  # speckle: many tiny components
    truth = (np.roll(maps, 3, axis=2) > rng.uniform(0.5, 0.9)).astype(np.uint8)
    truth[0, ..., 1] = 0  # one empty truth
    return np.clip(maps, 0, 1), truth


@pytest.mark.parametrize("height, width", [(64, 200), (256, 1600)])
def test_statistics_match_brute_force_post_processing(height, width):
    rng = np.random.default_rng(height)
    pixels, sizes = [0.3, 0.45, 0.5, 0.65, 0.8], [0, 5, 64, 150]
    maps, truth = random_maps(rng, 2, height, width)
    stats = segmentation_statistics(maps, truth, pixels, sizes)
    assert stats["predicted_area"].shape == (2, 4, 5, 4) and stats["true_area"].shape == (2, 4)
    for size in range(3):  # every component size removes something somewhere: the case is not trivial
        assert (stats["predicted_area"][..., size] > stats["predicted_area"][..., size + 1]).any()
    for image, channel in np.ndindex(2, 4):
        np.testing.assert_array_equal(stats["true_area"][image, channel], truth[image, ..., channel].sum())
        true = truth[image, ..., channel]
        for (p, pixel), (c, size) in itertools.product(enumerate(pixels), enumerate(sizes)):
            mask = postprocess_class(maps[image, ..., channel], ClassThresholds(pixel, size))
            area = stats["predicted_area"][image, channel, p, c]
            overlap = stats["intersection"][image, channel, p, c]
            assert area == mask.sum() and overlap == (mask & true).sum()
            got = dice_from_areas(area, stats["true_area"][image, channel], overlap)
            assert got == pytest.approx(dice(mask, true), abs=1e-12)


def test_batches_concatenate_to_the_whole():
    maps, truth = random_maps(np.random.default_rng(1), 5, 32, 96)
    whole = segmentation_statistics(maps, truth, PIXELS, SIZES)
    parts = concatenate_statistics([segmentation_statistics(maps[i:i + 2], truth[i:i + 2], PIXELS, SIZES)
                                    for i in range(0, 5, 2)])
    for key in whole:
        np.testing.assert_array_equal(whole[key], parts[key])


@pytest.mark.parametrize("pixels, sizes", [
    ([0.5, 0.3], [0]), ([0.5], [64, 0]), ([], [0]), ([1.2], [0]), ([0.5], [-1]),
])
def test_statistics_reject_bad_grids(pixels, sizes):
    with pytest.raises(ValueError):
        segmentation_statistics(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)), pixels, sizes)


def test_statistics_reject_bad_shapes():
    with pytest.raises(ValueError):
        segmentation_statistics(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 5, 4)), PIXELS, SIZES)
    with pytest.raises(ValueError):
        segmentation_statistics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), PIXELS, SIZES)


def fold_files(tmp_path, fold, image_ids, rng):
    maps, truth = random_maps(rng, len(image_ids), 16, 48)
    stats = segmentation_statistics(maps, truth, PIXELS, SIZES)
    seg = save_segmentation_oof(tmp_path / f"seg{fold}" / "oof.npz", image_ids, fold, stats, PIXELS, SIZES)
    probabilities = rng.random((len(image_ids), 4)).astype(np.float32)
    cls = save_classifier_oof(tmp_path / f"cls{fold}" / "oof.npz", image_ids, fold, probabilities)
    return seg, cls, stats, probabilities


def test_save_and_load_round_trip(tmp_path):
    images = ["a.jpg", "b.jpg", "c.jpg"]
    seg, cls, stats, probabilities = fold_files(tmp_path, 3, images, np.random.default_rng(2))
    assert seg == tmp_path / "seg3" / "oof.npz" and seg.is_file()
    assert sorted(p.name for p in seg.parent.iterdir()) == ["oof.npz"]  # no temp file left
    loaded = load_segmentation_oof(seg)
    assert loaded["fold"] == 3 and loaded["image_ids"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_array_equal(loaded["pixel_thresholds"], PIXELS)
    np.testing.assert_array_equal(loaded["min_component_sizes"], SIZES)
    for key in stats:
        np.testing.assert_array_equal(loaded[key], stats[key])
    classifier = load_classifier_oof(cls)
    np.testing.assert_array_equal(classifier["probabilities"], probabilities)
    with pytest.raises(ValueError, match="classifier"):
        load_segmentation_oof(cls)
    with pytest.raises(ValueError, match="segmentation"):
        load_classifier_oof(seg)


def test_save_keeps_the_exact_file_name(tmp_path):
    path = save_classifier_oof(tmp_path / "probabilities.bin", ["a.jpg"], 0, np.zeros((1, 4)))
    assert path.name == "probabilities.bin" and path.is_file()
    assert load_classifier_oof(path)["fold"] == 0


@pytest.mark.parametrize("image_ids, probabilities", [
    (["a", "b"], np.zeros((3, 4))), (["a", "a", "b"], np.zeros((3, 4))), (["a"], np.zeros(3)),
    (["a"], np.full((1, 4), 1.5)), (["a"], np.full((1, 4), np.nan)),
])
def test_save_classifier_rejects_bad_input(tmp_path, image_ids, probabilities):
    with pytest.raises(ValueError):
        save_classifier_oof(tmp_path / "oof.npz", image_ids, 0, probabilities)
    assert not (tmp_path / "oof.npz").exists()


def test_load_rejects_a_file_that_is_not_npz(tmp_path):
    (tmp_path / "oof.npz").write_text("not numpy")
    with pytest.raises(ValueError, match="not a readable"):
        load_segmentation_oof(tmp_path / "oof.npz")


def test_combine_folds_aligns_classifier_probabilities_by_image(tmp_path):
    rng = np.random.default_rng(3)
    seg0, cls0, stats0, prob0 = fold_files(tmp_path, 0, ["a", "b"], rng)
    seg1, cls1, stats1, prob1 = fold_files(tmp_path, 1, ["c", "d", "e"], rng)
    segmentation = [load_segmentation_oof(seg0), load_segmentation_oof(seg1)]
    combined = combine_folds(segmentation, [load_classifier_oof(cls1), load_classifier_oof(cls0)])
    assert combined.image_ids.tolist() == ["a", "b", "c", "d", "e"]
    assert combined.folds.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(combined.classifier_probabilities, np.concatenate([prob0, prob1]))
    true_area = np.concatenate([stats0["true_area"], stats1["true_area"]])
    np.testing.assert_array_equal(combined.true_area, true_area)
    assert combine_folds(segmentation).classifier_probabilities is None
    with pytest.raises(ValueError, match="more than one fold"):
        combine_folds([segmentation[0], segmentation[0]])
    with pytest.raises(ValueError, match="differ"):
        combine_folds(segmentation, [load_classifier_oof(cls0)])
    other_grid = dict(segmentation[1], pixel_thresholds=np.array([0.3, 0.5, 0.75]))
    with pytest.raises(ValueError, match="another grid"):
        combine_folds([segmentation[0], other_grid])


def test_stamp_round_trip_and_files_without_one(tmp_path):
    from severstal.infra.oof_files import read_oof_stamp
    from severstal.infra.stamps import Stamp

    stamp = Stamp(("inference.tta",), {"inference.tta": ["none"]}, {"weights": "sha256:abc"})
    path = save_classifier_oof(tmp_path / "with.npz", ["a.jpg"], 0, np.zeros((1, 4)), stamp)
    assert read_oof_stamp(path) == stamp and load_classifier_oof(path)["stamp"] == stamp
    bare = save_classifier_oof(tmp_path / "without.npz", ["a.jpg"], 0, np.zeros((1, 4)))
    assert read_oof_stamp(bare) is None and load_classifier_oof(bare)["stamp"] is None
    assert read_oof_stamp(tmp_path / "missing.npz") is None
