"""Post-processing rules: strict threshold, 8-connected component removal, minimum area, classifier gate."""

import numpy as np
import pytest

from severstal.core.postprocess import (
    DEFAULT_THRESHOLDS,
    ClassThresholds,
    binarize,
    component_sizes,
    per_class_thresholds,
    postprocess_class,
    postprocess_masks,
    remove_small_components,
)

# Two 8-connected components: a diagonal of 3 pixels (top left) and a 2 x 3 block of 6 (right).
PROBABILITY = np.array([
    [0.9, 0.0, 0.0, 0.0, 0.7, 0.7, 0.7],
    [0.0, 0.8, 0.0, 0.0, 0.7, 0.7, 0.7],
    [0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5],
], dtype=np.float32)
DIAGONAL = np.zeros((4, 7), dtype=np.uint8)
DIAGONAL[[0, 1, 2], [0, 1, 2]] = 1
BLOCK = np.zeros((4, 7), dtype=np.uint8)
BLOCK[0:2, 4:7] = 1


def test_binarize_is_strictly_greater_in_the_maps_dtype():
    assert binarize(PROBABILITY, 0.5)[3, 6] == 0  # exactly 0.5 is off
    assert binarize(PROBABILITY, 0.49)[3, 6] == 1
    assert binarize(np.float32([0.3]), np.float64(0.3))[0] == 0  # float32(0.3) is not above "0.3"
    assert binarize(PROBABILITY, 0.5).dtype == np.uint8


def test_components_are_8_connected():
    labels, sizes = component_sizes(binarize(PROBABILITY, 0.5))
    assert sorted(sizes[1:].tolist()) == [3, 6]
    assert sizes[0] == 0
    assert len(np.unique(labels[DIAGONAL == 1])) == 1  # the diagonal is one component


@pytest.mark.parametrize("min_size, expected", [
    (0, DIAGONAL | BLOCK), (1, DIAGONAL | BLOCK), (3, DIAGONAL | BLOCK),
    (4, BLOCK), (6, BLOCK), (7, 0 * BLOCK),
])
def test_remove_small_components(min_size, expected):
    np.testing.assert_array_equal(remove_small_components(binarize(PROBABILITY, 0.5), min_size), expected)


@pytest.mark.parametrize("thresholds, classifier, expected", [
    (ClassThresholds(), None, DIAGONAL | BLOCK),
    (ClassThresholds(pixel_threshold=0.65), None, BLOCK | (DIAGONAL * (PROBABILITY > 0.65))),
    (ClassThresholds(min_component_size=4), None, BLOCK),
    (ClassThresholds(min_area=9), None, DIAGONAL | BLOCK),  # 9 pixels: kept
    (ClassThresholds(min_area=10), None, 0 * BLOCK),  # fewer than 10: emptied
    (ClassThresholds(min_component_size=4, min_area=7), None, 0 * BLOCK),  # area counted after removal
    (ClassThresholds(classifier_threshold=0.6), 0.6, DIAGONAL | BLOCK),  # equal: kept
    (ClassThresholds(classifier_threshold=0.6), 0.59, 0 * BLOCK),
    (ClassThresholds(classifier_threshold=0.6), None, DIAGONAL | BLOCK),  # no classifier: no gate
])
def test_postprocess_class(thresholds, classifier, expected):
    mask = postprocess_class(PROBABILITY, thresholds, classifier)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)


def test_postprocess_masks_applies_each_class_its_own_thresholds():
    probabilities = np.stack([PROBABILITY] * 4, axis=-1)  # (4, 7, 4)
    thresholds = {1: ClassThresholds(), "2": ClassThresholds(min_component_size=4),
                  3: {"min_area": 10}, 4: ClassThresholds(classifier_threshold=0.5)}
    masks = postprocess_masks(probabilities, thresholds, classifier_probabilities=[0.1, 0.1, 0.1, 0.4])
    assert masks.shape == (4, 7, 4) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[..., 0], DIAGONAL | BLOCK)
    np.testing.assert_array_equal(masks[..., 1], BLOCK)
    assert masks[..., 2].sum() == 0 and masks[..., 3].sum() == 0
    ungated = postprocess_masks(probabilities, DEFAULT_THRESHOLDS)
    np.testing.assert_array_equal(ungated[..., 3], DIAGONAL | BLOCK)


@pytest.mark.parametrize("probabilities, thresholds, classifier", [
    (np.zeros((4, 7)), DEFAULT_THRESHOLDS, None),
    (np.zeros((4, 7, 3)), [DEFAULT_THRESHOLDS] * 4, None),  # four classes' thresholds for three channels
    (np.zeros((4, 7, 4)), DEFAULT_THRESHOLDS, [0.5, 0.5]),
])
def test_postprocess_masks_rejects_bad_shapes(probabilities, thresholds, classifier):
    with pytest.raises(ValueError):
        postprocess_masks(probabilities, thresholds, classifier)


def test_postprocess_masks_follows_the_number_of_classes():
    probabilities = np.zeros((4, 7, 2), np.float32)
    probabilities[1, 2, 1] = 0.9
    masks = postprocess_masks(probabilities, DEFAULT_THRESHOLDS, [0.0, 1.0])
    assert masks.shape == (4, 7, 2) and masks.sum() == 1 and masks[1, 2, 1] == 1


@pytest.mark.parametrize("values, message", [
    ({"min_area": float("inf")}, "classes.3.min_area must be a whole number of pixels >= 0, got inf"),
    ({"min_area": 1e400}, "classes.3.min_area must be a whole number of pixels >= 0, got inf"),
    ({"min_area": 12.5}, "classes.3.min_area must be a whole number"),
    ({"pixel_threshold": float("nan")}, "classes.3.pixel_threshold must be a number in [0, 1], got nan"),
    ({"classifier_threshold": 1.5}, "classes.3.classifier_threshold must be a number in [0, 1], got 1.5"),
    ({"min_component_size": "150"}, "classes.3.min_component_size must be a whole number"),
    ({"pixel": 0.5}, "unknown threshold keys ['classes.3.pixel']"),
])
def test_thresholds_document_values_out_of_range_name_the_key(values, message):
    from severstal.core.thresholds import thresholds_from_document

    classes = {str(c): ClassThresholds().to_dict() for c in (1, 2, 3, 4)}
    classes["3"] = {**classes["3"], **values}
    with pytest.raises(ValueError) as caught:
        thresholds_from_document({"classes": classes})
    assert message in str(caught.value)


def test_class_thresholds_round_trip_and_validation():
    thresholds = ClassThresholds(pixel_threshold=0.55, min_component_size=150, min_area=600,
                                 classifier_threshold=0.6)
    values = thresholds.to_dict()
    assert values == {"pixel_threshold": 0.55, "min_component_size": 150, "min_area": 600,
                      "classifier_threshold": 0.6}
    assert ClassThresholds.from_dict(values) == thresholds
    assert ClassThresholds.from_dict({"min_area": 5.0}) == ClassThresholds(min_area=5)
    with pytest.raises(ValueError, match="unknown"):
        ClassThresholds.from_dict({"threshold": 0.5})
    for bad in ({"pixel_threshold": 1.5}, {"classifier_threshold": -0.1}, {"min_area": -1}):
        with pytest.raises(ValueError):
            ClassThresholds(**bad)


def test_per_class_thresholds_forms():
    one = ClassThresholds(min_area=3)
    assert per_class_thresholds(one) == [one] * 4
    assert per_class_thresholds([one, one, one, DEFAULT_THRESHOLDS])[3] == DEFAULT_THRESHOLDS
    assert per_class_thresholds({"1": {}, "2": {}, "3": {}, "4": one.to_dict()})[3] == one
    with pytest.raises(ValueError):
        per_class_thresholds([one] * 3)
    with pytest.raises(ValueError):
        per_class_thresholds({1: one, 2: one, 3: one, 5: one})
