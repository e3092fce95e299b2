"""EDA: label statistics and the mask overlay by hand, and the eda stage end to end on tiny images."""

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal.core.constants import CLASS_COLOURS_RGB
from severstal.core.drawing import overlay_masks
from severstal.core.rle import encode
from severstal.core.splits import PRESENCE_COLUMNS
from severstal.infra.figures import legend_handles
from severstal.stages import eda


def presence(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ImageId", *PRESENCE_COLUMNS])


PRESENCE = presence([
    ("a.jpg", 1, 0, 1, 0), ("b.jpg", 0, 0, 1, 0), ("c.jpg", 0, 0, 1, 0), ("d.jpg", 0, 0, 0, 0),
    ("e.jpg", 0, 1, 1, 1), ("f.jpg", 0, 0, 0, 0), ("g.jpg", 1, 0, 0, 0),
])


def test_classes_per_image():
    assert eda.classes_per_image(PRESENCE).tolist() == [2, 3, 1, 1, 0]


def test_class_combinations_most_common_first():
    counts = eda.class_combinations(PRESENCE)
    assert counts.to_dict() == {"3": 2, "none": 2, "1": 1, "1+3": 1, "2+3+4": 1}
    assert counts.index.tolist() == ["3", "none", "1", "1+3", "2+3+4"]


def test_mask_areas_per_class_of_the_listed_images():
    labels = pd.DataFrame({
        "ImageId": ["a.jpg", "a.jpg", "b.jpg", "x.jpg", "c.jpg"],
        "ClassId": [1, 3, 3, 3, 2],
        "EncodedPixels": ["1 5 10 2", "3 4", "7 100", "1 9", ""],
    })
    areas = eda.mask_areas(labels, ["a.jpg", "b.jpg", "c.jpg"])  # x.jpg is not a training image
    assert {c: a.tolist() for c, a in areas.items()} == {1: [7], 2: [], 3: [4, 100], 4: []}


@pytest.mark.parametrize(("class_id", "count", "expected"), [(1, 5, ["a.jpg", "g.jpg"]), (4, 3, ["e.jpg"])])
def test_choose_examples_takes_all_when_few(class_id, count, expected):
    assert eda.choose_examples(PRESENCE, class_id, count, seed=0) == expected


def test_choose_examples_is_reproducible_and_sorted():
    chosen = eda.choose_examples(PRESENCE, 3, 2, seed=4)
    assert chosen == eda.choose_examples(PRESENCE, 3, 2, seed=4)
    assert len(chosen) == 2 and chosen == sorted(chosen) and set(chosen) <= {"a.jpg", "b.jpg", "c.jpg", "e.jpg"}


def square_mask(channel: int) -> np.ndarray:
    masks = np.zeros((5, 5, 4), dtype=np.uint8)
    masks[1:4, 1:4, channel] = 1  # a 3 x 3 square: centre (2, 2), border the other 8 pixels
    return masks


def test_overlay_fills_and_outlines_in_the_class_colour():
    image = np.full((5, 5), 100, dtype=np.uint8)
    result = overlay_masks(image, square_mask(0), alpha=0.5, outline=1)  # class 1: RGB (255, 200, 0)
    assert result.shape == (5, 5, 3) and result.dtype == np.uint8
    assert result[2, 2].tolist() == [178, 150, 50]  # (100 + 255) / 2 = 177.5 rounds to even 178
    assert result[1, 1].tolist() == result[3, 2].tolist() == [255, 200, 0]  # outline
    assert result[0, 0].tolist() == result[4, 4].tolist() == [100, 100, 100]  # untouched


def test_overlay_in_bgr_order_and_without_outline():
    image = np.full((5, 5, 3), 40, dtype=np.uint8)
    result = overlay_masks(image, square_mask(3), alpha=1.0, outline=0, channel_order="bgr")  # class 4
    assert result[1, 1].tolist() == result[2, 2].tolist() == [0, 220, 0]
    assert result[0, 2].tolist() == [40, 40, 40]


def test_overlay_with_nothing_to_draw_is_the_image():
    image = np.arange(75, dtype=np.uint8).reshape(5, 5, 3)
    assert np.array_equal(overlay_masks(image, np.zeros((5, 5, 4))), image)
    assert np.array_equal(overlay_masks(image, square_mask(1), alpha=0.0, outline=0), image)


@pytest.mark.parametrize(
    ("image_shape", "masks_shape", "options", "message"),
    [
        ((5, 5), (5, 6, 4), {}, "masks must be \\(H, W, classes\\) with \\(H, W\\) = \\(5, 5\\)"),
        ((5, 5), (5, 5), {}, "masks must be"),
        ((5, 5, 4), (5, 5, 4), {}, "image must be"),
        ((5, 5), (5, 5, 4), {"channel_order": "hsv"}, "channel_order"),
        ((5, 5), (5, 5, 4), {"alpha": 1.5}, "alpha"),
        ((5, 5), (5, 5, 4), {"outline": -1}, "outline"),
    ],
)
def test_overlay_rejects_bad_arguments(image_shape, masks_shape, options, message):
    with pytest.raises(ValueError, match=message):
        overlay_masks(np.zeros(image_shape, np.uint8), np.zeros(masks_shape, np.uint8), **options)


def test_legend_handles_name_each_class_in_its_colour():
    handles = legend_handles()
    assert [h.get_label() for h in handles] == ["class 1", "class 2", "class 3", "class 4"]
    np.testing.assert_allclose([h.get_facecolor()[:3] for h in handles], CLASS_COLOURS_RGB[:4])


# ---- the eda stage on tiny images -----------------------------------------------------------

HEIGHT, WIDTH = 32, 96
TINY_LABELS = {"a.jpg": [1, 3], "b.jpg": [3], "c.jpg": [], "d.jpg": [4], "e.jpg": [3]}  # no class 2


def write_tiny_data(directory):
    (directory / "train_images").mkdir(parents=True)
    rows = []
    for index, (name, classes) in enumerate(TINY_LABELS.items()):
        cv2.imwrite(str(directory / "train_images" / name), np.full((HEIGHT, WIDTH, 3), 60 + 20 * index, np.uint8))
        for class_id in classes:
            mask = np.zeros((HEIGHT, WIDTH), np.uint8)
            mask[4:20, 10 * class_id:10 * class_id + 15] = 1
            rows.append((name, class_id, encode(mask)))
    pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(directory / "train.csv", index=False)


def test_eda_stage_draws_then_skips_then_redraws(tmp_path, monkeypatch, capsys, repo_root):
    monkeypatch.chdir(tmp_path)
    write_tiny_data(tmp_path / "tiny")
    argv = ["--config", str(repo_root / "configs" / "demo.yaml"), "--data", "tiny",
            "--set", f"data.height={HEIGHT}", "--set", f"data.width={WIDTH}"]
    assert eda.main(argv) == 0
    out_dir = tmp_path / "reports" / "demo-tiny" / "eda"
    expected = {f"{name}.png" for name in eda.SUMMARY_FIGURES} | {f"examples_class_{c}.png" for c in (1, 3, 4)}
    assert {p.name for p in out_dir.glob("*.png")} == expected
    assert not list(out_dir.glob("*.tmp"))
    for name in expected:
        picture = cv2.imread(str(out_dir / name))
        assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100
    assert "eda: 5 training images, 4 with a defect (80.0%)" in capsys.readouterr().out

    stamps = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.png")}
    assert eda.main(argv) == 0
    first, second = capsys.readouterr().out.strip().splitlines()[:2]
    assert first.startswith("data: tiny (layout kaggle: ")
    assert second.startswith("eda: reports/demo-tiny/eda (8 figures) is up to date")
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.png")}

    assert eda.main([*argv, "--set", "seed=1"]) == 0  # the training seed does not shape the figures
    assert "up to date" in capsys.readouterr().out
    assert eda.main([*argv, "--set", f"data.width={WIDTH * 2}"]) == 1  # the image size does
    assert "made with a different config:\n  data.width" in capsys.readouterr().err
    (tiny := tmp_path / "tiny" / "train.csv").write_text(tiny.read_text().replace(",3,", ",4,", 1))
    assert eda.main(argv) == 0
    assert "training labels changed since it was made: making it again" in capsys.readouterr().out
    (out_dir / "images_per_class.png").unlink()
    assert eda.main(argv) == 0
    assert (out_dir / "images_per_class.png").is_file()


def test_eda_stage_without_images_fails_clearly(tmp_path, monkeypatch, capsys, repo_root):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert eda.main(["--config", str(repo_root / "configs" / "demo.yaml"), "--data", "empty"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: no training images in empty/train_images")
    assert not (tmp_path / "reports").exists()
