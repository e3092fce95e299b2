"""The show stage: panel drawing by hand, and PNGs for --ids, --images and --best-worst."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from severstal.core.constants import CLASS_COLOURS_RGB, HEIGHT, WIDTH
from severstal.core.ensemble import rows_frame, submission_csv
from severstal.stages import show

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_prediction_panel_fills_and_truth_panel_outlines():
    image = np.full((8, 10), 100, dtype=np.uint8)
    masks = np.zeros((8, 10, 4), dtype=np.uint8)
    masks[1:7, 2:9, 2] = 1  # class 3: a 6 x 7 block
    colour = np.array(CLASS_COLOURS_RGB[2]) * 255
    filled = show.prediction_panel(image, masks)
    expected = np.rint((1 - show.PREDICTION_ALPHA) * 100 + show.PREDICTION_ALPHA * colour)
    np.testing.assert_array_equal(filled[3, 5], expected)  # inside: blended, no outline
    np.testing.assert_array_equal(filled[1, 2], expected)  # border: blended too
    np.testing.assert_array_equal(filled[0, 0], [100, 100, 100])
    outlined = show.truth_panel(image, masks)
    np.testing.assert_array_equal(outlined[1, 2], np.rint(colour))  # contour in the class colour
    np.testing.assert_array_equal(outlined[4, 5], [100, 100, 100])  # interior left as the image
    np.testing.assert_array_equal(outlined[0, 0], [100, 100, 100])


@pytest.mark.parametrize("other, expected", [
    (None, "class 1: 4 px, class 4: 2 px"),
    ("same", "class 1: 4 px (Dice 1.000), class 4: 2 px (Dice 1.000)"),
    ("empty", "class 1: 4 px (Dice 0.000), class 4: 2 px (Dice 0.000)"),
])
def test_class_summary(other, expected):
    masks = np.zeros((4, 4, 4), dtype=np.uint8)
    masks[:2, :2, 0] = 1
    masks[3, :2, 3] = 1
    compare = {None: None, "same": masks, "empty": np.zeros_like(masks)}[other]
    assert show.class_summary(masks, compare) == expected
    assert show.class_summary(np.zeros_like(masks)) == "no defect"


TRUTH = "ImageId,ClassId,EncodedPixels\na.jpg,3,1 5000\nb.jpg,1,300 200\n"
ROWS = [("a.jpg", 3, "1 4000"), ("b.jpg", 2, "7000 50"), ("c.jpg", 1, "")]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("config.yaml").write_text(f"inherit: {REPO_ROOT / 'configs' / 'demo.yaml'}\nexperiment: sh\n"
                                   "data:\n  dir: data\n")
    for folder, names in (("data/test_images", ["a.jpg", "b.jpg", "c.jpg"]), ("data/train_images", ["t.jpg"])):
        Path(folder).mkdir(parents=True)
        for name in names:
            cv2.imwrite(f"{folder}/{name}", np.full((HEIGHT, WIDTH, 3), 120, dtype=np.uint8))
    Path("data/test_labels.csv").write_text(TRUTH)
    Path("data/train.csv").write_text("ImageId,ClassId,EncodedPixels\nt.jpg,4,1 100\n")
    Path("submissions/sh").mkdir(parents=True)
    Path("submissions/sh/submission.csv").write_text(submission_csv(rows_frame(
        [(i, c, rle) for i, c, rle in ROWS] + [(i, c, "") for i in ("a.jpg", "b.jpg", "c.jpg")
                                               for c in (1, 2, 3, 4) if (i, c) not in {(r[0], r[1]) for r in ROWS}])))
    return tmp_path


def png_size(path):
    image = cv2.imread(str(path))
    return image.shape[1], image.shape[0]


def test_best_worst_draws_ranked_pngs(workspace, capsys):
    out = Path("reports/sh/predictions")
    out.mkdir(parents=True)
    (out / "best-9-stale.png").write_bytes(b"old")  # a previous run's picture is replaced
    assert show.main(["--config", "config.yaml", "--best-worst", "1"]) == 0
    # a.jpg: class 3 Dice 2*4000/9000 = 0.889 -> mean 0.972; b.jpg: 0 for class 1 and 2 -> 0.5; c.jpg trivial
    assert sorted(p.name for p in out.iterdir()) == ["best-1-a.png", "worst-1-b.png"]
    width, height = png_size(out / "best-1-a.png")
    assert width == 1600 and height > 2 * 256
    assert "drew 2 image(s)" in capsys.readouterr().out


def test_ids_from_test_and_train_folders(workspace):
    assert show.main(["--config", "config.yaml", "--ids", "c.jpg", "t.jpg", "--out", "pictures"]) == 0
    assert sorted(p.name for p in Path("pictures").iterdir()) == ["c.png", "t.png"]


def test_images_folder_with_a_limit(workspace):
    assert show.main(["--config", "config.yaml", "--images", "data/test_images", "--limit", "2", "--out", "o"]) == 0
    assert sorted(p.name for p in Path("o").iterdir()) == ["a.png", "b.png"]


@pytest.mark.parametrize("argv, message", [
    (["--ids", "zzz.jpg"], "zzz.jpg are in neither"),
    (["--best-worst", "0"], "positive number"),
    (["--submission", "missing.csv"], "missing.csv does not exist"),
])
def test_errors(workspace, capsys, argv, message):
    assert show.main(["--config", "config.yaml", *argv]) == 1
    assert message in capsys.readouterr().err
