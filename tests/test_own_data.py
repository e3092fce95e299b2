"""Own data (issue 12): the masks and folders layouts through every stage, and their pure parts by hand.

Two session fixtures run demo-data, folds, train (1 epoch), tune and predict on tiny demo sets of the
masks layout (plates, 3 classes) and the folders layout (parts, 2 classes); the tests read their outputs,
export them and check that ``severstal.Predictor`` gives what predict gave (by tiles for a larger image).
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal import cli
from severstal.core.classification import classification_scores, confusion_matrix, majority_class, predicted_classes
from severstal.core.labels import label_map_rows
from severstal.core.postprocess import label_map_of, one_hot
from severstal.core.rle import decode
from severstal.infra.artifacts import Paths
from severstal.infra.config import load_config
from severstal.infra.label_maps import read_label_maps, write_label_map

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "configs" / "demo.yaml"
CONFIG = f"""inherit: {DEMO}
experiment: own
data:
  dir: data
  folds_file: folds/own.csv
cls:
  epochs: 1
  batch_size: 4
seg:
  epochs: 1
  batch_size: 4
inference:
  batch_size: 4
  tta: [none, hflip]
"""


def severstal(*argv) -> int:
    return cli.main([str(a) for a in argv])


def run_workflow(root: Path, layout: str, kinds: tuple[str, ...]) -> Path:
    (root / "config.yaml").write_text(CONFIG)
    steps = [("demo-data", "--layout", layout, "--out", "data", "--train", 12, "--test", 6), ("check-data",),
             ("folds",), ("eda",), *(("train", "--model", kind, "--fold", "all") for kind in kinds), ("tune",),
             ("predict",), ("report",), ("show", "--best-worst", 1)]
    for step in steps:
        assert severstal(step[0], "--config", "config.yaml", *step[1:]) == 0, step
    return root


@pytest.fixture(scope="session")
def masks_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        run_workflow(root, "masks", ("seg",))  # no classifier: tune goes without the gate
    return root


@pytest.fixture(scope="session")
def folders_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        run_workflow(root, "folders", ("cls",))
    return root


# ----------------------------------------------------------------------------- by hand

def test_overlapping_classes_go_to_the_most_probable():
    masks = np.zeros((2, 3, 3), np.uint8)
    masks[0, 0, 0] = masks[0, 0, 2] = 1  # classes 1 and 3 overlap: 3 is more probable
    masks[1, 2, 1] = 1
    masks[0, 1, 0] = masks[0, 1, 1] = 1  # a tie: the lower class number
    probabilities = np.zeros((2, 3, 3), np.float32)
    probabilities[0, 0] = [0.6, 0.1, 0.9]
    probabilities[0, 1] = [0.7, 0.7, 0.0]
    probabilities[1, 2] = [0.9, 0.8, 0.1]  # class 1 is more probable but not set
    np.testing.assert_array_equal(label_map_of(masks, probabilities), [[3, 1, 0], [0, 0, 2]])
    with pytest.raises(ValueError, match="both be"):
        label_map_of(masks, probabilities[..., :2])


def test_label_map_rows_and_files_round_trip(tmp_path):
    label_map = np.zeros((4, 5), np.uint8)
    label_map[1:3, 0] = 2
    label_map[0, 4] = 1
    rows = label_map_rows("a.jpg", label_map, (1, 2, 3))
    assert rows == [("a.jpg", 1, "17 1"), ("a.jpg", 2, "2 2"), ("a.jpg", 3, "")]  # column-major, 1-indexed
    assert (decode(rows[1][2], (4, 5)) == (label_map == 2)).all()
    write_label_map(tmp_path / "a.png", label_map)
    assert list(tmp_path.iterdir()) == [tmp_path / "a.png"]  # no temporary left
    frame = read_label_maps(tmp_path, ["a.jpg", "b.jpg"], (1, 2, 3))
    assert frame.values.tolist() == [list(r) for r in rows] + [["b.jpg", c, ""] for c in (1, 2, 3)]


def test_classification_scores_by_hand():
    truth, predicted = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 1]
    np.testing.assert_array_equal(confusion_matrix(truth, predicted, 3), [[2, 1, 0], [1, 1, 0], [0, 1, 0]])
    scores = classification_scores(truth, predicted, ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(3 / 6)
    assert scores["classes"]["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                      "f1": pytest.approx(2 / 3), "support": 3}
    assert scores["classes"]["b"]["precision"] == pytest.approx(1 / 3) and scores["classes"]["b"]["recall"] == 0.5
    assert scores["classes"]["c"] == {"precision": None, "recall": 0.0, "f1": None, "support": 1}
    assert majority_class([3, 5, 5]) == 1 and predicted_classes(np.array([[0.2, 0.8], [0.5, 0.5]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([3], [0], 3)


@pytest.mark.parametrize("shape, expected", [
    ((256, 1600), {"cls": (0.125, None, 16), "seg": (0.25, [64, 128], 8), "areas": 1000}),  # Severstal: unchanged
    ((192, 320), {"cls": (0.6455, None, 16), "seg": (1.0, [64, 128], 8), "areas": 150}),  # 6.67x fewer pixels
    ((64, 100), {"cls": (1.0, None, 16), "seg": (1.0, [64, 96], 11), "areas": 16}),  # capped at 1, crop cut
])
def test_demo_sizes_adapt_to_the_data(tmp_path, shape, expected):
    data = tmp_path / "plates"
    (data / "train_images").mkdir(parents=True)
    (data / "classes.txt").write_text("scratch\ndent\n")
    cv2.imwrite(str(data / "train_images" / "a.png"), np.zeros((*shape, 3), np.uint8))
    config = load_config(DEMO, data=data)
    assert config.data.shape == shape and config.data.classes == ("scratch", "dent")
    for kind in ("cls", "seg"):
        section = config.model(kind)
        crop = None if section.crop is None else list(section.crop)
        assert (section.scale, crop, section.batch_size) == expected[kind]
    assert config.tune.min_areas[10] == expected["areas"]  # 1000 pixels at 256 x 1600
    assert load_config(DEMO, ["seg.scale=0.5"], data=data).seg.scale == 0.5  # --set is not adapted


def test_a_folders_data_set_gets_a_softmax_classifier(tmp_path):
    for name in ("healthy", "defective"):
        (tmp_path / "parts" / "train" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "parts" / "train" / name / "x.png"), np.zeros((40, 60, 3), np.uint8))
    config = load_config(DEMO, data=tmp_path / "parts")
    assert config.data.classes == ("defective", "healthy") and config.data.shape == (40, 60)
    assert config.cls.head == "softmax" and config.cls.augment.mask_dropout == 0.0
    assert config.cls.epochs == config.seg.epochs == 18  # no segmenter: its epochs go to the classifier
    assert load_config(DEMO, ["cls.head=binary"], data=tmp_path / "parts").cls.head == "binary"
    missing = load_config(DEMO, data=tmp_path / "nothing")  # no data yet: Severstal's
    assert missing.data.shape == (256, 1600) and missing.data.classes == ("1", "2", "3", "4")


# ----------------------------------------------------------------------------- end to end

def test_masks_layout_predicts_label_maps_and_scores_them(masks_run, capsys, monkeypatch):
    monkeypatch.chdir(masks_run)
    paths = Paths(load_config(masks_run / "config.yaml"))
    tests = sorted(p.name for p in (masks_run / "data" / "test_images").iterdir())
    maps = sorted(p.name for p in paths.prediction_masks.iterdir())
    assert maps == [f"{Path(name).stem}.png" for name in tests]
    for name in maps:
        label_map = cv2.imread(str(paths.prediction_masks / name), cv2.IMREAD_UNCHANGED)
        assert label_map.shape == (192, 320) and label_map.dtype == np.uint8 and label_map.max() <= 3
    assert {"examples_class_3.png", "images_per_class.png"} <= {p.name for p in paths.eda.glob("*.png")}
    assert len(list(paths.predictions.glob("*.png"))) >= 1
    table = paths.score_table.read_text()
    assert "| all empty |" in table and "class 3" in table
    capsys.readouterr()
    assert severstal("report", "--config", masks_run / "config.yaml") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mean_dice ")


def test_larger_images_are_tiled_and_smaller_ones_refused(masks_run, tmp_path, capsys, monkeypatch):
    tests = sorted((masks_run / "data" / "test_images").iterdir())[:4]
    tiles = [cv2.imread(str(path)) for path in tests]
    large = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])  # (384, 640, 3): four test images
    folder = tmp_path / "large"
    folder.mkdir()
    cv2.imwrite(str(folder / "big.png"), large)
    config = masks_run / "config.yaml"
    args = ("predict", "--config", config, "--images", folder, "--set", f"paths.predictions={tmp_path / 'out'}",
            "--folds", "0")  # one fold of each model: the export below is as fast
    monkeypatch.chdir(masks_run)
    assert severstal(*args) == 0
    assert "1 predicted by tiles" in capsys.readouterr().out
    label_map = cv2.imread(str(tmp_path / "out" / "own" / "masks" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert label_map.shape == (384, 640)
    defects = json.loads((tmp_path / "out" / "own" / "defects.json").read_text())["images"]
    assert [record["image"] for record in defects] == ["big.png"]
    areas = one_hot(label_map, 3).sum(axis=(0, 1))  # the defects are the label map's components
    assert [c["area"] for c in defects[0]["classes"]] == areas.tolist()
    assert sum(d["area"] for d in defects[0]["defects"]) == areas.sum()

    assert severstal("export", "--config", config, "--out", tmp_path / "export", "--folds", "0") == 0
    from severstal import Predictor

    predictor = Predictor.load(tmp_path / "export")
    result = predictor.predict(folder / "big.png")  # tiles of the export's size, blended as predict blends them
    assert result.label_map.shape == (384, 640) and result.latency_ms > 0
    thresholds = np.array([s["pixel_threshold"] for s in predictor.manifest["postprocessing"]], np.float32)
    near = (np.abs(result.probabilities - thresholds) < 1e-4).any(axis=2)  # float32 rounding may decide these
    differ = result.label_map != label_map
    assert not (differ & ~near).any() and differ.mean() < 1e-4
    with pytest.raises(ValueError, match="takes images of 192 x 320"):
        predictor.predict(np.zeros((100, 100, 3), np.uint8))

    cv2.imwrite(str(folder / "small.png"), large[:100, :100])
    assert severstal(*args, "--force") == 1
    assert "small.png: 100 x 100" in capsys.readouterr().err
    assert (tmp_path / "out" / "own" / "masks" / "big.png").is_file()  # the earlier output is kept


def test_folders_layout_predicts_labels_and_scores_them(folders_run, capsys, monkeypatch):
    monkeypatch.chdir(folders_run)
    paths = Paths(load_config(folders_run / "config.yaml"))
    labels = pd.read_csv(paths.prediction_labels)
    assert list(labels.columns) == ["image", "label", "p_defective", "p_healthy"]
    assert len(labels) == 6 and labels["label"].isin(["defective", "healthy"]).all()
    np.testing.assert_allclose(labels[["p_defective", "p_healthy"]].sum(axis=1), 1.0, atol=1e-5)  # softmax
    clear = (labels["p_defective"] - labels["p_healthy"]).abs() > 2e-6  # the CSV rounds to 6 places
    assert ((labels["p_defective"] > labels["p_healthy"]) == (labels["label"] == "defective"))[clear].all()
    assert (paths.reports / "confusion.png").is_file() and (paths.predictions / "best.png").is_file()
    records = json.loads(paths.defects.read_text())["images"]
    assert [(r["image"], r["label"], r["flagged"]) for r in records] == [
        (row.image, row.label, [row.label]) for row in labels.itertuples()]  # the most probable class
    assert sorted(p.name for p in paths.eda.glob("*.png")) == ["examples_class_1.png", "examples_class_2.png",
                                                               "images_per_class.png"]
    assert not paths.model_dir("seg").exists()
    capsys.readouterr()
    assert severstal("report", "--config", folders_run / "config.yaml") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2].startswith("majority_accuracy ") and out[-1].startswith("accuracy ")
    assert severstal("train", "--model", "seg", "--fold", "0", "--config", folders_run / "config.yaml") == 1
    assert "classification data" in capsys.readouterr().err


def test_folders_predict_and_export_follow_recall_tuned_thresholds(folders_run, tmp_path, monkeypatch):
    import shutil

    from severstal.core.classification import class_flags, decision_thresholds, thresholded_classes

    workspace = tmp_path / "run"
    shutil.copytree(folders_run, workspace, ignore=shutil.ignore_patterns("predictions", "reports"))
    monkeypatch.chdir(workspace)
    assert severstal("tune", "--config", "config.yaml", "--objective", "recall:0.9") == 0
    paths = Paths(load_config(workspace / "config.yaml"))
    names = ["defective", "healthy"]
    thresholds = decision_thresholds(json.loads(paths.thresholds.read_text()), names)
    assert thresholds is not None  # "thresholded"
    assert severstal("predict", "--config", "config.yaml") == 0
    labels = pd.read_csv(paths.prediction_labels)
    probabilities = labels[["p_defective", "p_healthy"]].to_numpy()  # 6 decimals
    clear = (np.abs(probabilities - thresholds).min(axis=1) > 1e-5) & (np.abs(probabilities[:, 0] - 0.5) > 1e-5)
    expected = [names[i] for i in thresholded_classes(probabilities, thresholds)]
    assert (labels["label"] == expected)[clear].all()
    records = json.loads(paths.defects.read_text())["images"]
    flags = class_flags(probabilities, thresholds)
    for record, row, clearly in zip(records, flags, clear, strict=True):
        if clearly:
            assert record["flagged"] == [name for name, flag in zip(names, row, strict=True) if flag]

    # the export carries the decision: the Predictor labels as predict did
    assert severstal("export", "--config", "config.yaml", "--out", tmp_path / "export") == 0
    from severstal import Predictor

    predictor = Predictor.load(tmp_path / "export")
    assert predictor.manifest["outputs"].keys() == {"classification"}
    assert predictor.manifest["decision"] == {"rule": "thresholded",
                                              "thresholds": dict(zip(names, thresholds.tolist(), strict=True))}
    results = predictor.predict([paths.test_images / image for image in labels["image"]])
    assert ([r.label for r in results] == labels["label"])[clear].all()
    np.testing.assert_allclose([r.classifier_probabilities for r in results], probabilities, atol=2e-6)  # 6 decimals


@pytest.mark.parametrize("channels", [1, 3])
def test_tiff_images_decode_like_opencv(tmp_path, channels):
    from severstal.nn.pipeline import decode_any, input_spec, read_image

    rng = np.random.default_rng(channels)
    image = rng.integers(0, 256, (30, 50, channels) if channels == 3 else (30, 50), dtype=np.uint8)
    path = tmp_path / "plate.tif"
    cv2.imwrite(str(path), image)
    expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_any(path.read_bytes()).numpy(), expected)
    decoded, original = read_image(str(path), input_spec(30, 50, 1.0))
    np.testing.assert_array_equal(decoded.numpy(), expected)
    assert original.numpy().tolist() == [30, 50]
