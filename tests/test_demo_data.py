"""The ``severstal demo-data`` stage: layout, formats, re-runs, refusals and interrupted runs."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal.core import synthetic
from severstal.core.rle import decode, encode
from severstal.infra.tables import read_table
from severstal.stages import demo_data

SMALL = ["--train", "12", "--test", "6", "--seed", "3"]


@pytest.fixture
def demo_dir(tmp_path, repo_root):
    """A small demo set written by the stage (12 train, 6 test images)."""
    out = tmp_path / "demo"
    assert demo_data.main(["--config", str(repo_root / "configs/demo.yaml"), "--out", str(out), *SMALL]) == 0
    return out


def run_stage(repo_root, out, *extra):
    return demo_data.main(["--config", str(repo_root / "configs/demo.yaml"), "--out", str(out), *extra])


def test_writes_kaggles_layout_and_nothing_else(demo_dir):
    names = sorted(p.name for p in demo_dir.iterdir())
    assert names == [".demo.json", "sample_submission.csv", "test_images", "test_labels.csv", "train.csv",
                     "train_images"]
    assert len(list((demo_dir / "train_images").glob("*.jpg"))) == 12
    assert len(list((demo_dir / "test_images").glob("*.jpg"))) == 6
    assert sorted(p.name for p in demo_dir.parent.iterdir()) == ["demo"]  # no temporary leftovers
    assert json.loads((demo_dir / ".demo.json").read_text()) == {
        "generator": "severstal demo-data", "version": demo_data.VERSION, "train": 12, "test": 6, "seed": 3}


def test_images_are_the_planned_grey_jpegs(demo_dir):
    plan = synthetic.plan_dataset(12, 6, seed=3)
    for split, folder in (("train", "train_images"), ("test", "test_images")):
        assert sorted(p.name for p in (demo_dir / folder).iterdir()) == [s.image_id for s in plan[split]]
    spec = plan["train"][0]
    image = cv2.imread(str(demo_dir / "train_images" / spec.image_id))
    assert image.shape == (256, 1600, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    expected, _ = synthetic.render(spec)
    assert abs(image.astype(int) - expected.astype(int)).mean() < 3  # only JPEG's loss


@pytest.mark.parametrize("split, labels", [("train", "train.csv"), ("test", "test_labels.csv")])
def test_label_files_hold_exactly_the_rendered_masks(demo_dir, split, labels):
    text = (demo_dir / labels).read_text()
    assert text.startswith("ImageId,ClassId,EncodedPixels\n") and "\r" not in text
    table = read_table(demo_dir / labels)
    assert (table["EncodedPixels"] != "").all()  # rows only for non-empty masks
    assert list(zip(table["ImageId"], table["ClassId"], strict=True)) == sorted(
        zip(table["ImageId"], table["ClassId"], strict=True))
    expected = []
    for spec in synthetic.plan_dataset(12, 6, seed=3)[split]:
        _, masks = synthetic.render(spec)
        expected += [(spec.image_id, c, encode(masks[..., c - 1])) for c in spec.classes]
    assert list(table.itertuples(index=False, name=None)) == expected
    for rle in table["EncodedPixels"]:
        assert encode(decode(rle)) == rle


def test_sample_submission_is_like_the_official_one(demo_dir):
    ids = sorted(p.name for p in (demo_dir / "test_images").iterdir())
    expected = "ImageId,EncodedPixels,ClassId\n" + "".join(f"{i},1 409600,0\n" for i in ids)
    assert (demo_dir / "sample_submission.csv").read_text() == expected


def test_train_and_test_ids_are_disjoint(demo_dir):
    train = {p.name for p in (demo_dir / "train_images").iterdir()}
    assert set(pd.read_csv(demo_dir / "train.csv")["ImageId"]) <= train
    test = {p.name for p in (demo_dir / "test_images").iterdir()}
    assert train.isdisjoint(test)


def test_rerun_is_a_quick_no_op(demo_dir, repo_root, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*")}
    capsys.readouterr()
    assert run_stage(repo_root, demo_dir, *SMALL) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "already complete" in out
    assert {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*")} == stamps


def test_other_settings_replace_an_earlier_demo_set(demo_dir, repo_root):
    assert run_stage(repo_root, demo_dir, "--train", "4", "--test", "2", "--seed", "3") == 0
    assert len(list((demo_dir / "train_images").iterdir())) == 4
    assert json.loads((demo_dir / ".demo.json").read_text())["train"] == 4
    assert sorted(p.name for p in demo_dir.parent.iterdir()) == ["demo"]


def test_refuses_a_non_empty_foreign_directory(tmp_path, repo_root, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run_stage(repo_root, out, *SMALL) == 1
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_refuses_an_incomplete_demo_set(demo_dir, repo_root):
    next((demo_dir / "train_images").iterdir()).unlink()
    assert run_stage(repo_root, demo_dir, *SMALL) == 1


def test_an_empty_existing_directory_is_filled(tmp_path, repo_root):
    out = tmp_path / "empty"
    out.mkdir()
    assert run_stage(repo_root, out, "--train", "2", "--test", "1") == 0
    assert (out / "train.csv").is_file() and len(list((out / "train_images").iterdir())) == 2


def test_defaults_come_from_the_config(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(repo_root / "configs/demo.yaml")
    assert demo_data.main(["--config", config, "--set", "demo.train=3", "--set", "demo.test=2"]) == 0
    marker = json.loads((tmp_path / "data/demo/.demo.json").read_text())
    assert (marker["train"], marker["test"], marker["seed"]) == (3, 2, 0)


@pytest.mark.parametrize("option", [["--train", "0"], ["--test", "0"], ["--seed", "-1"]])
def test_bad_counts_are_user_errors(tmp_path, repo_root, option, capsys):
    assert run_stage(repo_root, tmp_path / "x", *SMALL, *option) == 1
    assert "must be" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_interrupted_run_leaves_nothing(tmp_path, repo_root, monkeypatch):
    rendered = []

    def interrupt_after_three(spec):
        if len(rendered) == 3:
            raise KeyboardInterrupt
        rendered.append(spec)
        return synthetic.generate_image(0, spec.classes)

    monkeypatch.setattr(demo_data.synthetic, "render", interrupt_after_three)
    assert run_stage(repo_root, tmp_path / "demo", *SMALL) == 130
    assert list(tmp_path.iterdir()) == []


def test_the_stage_does_not_import_tensorflow():
    code = "import sys, severstal.stages.demo_data; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_masks_layout_demo_set(tmp_path, repo_root, capsys):
    from severstal.core import synthetic_layouts
    from severstal.stages.check_data import check_masks_directory

    out = tmp_path / "plates"
    assert run_stage(repo_root, out, "--layout", "masks", *SMALL) == 0
    assert sorted(p.name for p in out.iterdir()) == [".demo.json", "classes.txt", "test_images", "test_masks",
                                                      "train_images", "train_masks"]
    assert (out / "classes.txt").read_text() == "scratch\ndent\nstain\n"
    assert json.loads((out / ".demo.json").read_text())["layout"] == "masks"
    plans = synthetic_layouts.plan_plates(12, 3, 0)
    stems = [f"plate-train-{index:04d}" for index in range(12)]
    assert sorted(p.name for p in (out / "train_images").iterdir()) == [f"{stem}.jpg" for stem in stems]
    defective = [stem for stem, classes in zip(stems, plans, strict=True) if classes]
    assert sorted(p.stem for p in (out / "train_masks").iterdir()) == defective
    for stem, classes in zip(stems, plans, strict=True):
        image = cv2.imread(str(out / "train_images" / f"{stem}.jpg"))
        assert image.shape == (*synthetic_layouts.PLATE_SHAPE, 3)
        if classes:
            label_map = cv2.imread(str(out / "train_masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            _, expected = synthetic_layouts.plate(3, 0, stems.index(stem), classes)
            assert label_map.dtype == "uint8" and (label_map == expected).all()  # PNG: lossless
    problems, summary = check_masks_directory(out)
    assert problems == [] and "3 classes (scratch, dent, stain), 12 train images of 192 x 320" in summary
    capsys.readouterr()
    assert run_stage(repo_root, out, "--layout", "masks", *SMALL) == 0
    assert "already complete" in capsys.readouterr().out


def test_folders_layout_demo_set(tmp_path, repo_root):
    from severstal.core import synthetic_layouts
    from severstal.stages.check_data import check_folders_directory

    out = tmp_path / "parts"
    assert run_stage(repo_root, out, "--layout", "folders", *SMALL) == 0
    labels = synthetic_layouts.plan_parts(12, 3, 0)
    for label in ("healthy", "defective"):
        assert len(list((out / "train" / label).iterdir())) == labels.count(label)
    assert sum(len(list((out / "test" / label).iterdir())) for label in ("healthy", "defective")) == 6
    assert check_folders_directory(out)[0] == []


def test_plates_and_parts_are_seeded_and_labelled_as_planned():
    from severstal.core import synthetic_layouts

    plans = synthetic_layouts.plan_plates(300, 0, 0)
    assert 0.25 < sum(1 for p in plans if not p) / len(plans) < 0.42
    assert {c for p in plans for c in p} == {1, 2, 3}
    for index, classes in enumerate(plans[:40]):
        image, label_map = synthetic_layouts.plate(0, 0, index, classes)
        again, _ = synthetic_layouts.plate(0, 0, index, classes)
        assert (image == again).all() and image.dtype == "uint8" and label_map.shape == image.shape[:2]
        present = set(label_map[label_map > 0].tolist())
        assert present <= set(classes) and bool(present) == bool(classes)  # a higher class may cover a lower one
    labels = synthetic_layouts.plan_parts(300, 0, 0)
    assert 0.35 < labels.count("defective") / 300 < 0.55
    healthy = synthetic_layouts.part_image(np.random.default_rng(5), False)
    defective = synthetic_layouts.part_image(np.random.default_rng(5), True)
    assert healthy.shape == (*synthetic_layouts.PART_SHAPE, 3) and (healthy != defective).any()
