"""Defects as objects (core.defects), their drawing (core.drawing.draw_defects) and label maps to masks."""

import numpy as np
import pytest

from severstal.core.defects import defect_objects, defects_document, image_record, label_record, unusable_record
from severstal.core.drawing import draw_defects
from severstal.core.postprocess import label_map_of, one_hot

IDS, NAMES = [1, 2, 3], ["scratch", "dent", "stain"]


def example():
    """A 6 x 8 image: class 1 has a 2 x 3 rectangle and a diagonal pair (one 8-connected component), class 3 one
    pixel; class 2 nothing."""
    masks = np.zeros((6, 8, 3), np.uint8)
    masks[1:3, 1:4, 0] = 1  # rows 1-2, columns 1-3
    masks[4, 5, 0] = masks[5, 6, 0] = 1  # diagonal neighbours
    masks[0, 7, 2] = 1
    probabilities = np.full((6, 8, 3), 0.1, np.float32)
    probabilities[1:3, 1:4, 0] = [[0.6, 0.7, 0.8], [0.9, 1.0, 0.6]]
    probabilities[4, 5, 0], probabilities[5, 6, 0] = 0.55, 0.75
    probabilities[0, 7, 2] = 0.625
    return masks, probabilities


def test_each_component_is_one_defect_with_exact_geometry_and_probabilities():
    masks, probabilities = example()
    defects = defect_objects(masks, probabilities, np.array([0.9, 0.2, 0.5]), IDS, NAMES)
    assert [(d["class"], d["name"], d["area"], d["bbox"]) for d in defects] == [
        (1, "scratch", 6, [1, 1, 3, 2]), (1, "scratch", 2, [5, 4, 2, 2]), (3, "stain", 1, [7, 0, 1, 1])]
    assert defects[0]["polygon"] == [[1, 1], [1, 2], [3, 2], [3, 1]]  # the rectangle's corners, counter-clockwise
    assert defects[1]["polygon"] == [[5, 4], [6, 5]]
    assert defects[2]["polygon"] == [[7, 0]]
    assert defects[0]["mean_probability"] == pytest.approx(4.6 / 6, abs=1e-6)
    assert defects[0]["max_probability"] == 1.0
    assert defects[1]["mean_probability"] == pytest.approx(0.65, abs=1e-6)
    assert [d["classifier_probability"] for d in defects] == [0.9, 0.9, 0.5]
    assert all(d["classifier_probability"] is None for d in defect_objects(masks, probabilities, None, IDS, NAMES))


def test_image_record_decides_per_class_and_overall():
    masks, probabilities = example()
    record = image_record("a.png", masks, probabilities, None, IDS, NAMES)
    assert (record["image"], record["height"], record["width"], record["defective"]) == ("a.png", 6, 8, True)
    assert [(c["name"], c["defective"], c["area"]) for c in record["classes"]] == [
        ("scratch", True, 8), ("dent", False, 0), ("stain", True, 1)]
    clean = image_record("b.png", np.zeros_like(masks), probabilities, None, IDS, NAMES)
    assert clean["defective"] is False and clean["defects"] == []


def test_document_counts_and_other_records():
    masks, probabilities = example()
    records = [image_record("a.png", masks, probabilities, None, IDS, NAMES), unusable_record("b.png", "truncated")]
    document = defects_document(records, experiment="e", layout="masks", class_ids=IDS, class_names=NAMES,
                                thresholds={"file": "t.json", "sha256": "sha256:0"}, models=[], created="now")
    assert document["summary"] == {"images": 2, "defective_images": 1, "defects": 3}
    assert document["classes"][2] == {"class": 3, "name": "stain"}
    labelled = label_record("c.png", "dent", np.array([0.25, 0.5, 0.25]), NAMES)
    assert labelled == {"image": "c.png", "label": "dent", "flagged": ["dent"],
                        "probabilities": {"scratch": 0.25, "dent": 0.5, "stain": 0.25}}
    flagged = label_record("c.png", "dent", np.array([0.25, 0.5, 0.25]), NAMES, np.array([True, True, False]))
    assert flagged["flagged"] == ["scratch", "dent"]


@pytest.mark.parametrize("masks_shape, probabilities_shape, ids", [
    ((6, 8, 3), (6, 8, 2), IDS), ((6, 8), (6, 8), IDS), ((6, 8, 3), (6, 8, 3), [1, 2])])
def test_bad_shapes_are_refused(masks_shape, probabilities_shape, ids):
    with pytest.raises(ValueError):
        defect_objects(np.zeros(masks_shape, np.uint8), np.zeros(probabilities_shape), None, ids, NAMES)


def test_label_map_round_trips_through_one_hot():
    masks, probabilities = example()
    masks[1, 1, 2] = 1  # overlaps class 1 where class 1 is more probable (0.6 > 0.1)
    label_map = label_map_of(masks, probabilities)
    assert label_map[1, 1] == 1 and label_map[0, 7] == 3
    np.testing.assert_array_equal(label_map_of(one_hot(label_map, 3), probabilities), label_map)
    assert one_hot(label_map, 3).dtype == np.uint8 and one_hot(label_map, 3).sum() == 9


def test_drawn_outline_follows_the_polygon_in_the_class_colour():
    masks, probabilities = example()
    image = np.zeros((40, 60, 3), np.uint8)
    big = np.zeros((40, 60, 3), np.uint8)
    big[20:30, 10:40, 1] = 1  # a dent at rows 20-29, columns 10-39
    defects = defect_objects(big, np.full(big.shape, 0.9, np.float32), None, IDS, NAMES)
    drawn = draw_defects(image, defects, IDS, thickness=1)
    outline = np.zeros((40, 60), bool)
    outline[20, 10:40] = outline[29, 10:40] = outline[20:30, 10] = outline[20:30, 39] = True
    colour = drawn[outline]
    assert (colour == colour[0]).all() and colour[0].any()  # one colour, not black
    assert not drawn[22:28, 12:38].any()  # inside the outline nothing is drawn
    assert drawn[:20].any()  # the name, above the box
    assert (image == 0).all()  # the input is left alone
    with pytest.raises(ValueError, match="not one of the classes"):
        draw_defects(image, [{**defects[0], "class": 9}], IDS)
