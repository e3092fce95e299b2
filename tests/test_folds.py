"""Multilabel stratified folds: the pure split, its balance at full scale, and the folds stage."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from severstal.core.splits import FOLD_COLUMNS, PRESENCE_COLUMNS, fold_counts, make_folds
from severstal.stages import folds as folds_stage


def presence(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ImageId", *PRESENCE_COLUMNS])


def eight_images() -> pd.DataFrame:
    """Four class-1 images (two of them also class 3), two class-3 only, two defect-free; unsorted."""
    return presence([
        ("h.jpg", 1, 0, 0, 0), ("a.jpg", 1, 0, 0, 0), ("c.jpg", 1, 0, 1, 0), ("f.jpg", 1, 0, 1, 0),
        ("b.jpg", 0, 0, 1, 0), ("g.jpg", 0, 0, 1, 0), ("d.jpg", 0, 0, 0, 0), ("e.jpg", 0, 0, 0, 0),
    ])


def test_make_folds_assigns_every_image_once_sorted():
    folds = make_folds(eight_images(), k=2, seed=0)
    assert list(folds.columns) == FOLD_COLUMNS
    assert folds["ImageId"].tolist() == sorted(eight_images()["ImageId"])
    assert sorted(folds["fold"].unique()) == [0, 1]
    labels = eight_images().set_index("ImageId").loc[folds["ImageId"]]
    assert np.array_equal(folds[PRESENCE_COLUMNS].to_numpy(), labels.to_numpy())


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_make_folds_balances_each_class_in_a_tiny_case(seed):
    counts = fold_counts(make_folds(eight_images(), k=2, seed=seed)).drop(columns="images")
    # class 1 four times, class 3 four times, no defect twice: exactly half of each in each fold
    assert counts.loc[0].tolist() == [2, 0, 2, 0, 1]
    assert counts.loc[1].tolist() == [2, 0, 2, 0, 1]
    assert counts.loc["total"].tolist() == [4, 0, 4, 0, 2]


def test_make_folds_is_deterministic_and_ignores_row_order():
    first = make_folds(eight_images(), k=2, seed=7)
    shuffled = eight_images().sample(frac=1.0, random_state=3)
    assert first.equals(make_folds(shuffled, k=2, seed=7))
    assert first.equals(make_folds(eight_images(), k=2, seed=7))


def test_fold_counts_by_hand():
    folds = pd.DataFrame({
        "ImageId": ["a", "b", "c"], "fold": [0, 1, 1],
        "has_1": [1, 0, 0], "has_2": [0, 1, 0], "has_3": [1, 1, 0], "has_4": [0, 0, 0],
    })
    counts = fold_counts(folds)
    assert list(counts.columns) == ["images", "class 1", "class 2", "class 3", "class 4", "no defect"]
    assert counts.index.tolist() == [0, 1, "total"]
    assert counts.to_numpy().tolist() == [[1, 1, 0, 1, 0, 0], [2, 0, 1, 1, 0, 1], [3, 1, 1, 2, 0, 1]]


@pytest.mark.parametrize(
    ("table", "k", "seed", "message"),
    [
        (eight_images().drop(columns=["has_1", "has_2", "has_3", "has_4"]), 2, 0, "lacks columns: it needs ImageId"),
        (pd.concat([eight_images(), eight_images().iloc[:1]]), 2, 0, "image h.jpg appears 2 times"),
        (eight_images().assign(has_2=2), 2, 0, "column has_2 must hold 0 or 1"),
        (eight_images(), 1, 0, "at least 2, got 1"),
        (eight_images(), 2.0, 0, "at least 2, got 2.0"),
        (eight_images(), 9, 0, "cannot make 9 folds of 8 images"),
        (eight_images(), 2, -1, "non-negative integer, got -1"),
    ],
)
def test_make_folds_rejects_bad_input(table, k, seed, message):
    with pytest.raises(ValueError, match=message):
        make_folds(table, k, seed)


@pytest.mark.parametrize(("k", "seed"), [(5, 42), (2, 42), (5, 0), (3, 1), (10, 7)])
def test_full_scale_folds_are_balanced_within_one_image(sample_dir, k, seed):
    labels = pd.read_csv(sample_dir / "train_labels_all.csv")
    assert len(labels) == 12568
    folds = make_folds(labels, k, seed)
    counts = fold_counts(folds).drop(index="total").drop(columns="images")  # (k, 5)
    totals = counts.sum()
    assert totals.tolist() == [897, 247, 5150, 801, 5902]
    bound = np.maximum(1.0, 0.01 * totals / k)
    assert (counts.sub(totals / k).abs() <= bound).all().all(), counts
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.02 * len(folds) / k  # sizes are not stratified: near enough


# ---- the folds stage -------------------------------------------------------------------------

LABELS = {  # image -> classes present
    "img00.jpg": [1], "img01.jpg": [1], "img02.jpg": [1, 3], "img03.jpg": [3], "img04.jpg": [3],
    "img05.jpg": [3, 4], "img06.jpg": [4], "img07.jpg": [2], "img08.jpg": [2], "img09.jpg": [],
    "img10.jpg": [], "img11.jpg": [],
}


def write_data(directory, labels=LABELS):
    (directory / "train_images").mkdir(parents=True, exist_ok=True)
    for name in labels:
        (directory / "train_images" / name).write_bytes(b"not opened")
    rows = [(name, class_id, f"{class_id} 5") for name, classes in labels.items() for class_id in classes]
    pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(directory / "train.csv", index=False)


@pytest.fixture
def workspace(tmp_path, monkeypatch, repo_root):
    """A data directory and a command line runner, in a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path / "data")

    def run(*extra):
        argv = ["--config", str(repo_root / "configs" / "demo.yaml"), "--data", "data", "--out", "f.csv", *extra]
        return folds_stage.main(argv)

    return tmp_path, run


def test_folds_stage_writes_folds_and_config_then_is_a_no_op(workspace, capsys):
    directory, run = workspace
    assert run() == 0
    written = pd.read_csv(directory / "f.csv")
    assert list(written.columns) == FOLD_COLUMNS
    assert written["ImageId"].tolist() == sorted(LABELS)
    assert sorted(written["fold"].unique()) == [0, 1]  # demo.yaml: folds.k = 2
    assert written.set_index("ImageId").loc["img05.jpg", PRESENCE_COLUMNS].tolist() == [0, 0, 1, 1]
    saved = yaml.safe_load((directory / "f.config.yaml").read_text())  # the resolved config
    assert saved["folds"] == {"k": 2, "seed": 42} and saved["data"]["folds_file"] == "f.csv"
    assert saved["seg"]["epochs"] == 18
    output = capsys.readouterr().out
    assert "wrote f.csv: 12 images in 2 folds (seed 42)" in output and "no defect" in output

    modified = (directory / "f.csv").stat().st_mtime_ns
    assert run() == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "folds: f.csv is up to date (2 folds, seed 42, 12 images)"
    assert (directory / "f.csv").stat().st_mtime_ns == modified
    assert sorted(p.name for p in directory.iterdir()) == ["data", "f.config.yaml", "f.csv"]  # no temporaries, no lock


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--k", "3"), "made with a different config:\n  folds.k: 2 -> 3"),
        (("--seed", "5"), "folds.seed: 42 -> 5"),
        (("--set", "folds.seed=5"), "folds.seed: 42 -> 5"),
    ],
)
def test_folds_stage_refuses_a_different_config_unless_forced(workspace, capsys, change, message):
    directory, run = workspace
    assert run() == 0
    before = (directory / "f.csv").read_text()
    capsys.readouterr()
    assert run(*change) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: the folds file f.csv was made with a different config")
    assert re.search(message, error) and "--force" in error
    assert (directory / "f.csv").read_text() == before
    assert run(*change, "--force") == 0
    assert run(*change) == 0  # now up to date with the new config


def test_folds_stage_keys_that_do_not_shape_folds_keep_them(workspace, capsys):
    directory, run = workspace
    assert run() == 0
    before = (directory / "f.csv").read_text()
    capsys.readouterr()
    assert run("--set", "seg.epochs=2", "--set", "inference.tta=[none]") == 0
    assert "is up to date" in capsys.readouterr().out
    assert (directory / "f.csv").read_text() == before


def test_folds_stage_remakes_folds_for_a_changed_image_list(workspace, capsys):
    directory, run = workspace
    assert run() == 0
    capsys.readouterr()
    write_data(directory / "data", {**LABELS, "img12.jpg": [3]})
    assert run() == 0
    assert ("the data lack 0 of its 12 images and it lacks 1 of the data's 13: making the folds again"
            in capsys.readouterr().out)
    assert len(pd.read_csv(directory / "f.csv")) == 13


def test_folds_stage_remakes_folds_for_changed_labels(workspace, capsys):
    directory, run = workspace
    assert run() == 0
    (directory / "f.config.yaml").unlink()  # a file without its saved config is compared on its content
    capsys.readouterr()
    write_data(directory / "data", {**LABELS, "img09.jpg": [2]})
    assert run() == 0
    assert "1 class labels differ from the data's train.csv: making the folds again" in capsys.readouterr().out
    assert pd.read_csv(directory / "f.csv").set_index("ImageId").loc["img09.jpg", "has_2"] == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_images", "no training images in data/train_images"),
        ("no_labels", "data/train.csv does not exist"),
        ("bad_labels", "cannot read the training labels file data/train.csv: unexpected columns"),
        ("too_many_folds", "cannot make 20 folds of 12 images"),
    ],
)
def test_folds_stage_reports_bad_data_clearly(workspace, capsys, damage, message):
    directory, run = workspace
    extra = ()
    if damage == "no_images":
        for path in (directory / "data" / "train_images").iterdir():
            path.unlink()
    elif damage == "no_labels":
        (directory / "data" / "train.csv").unlink()
    elif damage == "bad_labels":
        (directory / "data" / "train.csv").write_text("a,b\n1,2\n")
    else:
        extra = ("--k", "20")
    assert run(*extra) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert not (directory / "f.csv").exists()
