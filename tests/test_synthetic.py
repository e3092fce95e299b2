"""The synthetic Severstal-like generator: determinism, shapes, plan and realistic statistics."""

import re

import numpy as np
import pytest

from severstal.core import synthetic
from severstal.core.constants import HEIGHT, WIDTH
from severstal.core.rle import decode, encode

# Per-class median mask area in the official training set (sample README).
README_MEDIAN_AREA = {1: 3326, 2: 2944, 3: 11954, 4: 25357}


def test_combination_counts_hand_computed_for_100():
    # 100 * count / 12568, floors 46 37 6 4 2 1 0 ...; the 4 left go to the largest remainders
    # (.96 none, .87 class 3, .72 classes 1+3, .55 class 2).
    counts = dict(synthetic.combination_counts(100))
    assert counts == {(): 47, (3,): 38, (1,): 6, (4,): 4, (3, 4): 2, (2,): 2, (1, 3): 1,
                      (1, 2): 0, (2, 3): 0, (1, 2, 3): 0, (2, 4): 0}


def test_combination_counts_reproduce_the_official_table_and_its_class_totals():
    counts = dict(synthetic.combination_counts(12568))
    assert counts == dict(synthetic.COMBINATIONS)
    per_class = {c: sum(n for classes, n in counts.items() if c in classes) for c in (1, 2, 3, 4)}
    assert per_class == {1: 897, 2: 247, 3: 5150, 4: 801}
    assert counts[()] == 5902
    assert not any(1 in classes and 4 in classes for classes, n in counts.items() if n)


@pytest.mark.parametrize("count", [0, 1, 7, 400])
def test_combination_counts_sum_to_count(count):
    assert sum(n for _, n in synthetic.combination_counts(count)) == count


def test_plan_ids_look_real_are_unique_sorted_and_deterministic():
    plan = synthetic.plan_dataset(30, 12, seed=5)
    assert plan == synthetic.plan_dataset(30, 12, seed=5)
    ids = [spec.image_id for split in ("train", "test") for spec in plan[split]]
    assert len(plan["train"]) == 30 and len(plan["test"]) == 12
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{9}\.jpg", image_id) for image_id in ids)
    for specs in plan.values():
        assert [s.image_id for s in specs] == sorted(s.image_id for s in specs)
    other = synthetic.plan_dataset(30, 12, seed=6)
    assert {s.image_id for s in other["train"]}.isdisjoint(s.image_id for s in plan["train"])


def test_image_ids_do_not_depend_on_the_number_of_images():
    small = synthetic.plan_dataset(5, 2, seed=0)
    large = synthetic.plan_dataset(50, 20, seed=0)
    for split in ("train", "test"):
        assert {s.image_id for s in small[split]} <= {s.image_id for s in large[split]}


@pytest.mark.parametrize("classes", [(), (1,), (2,), (3,), (4,), (3, 4), (1, 2, 3)])
def test_image_and_masks_shapes_types_and_classes(classes):
    image, masks = synthetic.generate_image(11, classes)
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert masks.shape == (HEIGHT, WIDTH, 4) and masks.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    assert set(np.unique(masks)) <= {0, 1}
    assert [c for c in (1, 2, 3, 4) if masks[..., c - 1].any()] == list(classes)
    for c in classes:  # the masks survive the RLE round trip exactly
        assert (decode(encode(masks[..., c - 1])) == masks[..., c - 1].astype(bool)).all()


def test_same_seed_same_image_other_seed_other_image():
    first = synthetic.generate_image(3, (1, 3))
    again = synthetic.generate_image(np.random.default_rng(3), (1, 3))
    other = synthetic.generate_image(4, (1, 3))
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not (first[0] == other[0]).all()


def test_render_uses_only_the_spec():
    spec = synthetic.plan_dataset(3, 1, seed=2)["train"][1]
    image, masks = synthetic.render(spec)
    expected_image, expected_masks = synthetic.generate_image(np.random.default_rng(spec.entropy), spec.classes)
    assert (image == expected_image).all() and (masks == expected_masks).all()


@pytest.mark.parametrize("bad", [(0,), (5,), (1, 9)])
def test_unknown_classes_are_rejected(bad):
    with pytest.raises(ValueError, match="classes"):
        synthetic.generate_image(0, bad)


@pytest.mark.parametrize("args", [(-1, 2, 0), (2, -1, 0), (2, 2, -1)])
def test_plan_rejects_negative_arguments(args):
    with pytest.raises(ValueError):
        synthetic.plan_dataset(*args)


@pytest.fixture(scope="module")
def generated():
    """200 planned training images: their classes, per-class mask areas and grey levels."""
    specs = synthetic.plan_dataset(200, 0, seed=0)["train"]
    present, areas, means, defect_greys = [], {c: [] for c in (1, 2, 3, 4)}, [], []
    for spec in specs:
        image, masks = synthetic.render(spec)
        grey = image[..., 0]
        present.append({c for c in (1, 2, 3, 4) if masks[..., c - 1].any()})
        for c in present[-1]:
            areas[c].append(int(masks[..., c - 1].sum()))
        means.append(float(grey.mean()))
        if masks.any():
            defect_greys.append(float(grey[masks.any(axis=2)].mean()))
    return present, areas, means, defect_greys


def test_statistics_follow_the_official_training_set(generated):
    present, areas, means, _ = generated
    defect_free = sum(not classes for classes in present) / len(present)
    assert 0.40 <= defect_free <= 0.54  # official: 47.0 %
    images_per_class = {c: sum(c in classes for classes in present) for c in (1, 2, 3, 4)}
    assert max(images_per_class, key=images_per_class.get) == 3
    assert min(images_per_class, key=images_per_class.get) == 2
    assert images_per_class[2] >= 1
    assert not any({1, 4} <= classes for classes in present)
    for c, median in README_MEDIAN_AREA.items():
        assert median / 2 <= np.median(areas[c]) <= median * 2, (c, np.median(areas[c]))
    assert 90 <= np.median(means) <= 125  # official: median about 108, range 9..151
    assert min(means) >= 5 and max(means) <= 170


def test_defects_lie_on_the_steel_not_on_a_black_margin(generated):
    _, _, _, defect_greys = generated
    assert min(defect_greys) > 30


@pytest.mark.parametrize("class_id", [1, 2, 3, 4])
def test_class_area_medians_match_the_readme(class_id):
    areas = [int(synthetic.generate_image(seed, (class_id,))[1].sum()) for seed in range(40)]
    median = README_MEDIAN_AREA[class_id]
    assert median / 2 <= np.median(areas) <= median * 2
