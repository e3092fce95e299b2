"""Data layouts: telling kaggle, masks and folders apart; classes.txt; label maps; check-data on the masks layout."""

import cv2
import numpy as np
import pytest

from severstal.core.checks import check_label_map
from severstal.infra.errors import UserError
from severstal.infra.layouts import class_names_problems, detect_layout
from severstal.stages.check_data import check_masks_directory, main

HEIGHT, WIDTH = 30, 50


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


@pytest.mark.parametrize("files, expected", [
    (["train.csv", "train_images/"], "kaggle"),
    (["train.csv", "classes.txt"], "kaggle"),  # Kaggle's own file decides
    (["classes.txt", "train_images/"], "masks"),
    (["train_images/", "train_masks/"], "masks"),
    (["train/healthy/", "train/defective/"], "folders"),
])
def test_detect_layout(tmp_path, files, expected):
    for name in files:
        path = tmp_path / name
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.write_text("x\n")
    assert detect_layout(tmp_path) == expected


def test_detect_layout_refuses_with_the_three_layouts(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train").mkdir()  # no class folders in it
    with pytest.raises(UserError, match=r"in none of the data layouts(.|\n)*masks: (.|\n)*it holds: images, train"):
        detect_layout(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        detect_layout(tmp_path / "absent")


@pytest.mark.parametrize("text, names, problems", [
    ("scratch\ndent\n\n\n", ["scratch", "dent"], []),
    (" scratch \r\ndent", ["scratch", "dent"], []),
    ("scratch\n\ndent\n", ["scratch", "", "dent"], ["classes.txt line 2: blank (class 2 needs a name)"]),
    ("dent\nscratch\ndent\n", ["dent", "scratch", "dent"], ["classes.txt line 3: 'dent' already names class 1"]),
    ("\n\n", [], ["classes.txt names no class: write one class name a line, class 1 first"]),
])
def test_class_names(text, names, problems):
    assert class_names_problems(text) == (names, problems)


def test_check_label_map_by_hand():
    label_map = np.zeros((HEIGHT, WIDTH), np.uint8)
    label_map[2:5, 3:9] = 2
    label_map[10, 10] = 3
    assert check_label_map(png(label_map), (HEIGHT, WIDTH), 3) == ([], {2, 3})
    assert check_label_map(png(label_map), None, 3) == ([], {2, 3})
    assert check_label_map(png(label_map), (HEIGHT, WIDTH + 1), 3)[0] == [
        f"size {HEIGHT} x {WIDTH} (height x width), expected the images' {HEIGHT} x {WIDTH + 1}"]
    assert check_label_map(png(label_map), (HEIGHT, WIDTH), 2) == (
        ["pixel values 3 are not classes 0..2 (classes.txt names 2)"], {2})
    sixteen_bit = label_map.astype(np.uint16) * 300
    assert check_label_map(png(sixteen_bit), (HEIGHT, WIDTH), 4)[0] == [
        "pixel values 600, 900 are not classes 0..4 (classes.txt names 4)"]
    colour = np.dstack([label_map] * 3)
    assert check_label_map(png(colour), (HEIGHT, WIDTH), 3)[0][0].startswith("has 3 channels")
    assert check_label_map(b"", (HEIGHT, WIDTH), 3) == (["empty file"], set())
    assert check_label_map(b"not a png", (HEIGHT, WIDTH), 3) == (["cannot be decoded as an image"], set())


def make_masks_dir(root, test=True):
    """Three training images (two with label maps) of classes 'scratch', 'dent', test images and their truth."""
    rng = np.random.default_rng(0)
    for folder in ("train_images", "train_masks", "test_images", "test_masks"):
        (root / folder).mkdir(parents=True)
    (root / "classes.txt").write_text("scratch\ndent\n")
    for index, suffix in enumerate((".png", ".jpg", ".bmp")):
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
        cv2.imwrite(str(root / "train_images" / f"plate{index}{suffix}"), image)
    for index, class_id in ((0, 1), (1, 2)):
        label_map = np.zeros((HEIGHT, WIDTH), np.uint8)
        label_map[5:9, 5 + index:20] = class_id
        cv2.imwrite(str(root / "train_masks" / f"plate{index}.png"), label_map)
    if test:
        cv2.imwrite(str(root / "test_images" / "new0.png"), rng.integers(0, 256, (HEIGHT, WIDTH)).astype(np.uint8))
        cv2.imwrite(str(root / "test_masks" / "new0.png"), np.zeros((HEIGHT, WIDTH), np.uint8))
    return root


def test_a_clean_masks_directory(tmp_path):
    root = make_masks_dir(tmp_path)
    assert check_masks_directory(root, workers=2) == (
        [], f"{root}: layout masks, 2 classes (scratch, dent), 3 train images of {HEIGHT} x {WIDTH}, 2 label maps, "
            "1 test images, test_masks/")


def test_every_masks_problem_is_reported(tmp_path):
    root = make_masks_dir(tmp_path)
    cv2.imwrite(str(root / "train_images" / "odd.png"), np.zeros((HEIGHT + 2, WIDTH, 3), np.uint8))
    cv2.imwrite(str(root / "train_masks" / "orphan.png"), np.zeros((HEIGHT, WIDTH), np.uint8))
    cv2.imwrite(str(root / "train_masks" / "plate2.png"), np.full((HEIGHT, WIDTH - 1), 5, np.uint8))
    (root / "train_masks" / "notes.txt").write_text("x")
    cv2.imwrite(str(root / "train_images" / "plate1.png"), np.zeros((HEIGHT, WIDTH, 3), np.uint8))  # a second stem
    (root / "classes.txt").write_text("scratch\ndent\nhole\n")
    cv2.imwrite(str(root / "test_masks" / "new9.png"), np.zeros((HEIGHT, WIDTH), np.uint8))
    problems, _ = check_masks_directory(root)
    assert sorted(problems) == sorted([
        f"train_images/odd.png: size {HEIGHT + 2} x {WIDTH} (height x width), expected {HEIGHT} x {WIDTH}",
        "train_images/plate1.png and plate1.jpg: two images of one stem would share the label map "
        "train_masks/plate1.png; rename one",
        "train_masks/notes.txt: not a PNG (label maps are single-channel PNGs named <image stem>.png)",
        "train_masks/orphan.png: a label map without an image (no train_images/orphan.*)",
        f"train_masks/plate2.png: size {HEIGHT} x {WIDTH - 1} (height x width), expected the images' "
        f"{HEIGHT} x {WIDTH}",
        "train_masks/plate2.png: pixel values 5 are not classes 0..3 (classes.txt names 3)",
        "class 3 (hole) is in no label map of train_masks/: no model can learn it; give it examples or remove it "
        "from classes.txt (renumbering the masks)",
        "test_masks/new9.png: a label map without an image (no test_images/new9.*)",
    ])


def test_a_missing_classes_file(tmp_path):
    root = make_masks_dir(tmp_path, test=False)
    (root / "classes.txt").unlink()
    problems, _ = check_masks_directory(root)
    assert problems[0] == "classes.txt is missing: write the class names, one a line, class 1 first"
    assert "train_masks/plate0.png: pixel values 1 are not classes 0..0 (classes.txt names 0)" in problems


def test_the_stage_names_the_layout(tmp_path, capsys, repo_root):
    root = make_masks_dir(tmp_path / "plates")
    config = str(repo_root / "configs" / "demo.yaml")
    assert main(["--config", config, "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"data: {root} (layout masks: ") and "data OK: " in out
    cv2.imwrite(str(root / "train_masks" / "plate2.png"), np.full((HEIGHT, WIDTH), 7, np.uint8))
    assert main(["--config", config, "--data", str(root)]) == 1
    assert "train_masks/plate2.png: pixel values 7 are not classes 0..2" in capsys.readouterr().err


def make_folders_dir(root, test="labelled"):
    """train/healthy/ (2 images) and train/defective/ (1), of different sizes, and a test/ folder."""
    rng = np.random.default_rng(1)
    for folder, count in (("train/healthy", 2), ("train/defective", 1)):
        (root / folder).mkdir(parents=True)
        for index in range(count):
            image = rng.integers(0, 256, (40 + index, 60, 3)).astype(np.uint8)
            cv2.imwrite(str(root / folder / f"part{index}.jpg"), image)
    if test == "labelled":
        (root / "test" / "defective").mkdir(parents=True)
        cv2.imwrite(str(root / "test" / "defective" / "new.png"), rng.integers(0, 256, (40, 60)).astype(np.uint8))
    elif test == "unlabelled":
        (root / "test").mkdir()
        cv2.imwrite(str(root / "test" / "new.png"), rng.integers(0, 256, (40, 60)).astype(np.uint8))
    return root


@pytest.mark.parametrize("test, described", [("labelled", "1 labelled test images"),
                                             ("unlabelled", "1 unlabelled test images")])
def test_a_clean_folders_directory(tmp_path, test, described):
    from severstal.stages.check_data import check_folders_directory

    root = make_folders_dir(tmp_path, test)
    assert check_folders_directory(root) == (
        [], f"{root}: layout folders, 2 classes (defective 1, healthy 2 training images), {described}")


def test_every_folders_problem_is_reported(tmp_path, capsys, repo_root):
    from severstal.stages.check_data import check_folders_directory

    root = make_folders_dir(tmp_path / "parts")
    (root / "train" / "empty").mkdir()
    (root / "train" / "loose.jpg").write_bytes((root / "train" / "healthy" / "part0.jpg").read_bytes())
    (root / "train" / "defective" / "copy.jpg").write_bytes((root / "train" / "healthy" / "part1.jpg").read_bytes())
    (root / "train" / "healthy" / "broken.jpg").write_bytes(b"junk")
    (root / "test" / "cracked").mkdir()
    cv2.imwrite(str(root / "test" / "cracked" / "x.png"), np.zeros((8, 8), np.uint8))
    problems, _ = check_folders_directory(root)
    assert problems == [
        "train/empty/ is missing or holds no images",
        "train/healthy/broken.jpg: cannot be decoded as an image",
        "train/loose.jpg: a file outside the class folders (put each image in train/<class name>/)",
        "test/cracked/: not a training class (defective, empty, healthy)",
        "byte-identical images: train/defective/copy.jpg, train/healthy/part1.jpg",
    ]
    single = make_folders_dir(tmp_path / "single", test=None)
    for image in (single / "train" / "defective").iterdir():
        image.unlink()
    (single / "train" / "defective").rmdir()
    assert check_folders_directory(single)[0] == [
        "train/ holds 1 class folder(s): a classifier needs at least two (for example train/healthy/ and "
        "train/defective/)"]
    assert main(["--config", str(repo_root / "configs" / "demo.yaml"), "--data", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"data: {root} (layout folders: ") and "check-data found 5 problems" in captured.err
