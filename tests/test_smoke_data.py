"""The smoke run's data subset: the pure selection, and ``severstal smoke-data`` end to end, re-runs and refusals."""

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal.core.subset import choose_training_images, images_per_class, labels_of
from severstal.infra.images import image_names
from severstal.infra.tables import read_labels, read_table
from severstal.stages import smoke_data

# a.jpg ... j.jpg: defects on a (3), c (1 and 3), e (2), f (3), h (4), i (1); b, d, g, j are defect-free.
# 0ghost.jpg has labels but no image file, and b.jpg an empty row (as in the 2019 layout).
LABELS = pd.DataFrame(
    [("0ghost.jpg", 1, "1 5"), ("0ghost.jpg", 2, "1 5"), ("a.jpg", 3, "1 5"), ("b.jpg", 1, ""),
     ("c.jpg", 1, "1 5"), ("c.jpg", 3, "9 5"), ("e.jpg", 2, "1 5"), ("f.jpg", 3, "1 5"), ("h.jpg", 4, "1 5"),
     ("i.jpg", 1, "1 5")], columns=["ImageId", "ClassId", "EncodedPixels"])
NAMES = [f"{letter}.jpg" for letter in "jihgfedcba"]  # any order


def jpgs(letters):
    return [f"{letter}.jpg" for letter in letters]


@pytest.mark.parametrize("count, expected", [
    (1, jpgs("c")),  # class 1 first
    (2, jpgs("ce")),  # classes 1 and 2
    (3, jpgs("ace")),  # class 3: the first image with it not yet chosen (c is)
    (4, jpgs("aceh")),  # every class
    (5, jpgs("abceh")),  # then defect-free images, by name ...
    (8, jpgs("abcdeghj")),  # ... until half are defect-free
    (9, jpgs("abcdefghj")),  # then the first remaining image of any kind
    (10, jpgs("abcdefghij")),
    (11, jpgs("abcdefghij")),  # fewer images than asked: all of them
])
def test_selection_covers_every_class_then_balances_defect_free_images(count, expected):
    assert choose_training_images(LABELS, NAMES, count) == expected


def test_selection_without_defects_takes_the_first_names():
    assert choose_training_images(LABELS.iloc[:0], NAMES, 3) == jpgs("abc")


def test_labels_of_keeps_the_chosen_images_non_empty_masks_sorted():
    chosen = labels_of(LABELS.iloc[::-1], jpgs("bc"))
    assert list(chosen.itertuples(index=False, name=None)) == [("c.jpg", 1, "1 5"), ("c.jpg", 3, "9 5")]
    assert images_per_class(LABELS, jpgs("aceh")) == {1: 1, 2: 1, 3: 2, 4: 1}


# ----------------------------------------------------------------------------- the command

TRAIN_CLASSES = {"t0.jpg": (3,), "t1.jpg": (), "t2.jpg": (1, 3), "t3.jpg": (2,), "t4.jpg": (), "t5.jpg": (4,),
                 "t6.jpg": (3,), "t7.jpg": ()}
TEST_CLASSES = {"s0.jpg": (1,), "s1.jpg": (), "s2.jpg": (3,), "s3.jpg": (4,)}
CHOSEN_TRAIN = ["t0.jpg", "t1.jpg", "t2.jpg", "t3.jpg", "t4.jpg", "t5.jpg"]  # classes 1, 2, 3, 4, two defect-free


def rle(image_id, class_id):
    return f"{class_id} {len(image_id)}"  # distinct per image and class; never decoded


def write_jpeg(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)


@pytest.fixture
def source(tmp_path):
    """A tiny source in Kaggle's layout: train.csv in the 2019 layout (every pair), test_labels.csv long."""
    root = tmp_path / "full"
    for folder, classes in (("train_images", TRAIN_CLASSES), ("test_images", TEST_CLASSES)):
        (root / folder).mkdir(parents=True)
        for seed, name in enumerate(classes):
            write_jpeg(root / folder / name, seed)
    legacy = [(f"{name}_{c}", rle(name, c) if c in classes else "") for name, classes in TRAIN_CLASSES.items()
              for c in (1, 2, 3, 4)]
    pd.DataFrame(legacy, columns=["ImageId_ClassId", "EncodedPixels"]).to_csv(root / "train.csv", index=False)
    long = [(name, c, rle(name, c)) for name, classes in TEST_CLASSES.items() for c in classes]
    pd.DataFrame(long, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(root / "test_labels.csv", index=False)
    return root


def run_stage(repo_root, source, out, *extra):
    return smoke_data.main(["--config", str(repo_root / "configs/demo.yaml"), "--source", str(source),
                            "--out", str(out), *extra])


def test_writes_the_chosen_images_and_their_labels_in_kaggles_layout(source, tmp_path, repo_root, capsys):
    out = tmp_path / "smoke"
    assert run_stage(repo_root, source, out, "--train", "6", "--test", "3") == 0
    printed = capsys.readouterr().out
    assert printed == (f"wrote 6 training images (class 1: 1, class 2: 1, class 3: 2, class 4: 1; 2 defect-free) "
                       f"and 3 test images from {source} to {out}\n")
    assert sorted(path.name for path in out.iterdir()) == [".smoke.json", "sample_submission.csv", "test_images",
                                                           "test_labels.csv", "train.csv", "train_images"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["full", "smoke"]  # no temporary leftovers
    chosen = {"train_images": CHOSEN_TRAIN, "test_images": ["s0.jpg", "s1.jpg", "s2.jpg"]}
    for folder, names in chosen.items():
        assert image_names(out / folder) == names
        for name in names:
            assert (out / folder / name).read_bytes() == (source / folder / name).read_bytes()
    text = (out / "train.csv").read_text()
    assert text.startswith("ImageId,ClassId,EncodedPixels\n")
    assert list(read_table(out / "train.csv").itertuples(index=False, name=None)) == [
        (name, c, rle(name, c)) for name in CHOSEN_TRAIN for c in TRAIN_CLASSES[name]]
    assert list(read_table(out / "test_labels.csv").itertuples(index=False, name=None)) == [
        ("s0.jpg", 1, rle("s0.jpg", 1)), ("s2.jpg", 3, rle("s2.jpg", 3))]
    assert (out / "sample_submission.csv").read_text() == (
        "ImageId,EncodedPixels,ClassId\ns0.jpg,1 409600,0\ns1.jpg,1 409600,0\ns2.jpg,1 409600,0\n")
    marker = json.loads((out / ".smoke.json").read_text())
    assert (marker["source"], marker["train"], marker["test"]) == (str(source.resolve()), 6, 3)
    assert marker["chosen"] == {"train": chosen["train_images"], "test": chosen["test_images"]}


def test_a_rerun_is_up_to_date_and_other_counts_rebuild(source, tmp_path, repo_root, capsys):
    out = tmp_path / "smoke"
    assert run_stage(repo_root, source, out, "--train", "6", "--test", "3") == 0
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    capsys.readouterr()
    assert run_stage(repo_root, source, out, "--train", "6", "--test", "3") == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "up to date" in printed
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == stamps
    assert run_stage(repo_root, source, out, "--train", "4", "--test", "3") == 0
    assert "wrote 4 training images" in capsys.readouterr().out
    assert image_names(out / "train_images") == ["t0.jpg", "t2.jpg", "t3.jpg", "t5.jpg"]
    assert json.loads((out / ".smoke.json").read_text())["train"] == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["full", "smoke"]


def test_counts_and_the_directory_come_from_the_config_and_data(source, tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (source / "test_labels.csv").unlink()
    assert smoke_data.main(["--config", str(repo_root / "configs/demo.yaml"), "--data", "data/smoke/full",
                            "--source", str(source), "--set", "smoke.test_images=9"]) == 0
    out = tmp_path / "data/smoke/full"
    assert image_names(out / "train_images") == sorted(TRAIN_CLASSES)  # 8 by default: all of them
    assert image_names(out / "test_images") == sorted(TEST_CLASSES)
    assert not (out / "test_labels.csv").exists()
    assert "4 test images (all the source has, 9 asked)" in capsys.readouterr().out


@pytest.mark.parametrize("missing, message", [
    ("", "does not exist"), ("train.csv", "no train.csv"), ("train_images", "no train_images/")])
def test_a_bad_source_writes_nothing(source, tmp_path, repo_root, capsys, missing, message):
    target = source / missing  # the source itself when missing is ""
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    assert run_stage(repo_root, source, tmp_path / "smoke", "--train", "6") == 1
    assert message in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == (["full"] if missing else [])


def test_without_test_images_other_training_images_become_the_scored_test_set(source, tmp_path, repo_root, capsys):
    shutil.rmtree(source / "test_images")
    (source / "test_labels.csv").unlink()
    out = tmp_path / "smoke"
    assert run_stage(repo_root, source, out, "--train", "6", "--test", "3") == 0
    assert "2 test images (other training images with their masks: the source has no test_images/)" \
        in capsys.readouterr().out
    assert image_names(out / "train_images") == CHOSEN_TRAIN
    assert image_names(out / "test_images") == ["t6.jpg", "t7.jpg"]
    assert (out / "test_images" / "t6.jpg").read_bytes() == (source / "train_images" / "t6.jpg").read_bytes()
    truth = pd.read_csv(out / "test_labels.csv")
    assert truth.values.tolist() == [["t6.jpg", 3, rle("t6.jpg", 3)]]
    assert run_stage(repo_root, source, out, "--train", "6", "--test", "3") == 0
    assert "up to date" in capsys.readouterr().out
    assert run_stage(repo_root, source, tmp_path / "none", "--train", "8") == 1  # nothing left to predict
    assert "nothing to predict" in capsys.readouterr().err


@pytest.mark.parametrize("inside", ["", "smoke", ".."])
def test_the_output_is_never_the_source_or_nested_with_it(source, repo_root, capsys, inside):
    before = sorted(str(path) for path in source.parent.rglob("*"))
    assert run_stage(repo_root, source, source / inside if inside else source) == 1
    assert "directory of its own" in capsys.readouterr().err
    assert sorted(str(path) for path in source.parent.rglob("*")) == before


def test_refuses_a_non_empty_foreign_directory(source, tmp_path, repo_root, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run_stage(repo_root, source, out) == 1
    assert "not empty" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("labels, names", [("train.csv", "train_images"),
                                           ("train_subset_rle.csv", "train_subset_images.csv")])
def test_real_labels_give_every_class_and_defect_free_images(sample_dir, labels, names):
    frame = read_labels(sample_dir / labels)
    image_ids = (image_names(sample_dir / names) if names == "train_images"
                 else pd.read_csv(sample_dir / names)["ImageId"].tolist())
    chosen = choose_training_images(frame, image_ids, 8)
    assert len(chosen) == 8 and chosen == sorted(chosen)
    assert all(count >= 1 for count in images_per_class(frame, chosen).values())
    assert set(chosen) - set(labels_of(frame, chosen)["ImageId"])  # defect-free images too
