"""Data checks: image bytes, label frames, duplicates, bad_images and the check-data stage."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal.core.checks import check_image_bytes, check_label_frame, digest, find_duplicates
from severstal.core.labels import to_submission_layout
from severstal.infra.images import bad_images, image_names
from severstal.infra.tables import read_table
from severstal.stages.check_data import check_data_directory, main


def jpeg(value: int = 100, shape=(256, 1600)) -> bytes:
    """A uniform grey JPEG of ``shape``; ``value`` makes different files differ."""
    return cv2.imencode(".jpg", np.full(shape, value, np.uint8))[1].tobytes()


def png(shape) -> bytes:
    return cv2.imencode(".png", np.zeros(shape, np.uint8))[1].tobytes()


GOOD = jpeg()


@pytest.mark.parametrize(("data", "expected"), [
    (GOOD, []),
    (GOOD + b"\x00\x00\x00", []),  # zero padding after the end marker is harmless
    (png((256, 1600)), []),
    (b"", ["empty file"]),
    (GOOD[:-2], ["truncated: the JPEG has no end-of-image marker (FFD9)"]),
    (GOOD[: len(GOOD) // 2], ["truncated: the JPEG has no end-of-image marker (FFD9)"]),
    (b"not an image at all", ["cannot be decoded as an image"]),
    (GOOD[:2] + b"\x00" * 50 + GOOD[-2:], ["cannot be decoded as an image"]),
    (jpeg(shape=(128, 1600)), ["size 128 x 1600 (height x width), expected 256 x 1600"]),
    (png((256, 800)), ["size 256 x 800 (height x width), expected 256 x 1600"]),
])
def test_check_image_bytes(data, expected):
    assert check_image_bytes(data) == expected


def test_check_image_bytes_other_shape():
    assert check_image_bytes(jpeg(shape=(64, 400)), shape=(64, 400)) == []


def test_digest_and_duplicates():
    assert digest(b"abc") == digest(b"abc") != digest(b"abd")
    digests = {"c.jpg": "x", "a.jpg": "y", "b.jpg": "x", "d.jpg": "y", "e.jpg": "z"}
    assert find_duplicates(digests) == ["byte-identical images: a.jpg, d.jpg",
                                        "byte-identical images: b.jpg, c.jpg"]
    assert find_duplicates({"a.jpg": "x", "b.jpg": "y"}) == []


def test_image_names(tmp_path):
    for name in ("b.jpg", "a.JPG", "c.png", "notes.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    assert image_names(tmp_path) == ["a.JPG", "b.jpg", "c.png", "d.jpeg"]
    assert image_names(tmp_path / "missing") == []


def test_check_label_frame_reports_every_problem():
    frame = pd.DataFrame({
        "ImageId": ["a.jpg", "a.jpg", "b.jpg", "a.jpg", "gone.jpg", "b.jpg"],
        "ClassId": [1, 3, 5, 1, 2, 4],
        "EncodedPixels": ["1 10", "", "1 2", "5 5", "1 1", "10 5 3 2"],
    })
    assert check_label_frame(frame, ["a.jpg", "b.jpg"], "train.csv") == [
        "train.csv line 4 (b.jpg): ClassId 5 is not one of (1, 2, 3, 4)",
        "train.csv line 5 (a.jpg): duplicate row for class 1",
        "train.csv line 6 (gone.jpg): the image does not exist",
        "train.csv line 7 (b.jpg): invalid EncodedPixels for class 4: RLE runs are unsorted: run 2 starts at 3 "
        "but run 1 covers 10..14",
    ]


@pytest.mark.parametrize(("rle", "reason"), [
    ("409600 1", None),
    ("409600 2", "RLE run ends at pixel 409601, beyond the image's 409600 pixels"),
    ("0 3", "RLE start 0 is not positive (pixels are numbered from 1)"),
    ("1 5 3 2", "RLE runs are overlapping: run 2 starts at 3 but run 1 covers 1..5"),
    ("1 2 3", "RLE has an odd number of values (3): it must be start/length pairs"),
])
def test_check_label_frame_rle(rle, reason):
    frame = pd.DataFrame({"ImageId": ["a.jpg"], "ClassId": [2], "EncodedPixels": [rle]})
    prefix = "labels.csv line 2 (a.jpg): invalid EncodedPixels for class 2"
    expected = [] if reason is None else [f"{prefix}: {reason}"]
    assert check_label_frame(frame, ["a.jpg"], source="labels.csv") == expected


def make_data_dir(root: Path, train=3, test=2) -> Path:
    """A clean data directory of uniform images with distinct grey levels."""
    (root / "train_images").mkdir(parents=True)
    for index in range(train):
        (root / "train_images" / f"t{index}.jpg").write_bytes(jpeg(10 + 20 * index))
    labels = {"ImageId": ["t0.jpg", "t1.jpg"], "ClassId": [1, 3], "EncodedPixels": ["1 10", "300 20"]}
    pd.DataFrame(labels).to_csv(root / "train.csv", index=False)
    if test:
        (root / "test_images").mkdir()
        names = [f"s{index}.jpg" for index in range(test)]
        for index, name in enumerate(names):
            (root / "test_images" / name).write_bytes(jpeg(200 + 20 * index))
        pd.DataFrame({"ImageId": names, "EncodedPixels": "1 409600", "ClassId": 0}).to_csv(
            root / "sample_submission.csv", index=False)
    return root


def test_check_data_directory_clean(tmp_path):
    problems, summary = check_data_directory(make_data_dir(tmp_path), workers=2)
    assert problems == []
    assert summary == (f"{tmp_path}: 3 train images, 2 with defects (2 masks), 2 test images, "
                       "sample_submission.csv")


def test_check_data_directory_training_only(tmp_path):
    problems, summary = check_data_directory(make_data_dir(tmp_path, test=0))
    assert problems == []
    assert summary == f"{tmp_path}: 3 train images, 2 with defects (2 masks)"


def test_check_data_directory_reports_all_problems(tmp_path):
    root = make_data_dir(tmp_path)
    (root / "train_images" / "t2.jpg").write_bytes(jpeg(10)[:-100])  # truncated
    (root / "train_images" / "copy.jpg").write_bytes(jpeg(30))  # same bytes as t1.jpg
    (root / "train_images" / "small.jpg").write_bytes(jpeg(90, shape=(255, 1600)))
    (root / "test_images" / "s1.jpg").write_bytes(b"")
    with open(root / "train.csv", "a") as handle:
        handle.write("missing.jpg,2,1 5\nt0.jpg,1,5 5\n")
    pd.DataFrame({"ImageId": ["s0.jpg"], "EncodedPixels": [""], "ClassId": [6]}).to_csv(
        root / "sample_submission.csv", index=False)
    problems, _ = check_data_directory(root)
    assert problems == [
        "train_images/small.jpg: size 255 x 1600 (height x width), expected 256 x 1600",
        "train_images/t2.jpg: truncated: the JPEG has no end-of-image marker (FFD9)",
        "train.csv line 4 (missing.jpg): the image does not exist",
        "train.csv line 5 (t0.jpg): duplicate row for class 1",
        "test_images/s1.jpg: empty file",
        "sample_submission.csv: 1 of 2 test images have no row: s1.jpg",
        "sample_submission.csv line 2: ClassId '6' is not one of 0-4",
        "byte-identical images: train_images/copy.jpg, train_images/t1.jpg",
    ]


@pytest.mark.parametrize(("setup", "expected"), [
    (lambda root: (root / "train.csv").unlink(), ["train.csv is missing"]),
    (lambda root: shutil.rmtree(root / "train_images"),
     ["train_images/ is missing or holds no images", "train.csv line 2 (t0.jpg): the image does not exist",
      "train.csv line 3 (t1.jpg): the image does not exist"]),
    (lambda root: (root / "train.csv").write_text("Image,Class\na.jpg,1\n"),
     ["train.csv: unexpected columns ['Image', 'Class']: expected ImageId,ClassId,EncodedPixels (any order) "
      "or the 2019 layout ImageId_ClassId,EncodedPixels"]),
])
def test_check_data_directory_missing_parts(tmp_path, setup, expected):
    root = make_data_dir(tmp_path, test=0)
    setup(root)
    assert check_data_directory(root)[0] == expected


def test_bad_images(tmp_path):
    root = make_data_dir(tmp_path)
    (root / "train_images" / "t1.jpg").write_bytes(jpeg(30)[:1000])
    (root / "test_images" / "s0.jpg").write_bytes(b"junk")
    assert bad_images(root / "train_images", progress=False) == {
        "t1.jpg": "truncated: the JPEG has no end-of-image marker (FFD9)"}
    assert bad_images(root / "test_images", progress=False) == {"s0.jpg": "cannot be decoded as an image"}
    assert bad_images(root / "train_images", ["t0.jpg"], progress=False) == {}  # only the names asked for
    assert bad_images(root / "train_images", shape=(128, 800), progress=False)["t0.jpg"].startswith("size 256 x 1600")


def test_stage_exit_codes(tmp_path, capsys, repo_root):
    root = make_data_dir(tmp_path / "clean")
    config = str(repo_root / "configs" / "demo.yaml")
    assert main(["--config", config, "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"data: {root} (layout kaggle: 4 classes 1, 2, 3, 4; images 256 x 1600)\n") and \
        "\ndata OK: " in out
    for index in range(60):
        (root / "train_images" / f"bad{index:02d}.jpg").write_bytes(f"x{index}".encode())
    assert main(["--config", config, "--data", str(root)]) == 1
    err = capsys.readouterr().err
    assert "check-data found 60 problems" in err
    assert "train_images/bad19.jpg: cannot be decoded" in err and "bad20.jpg" not in err  # the first 20
    assert "... and 40 more (--all lists them)" in err
    assert main(["--config", config, "--data", str(root), "--all"]) == 1
    assert "bad59.jpg" in capsys.readouterr().err
    assert main(["--config", config, "--data", str(tmp_path / "absent")]) == 1
    assert "does not exist" in capsys.readouterr().err


def real_data_dir(sample_dir: Path, root: Path) -> Path:
    shutil.copytree(sample_dir / "train_images", root / "train_images")
    shutil.copy(sample_dir / "train.csv", root / "train.csv")
    return root


def test_real_sample_passes(sample_dir, tmp_path, capsys, repo_root):
    root = real_data_dir(sample_dir, tmp_path / "real")
    assert main(["--config", str(repo_root / "configs" / "default.yaml"), "--data", str(root)]) == 0
    assert capsys.readouterr().out == (f"data: {root} (layout kaggle: 4 classes 1, 2, 3, 4; images 256 x 1600)\n"
                                       f"data OK: {root}: 16 train images, 14 with defects (17 masks)\n")
    assert bad_images(root / "train_images", progress=False) == {}


def test_real_sample_legacy_layout_passes(sample_dir, tmp_path):
    root = real_data_dir(sample_dir, tmp_path / "real")
    frame = read_table(root / "train.csv")
    to_submission_layout(frame, "legacy").to_csv(root / "train.csv", index=False)
    assert check_data_directory(root) == ([], f"{root}: 16 train images, 14 with defects (17 masks)")


def test_real_sample_truncated_image_found(sample_dir, tmp_path):
    root = real_data_dir(sample_dir, tmp_path / "real")
    path = root / "train_images" / "0046839bd.jpg"
    path.write_bytes(path.read_bytes()[:-5000])
    assert check_data_directory(root)[0] == [
        "train_images/0046839bd.jpg: truncated: the JPEG has no end-of-image marker (FFD9)"]
