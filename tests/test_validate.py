"""Submission-format checks and the validate stage."""

import io
import shutil

import pandas as pd
import pytest

from severstal.core.submission import check_submission
from severstal.infra.tables import expected_test_ids
from severstal.infra.tables import read_csv_text as read_submission
from severstal.stages.validate import main

IDS = ["a.jpg", "b.jpg"]


def frame_of(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


@pytest.mark.parametrize("text", [
    "ImageId,EncodedPixels,ClassId\na.jpg,1 409600,0\nb.jpg,1 409600,0\n",  # the official sample's form
    "ImageId,EncodedPixels,ClassId\na.jpg,1 3 10 2,1\na.jpg,,2\na.jpg,409599 2,4\nb.jpg,,3\n",
    "ImageId,ClassId,EncodedPixels\na.jpg,1,5 5\nb.jpg,0,\n",  # any column order
    "ImageId_ClassId,EncodedPixels\na.jpg_1,1 3\na.jpg_2,\nb.jpg_1,\nb.jpg_4,7 1\n",  # the 2019 layout
    " ImageId , EncodedPixels , ClassId \na.jpg, 1 2 ,1\nb.jpg,,1\n",  # stray blanks
])
def test_valid_submissions(text):
    assert check_submission(frame_of(text), IDS) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("ImageId,Pixels\na.jpg,1 2\n",
     ["header is ImageId,Pixels: expected ImageId,EncodedPixels,ClassId "
      "(or the 2019 layout ImageId_ClassId,EncodedPixels)"]),
    ("ImageId,EncodedPixels,ClassId,Extra\na.jpg,,1,x\n",
     ["header is ImageId,EncodedPixels,ClassId,Extra: expected ImageId,EncodedPixels,ClassId "
      "(or the 2019 layout ImageId_ClassId,EncodedPixels)"]),
    ("ImageId,EncodedPixels,ClassId\n",
     ["2 of 2 test images have no row: a.jpg, b.jpg", "the submission has no rows"]),
    ("ImageId,EncodedPixels,ClassId\na.jpg,,1\n", ["1 of 2 test images have no row: b.jpg"]),
    ("ImageId,EncodedPixels,ClassId\na.jpg,,1\nb.jpg,,1\nz.jpg,,1\n",
     ["1 images are not in the test set: z.jpg"]),
    ("ImageId,EncodedPixels,ClassId\na.jpg,,5\nb.jpg,,x\na.jpg,,\nb.jpg,,-1\nb.jpg,,2.5\n",
     ["line 2: ClassId '5' is not one of 0-4", "line 3: ClassId 'x' is not one of 0-4",
      "line 4: ClassId '' is not one of 0-4", "line 5: ClassId '-1' is not one of 0-4",
      "line 6: ClassId '2.5' is not one of 0-4"]),
    ("ImageId,EncodedPixels,ClassId\na.jpg,,1\nb.jpg,,1\na.jpg,1 2,1\nb.jpg,,2\nb.jpg,,2\n",
     ["line 4: duplicate row for (a.jpg, class 1)", "line 6: duplicate row for (b.jpg, class 2)"]),
    ("ImageId,EncodedPixels,ClassId\na.jpg,5 3 1 2,1\nb.jpg,1 5 3 2,2\na.jpg,0 2,3\nb.jpg,409600 2,4\n"
     "a.jpg,1 2 3,2\nb.jpg,1 -2,3\nb.jpg,1 x,1\n",
     ["line 2: invalid EncodedPixels for a.jpg: RLE runs are unsorted: run 2 starts at 1 but run 1 "
      "covers 5..7",
      "line 3: invalid EncodedPixels for b.jpg: RLE runs are overlapping: run 2 starts at 3 but run 1 "
      "covers 1..5",
      "line 4: invalid EncodedPixels for a.jpg: RLE start 0 is not positive (pixels are numbered from 1)",
      "line 5: invalid EncodedPixels for b.jpg: RLE run ends at pixel 409601, beyond the image's 409600 "
      "pixels",
      "line 6: invalid EncodedPixels for a.jpg: RLE has an odd number of values (3): it must be start/length "
      "pairs",
      "line 7: invalid EncodedPixels for b.jpg: RLE run length -2 is not positive",
      "line 8: invalid EncodedPixels for b.jpg: RLE value 'x' is not an integer"]),
    ("ImageId,EncodedPixels,ClassId\n,,1\na.jpg,,1\nb.jpg,,1\n", ["line 2: ImageId is empty"]),
    ("ImageId_ClassId,EncodedPixels\na.jpg_1,\nb.jpg,\nb.jpg_7,\n",
     ["line 3: ImageId_ClassId 'b.jpg' is not of the form <image>_<class>",
      "line 4: ClassId '7' is not one of 0-4"]),
])
def test_invalid_submissions(text, expected):
    assert check_submission(frame_of(text), IDS) == expected


def test_without_expected_images_only_rows_are_checked():
    assert check_submission(frame_of("ImageId,EncodedPixels,ClassId\nq.jpg,1 2,3\n"), None) == []


def test_typed_frame_is_accepted():
    frame = pd.DataFrame({"ImageId": IDS, "EncodedPixels": ["1 2", ""], "ClassId": [3, 1]})
    assert check_submission(frame, IDS) == []


def test_read_submission_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_submission(tmp_path / "empty.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00a,b\n\x80\x81,\x82\n")
    with pytest.raises(ValueError, match="not a readable CSV"):
        read_submission(tmp_path / "binary.csv")


def test_expected_test_ids(tmp_path):
    (tmp_path / "test_images").mkdir()
    for name in ("b.jpg", "a.jpg"):
        (tmp_path / "test_images" / name).write_bytes(b"")  # never opened: only names count
    (tmp_path / "sample.csv").write_text("ImageId_ClassId,EncodedPixels\nx.jpg_1,\nx.jpg_2,\nw.jpg_1,\n")
    assert expected_test_ids(images=tmp_path / "test_images") == (IDS, f"{tmp_path / 'test_images'}/")
    assert expected_test_ids(sample_submission=tmp_path / "sample.csv") == (["x.jpg", "w.jpg"],
                                                                             str(tmp_path / "sample.csv"))
    assert expected_test_ids(data_dir=tmp_path)[0] == IDS
    shutil.copy(tmp_path / "sample.csv", tmp_path / "sample_submission.csv")
    shutil.rmtree(tmp_path / "test_images")
    assert expected_test_ids(data_dir=tmp_path)[0] == ["x.jpg", "w.jpg"]


def test_stage(tmp_path, capsys, repo_root):
    images = tmp_path / "test_images"
    images.mkdir()
    names = [f"{index:03d}.jpg" for index in range(30)]
    for name in names:
        (images / name).write_bytes(b"")
    good = tmp_path / "good.csv"
    rows = {"ImageId": names, "EncodedPixels": ["1 5"] * 10 + [""] * 20, "ClassId": [1] * 5 + [3] * 25}
    pd.DataFrame(rows).to_csv(good, index=False)
    assert main([str(good), "--images", str(images)]) == 0
    assert capsys.readouterr().out == (
        f"{good} is valid: 30 rows, 30 images, 10 non-empty masks (class 1: 5, 2: 0, 3: 5, 4: 0); "
        f"covers all 30 test images of {images}/\n")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"ImageId": names, "EncodedPixels": ["5 1 1 1"] * 30, "ClassId": 1}).to_csv(bad, index=False)
    assert main([str(bad), "--images", str(images)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{bad} is not a valid submission (30 problems):"
    assert len(err) == 22 and err[-1] == "  ... and 10 more"
    config = ["--config", str(repo_root / "configs" / "demo.yaml"), "--data", str(tmp_path)]
    assert main([str(good), *config]) == 0  # test images from the data directory
    assert "covers all 30 test images" in capsys.readouterr().out
    assert main([str(tmp_path / "absent.csv"), "--images", str(images)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([str(good), "--images", str(tmp_path / "nothing")]) == 1
    assert "holds no images" in capsys.readouterr().err


def test_official_sample_submission_is_valid(sample_dir, capsys):
    sample = str(sample_dir / "sample_submission.csv")
    assert main([sample, "--sample-submission", sample]) == 0
    assert capsys.readouterr().out == (
        f"{sample} is valid: 5,506 rows, 5,506 images, 0 non-empty masks (class 1: 0, 2: 0, 3: 0, 4: 0); "
        f"covers all 5,506 test images of {sample}\n")


def test_real_masks_as_full_submission(sample_dir):
    """Real training RLEs in a 4-rows-per-image submission: valid; one dropped image is reported."""
    truth = pd.read_csv(sample_dir / "train_subset_rle.csv", dtype=str, keep_default_na=False)
    ids = sorted(pd.read_csv(sample_dir / "train_subset_images.csv", dtype=str)["ImageId"])
    rles = {(row.ImageId, int(row.ClassId)): row.EncodedPixels for row in truth.itertuples()}
    rows = [(image, rles.get((image, class_id), ""), class_id) for image in ids for class_id in (1, 2, 3, 4)]
    frame = pd.DataFrame(rows, columns=["ImageId", "EncodedPixels", "ClassId"]).astype(str)
    assert check_submission(frame, ids) == []
    assert check_submission(frame[frame["ImageId"] != ids[0]], ids) == [
        f"1 of {len(ids):,} test images have no row: {ids[0]}"]
