"""The tune stage on tiny synthetic OOF files: outputs, skip-if-done, clear errors."""

import json
import shutil

import numpy as np
import pytest

from severstal.core.classification import Objective
from severstal.core.thresholds import SearchGrid, search_thresholds, thresholds_from_document
from severstal.infra.artifacts import OOF_KEYS, Paths
from severstal.infra.config import load_config
from severstal.infra.oof_files import save_classifier_oof, save_segmentation_oof
from severstal.infra.stamps import Stamp
from severstal.stages import tune

CONFIG = "configs/demo.yaml"  # 2 folds; experiment "demo"


@pytest.fixture
def workdir(tmp_path, monkeypatch, repo_root):
    shutil.copytree(repo_root / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_fold(config, fold, rng, images=12, classifier=True, pixel_thresholds=None, stored_fold=None,
               precision="float32"):
    """Random but consistent statistics for one fold on the config's grid, stamped like compute_oof's."""
    stamp = Stamp.of(config, OOF_KEYS, {"weights": f"sha256:fold{fold}"})
    grid = SearchGrid.from_dict(config.raw["tune"])
    pixels = grid.pixel_thresholds if pixel_thresholds is None else pixel_thresholds
    shape = (images, 4, len(pixels), len(grid.min_component_sizes))
    true_area = np.where(rng.random((images, 4)) < 0.4, rng.integers(100, 5000, (images, 4)), 0)
    predicted = rng.integers(0, 6000, shape) * (rng.random((images, 4, 1, 1)) < 0.6)
    overlap = rng.integers(0, np.minimum(predicted, true_area[..., None, None]) + 1)
    ids = [f"{fold}_{i}.jpg" for i in range(images)]
    stats = {"predicted_area": predicted, "intersection": overlap, "true_area": true_area}
    stored = fold if stored_fold is None else stored_fold
    save_segmentation_oof(Paths(config).fold_dir("seg", fold) / "oof.npz", ids, stored, stats, pixels,
                          grid.min_component_sizes, stamp, precision)
    if classifier:
        save_classifier_oof(Paths(config).fold_dir("cls", fold) / "oof.npz", ids, stored, rng.random((images, 4)),
                            stamp, precision)


def write_folds(config, seed=0, **options):
    rng = np.random.default_rng(seed)
    for fold in range(config.folds.k):
        write_fold(config, fold, rng, **options)


def test_tune_writes_thresholds_heatmaps_and_the_cv_line(workdir, capsys):
    config = load_config(CONFIG)
    write_folds(config)
    assert tune.main(["--config", CONFIG]) == 0
    output = capsys.readouterr().out
    document = json.loads(Paths(config).thresholds.read_text())
    assert output.strip().splitlines()[-1] == f"cv_mean_dice {document['cv_mean_dice']:.6f}"
    assert "held-out" in output and "fold 0" in output

    stats = tune.load_statistics(tune.find_inputs(config, Paths(config)), SearchGrid.from_dict(config.raw["tune"]))[0]
    assert stats.count == 24 and stats.classifier_probabilities is not None
    result = search_thresholds(stats, SearchGrid.from_dict(config.raw["tune"]))
    assert thresholds_from_document(document) == result.thresholds
    assert document["cv_mean_dice"] == pytest.approx(result.tuned_mean, abs=1e-8)
    assert document["default_mean_dice"] == pytest.approx(result.default_mean, abs=1e-8)
    assert document["heldout_mean_dice"] == pytest.approx(result.heldout_mean, abs=1e-8)
    assert document["cv_mean_dice"] >= document["default_mean_dice"]
    assert document["images"] == 24 and document["folds"] == 2 and document["classifier_gate"] is True
    assert document["grid"] == SearchGrid.from_dict(config.raw["tune"]).to_dict()
    assert set(document["per_class"]) == {"1", "2", "3", "4"} and set(document["heldout_thresholds"]) == {"0", "1"}
    assert document["config"]["tune"] == config.raw["tune"]
    assert sorted(document["inputs"]) == sorted(
        (Paths(config).fold_dir(model, fold) / "oof.npz").as_posix() for model in ("seg", "cls") for fold in range(2))
    for class_id in (1, 2, 3, 4):
        png = Paths(config).reports / f"thresholds_class{class_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(Paths(config).models.glob("*.tmp")) and not list(Paths(config).reports.glob("*.tmp"))


def test_tune_skips_when_done_and_retunes_when_inputs_change(workdir, capsys):
    config = load_config(CONFIG)
    write_folds(config)
    assert tune.main(["--config", CONFIG]) == 0
    created = json.loads(Paths(config).thresholds.read_text())["inputs"]
    capsys.readouterr()
    assert tune.main(["--config", CONFIG]) == 0
    assert "up to date" in capsys.readouterr().out
    write_folds(config, seed=1)  # new OOF statistics
    assert tune.main(["--config", CONFIG]) == 0
    assert "changed" in capsys.readouterr().out
    assert json.loads(Paths(config).thresholds.read_text())["inputs"] != created


def test_tune_refuses_a_changed_config_without_force(workdir, capsys):
    config = load_config(CONFIG)
    write_folds(config)
    assert tune.main(["--config", CONFIG]) == 0
    changed = ["--config", CONFIG, "--set", "tune.min_areas=[0, 500]"]
    assert tune.main(changed) == 1
    error = capsys.readouterr().err
    assert "tune.min_areas" in error and "--force" in error
    assert tune.main(changed + ["--force"]) == 0
    assert json.loads(Paths(config).thresholds.read_text())["grid"]["min_areas"] == [0, 500]


def test_tune_without_classifier_statistics_does_not_gate(workdir, capsys):
    config = load_config(CONFIG)
    write_folds(config, classifier=False)
    assert tune.main(["--config", CONFIG]) == 0
    assert "without a classifier gate" in capsys.readouterr().out
    document = json.loads(Paths(config).thresholds.read_text())
    assert document["classifier_gate"] is False and document["grid"]["classifier_thresholds"] == [0.0]
    assert all(values["classifier_threshold"] == 0.0 for values in document["classes"].values())


def test_tune_lists_missing_folds(workdir, capsys):
    config = load_config(CONFIG)
    write_fold(config, 0, np.random.default_rng(0))
    assert tune.main(["--config", CONFIG]) == 1
    error = capsys.readouterr().err
    assert "fold(s) 1" in error and "severstal train --model seg --fold K" in error
    assert not Paths(config).thresholds.exists()


def test_tune_rejects_partial_classifier_statistics(workdir, capsys):
    config = load_config(CONFIG)
    write_folds(config)
    (Paths(config).fold_dir("cls", 1) / "oof.npz").unlink()
    assert tune.main(["--config", CONFIG]) == 1
    assert "severstal train --model cls --fold K" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    ({"pixel_thresholds": [0.3, 0.5, 0.7]}, "asks for"),
    ({"stored_fold": 7}, "not fold"),
])
def test_tune_rejects_statistics_that_do_not_fit(workdir, capsys, options, message):
    config = load_config(CONFIG)
    write_folds(config, **options)
    assert tune.main(["--config", CONFIG]) == 1
    error = capsys.readouterr().err
    assert message in error and "severstal oof --model" in error
    assert not Paths(config).thresholds.exists()


def test_tune_rejects_a_grid_without_the_default(workdir, capsys):
    assert tune.main(["--config", CONFIG, "--set", "tune.pixel_thresholds=[0.4, 0.6]"]) == 1
    assert "including 0.5, got [0.4, 0.6]" in capsys.readouterr().err


def test_tuned_on_records_the_flips_and_precision(workdir):
    config = load_config(CONFIG)
    write_folds(config)
    assert tune.main(["--config", CONFIG]) == 0
    document = json.loads(Paths(config).thresholds.read_text())
    assert document["tuned_on"] == {"tta": list(config.inference.tta), "precision": "float32"}


@pytest.mark.parametrize("precision, message", [
    (None, "does not record the flips and precision its predictions were made with"),
    ("mixed_float16", "was predicted with flips none,hflip in mixed_float16"),
])
def test_oof_files_made_another_way_are_refused(workdir, capsys, precision, message):
    config = load_config(CONFIG)
    rng = np.random.default_rng(0)
    write_fold(config, 0, rng)
    write_fold(config, 1, rng, precision=precision)
    assert tune.main(["--config", CONFIG]) == 1
    assert message in capsys.readouterr().err
    assert not Paths(config).thresholds.exists()


@pytest.fixture
def no_heatmaps(monkeypatch):
    """Skip drawing the Dice heatmaps (tested above): these tests are about the operating points."""
    monkeypatch.setattr(tune, "draw_heatmaps", lambda result, paths: None)


def test_tune_by_recall_reports_the_held_out_recall(workdir, capsys, no_heatmaps):
    config = load_config(CONFIG)
    write_folds(config, images=30)
    assert tune.main(["--config", CONFIG, "--objective", "recall:0.7"]) == 0
    captured = capsys.readouterr()
    document = json.loads(Paths(config).thresholds.read_text())
    grid = SearchGrid.from_dict(config.raw["tune"])
    stats = tune.load_statistics(tune.find_inputs(config, Paths(config)), grid)[0]
    result = search_thresholds(stats, grid, Objective.parse("recall:0.7"))
    assert thresholds_from_document(document) == result.thresholds
    assert document["objective"] == "recall:0.7" and document["format_version"] == 3
    assert document["cv_mean_dice"] == pytest.approx(result.tuned_mean, abs=1e-8)
    for channel, point in enumerate(result.operating):
        assert document["operating"][str(channel + 1)] == {**point.to_dict(),
                                                           "target_reached": point.recall >= 0.7}
        for fold in (0, 1):
            assert document["heldout_operating"][str(channel + 1)][str(fold)] == \
                result.heldout_operating[fold][channel].to_dict()
    lines = captured.out.splitlines()
    assert lines[-1] == f"cv_mean_dice {document['cv_mean_dice']:.6f}"
    table = lines.index(next(line for line in lines if line.startswith("held-out recall per fold")))
    assert "< below the target 0.7" in lines[table] and lines[table + 1].split() == ["class", "fold", "0", "fold", "1"]
    for channel in range(4):
        row = lines[table + 2 + channel].replace("<", " ").split()
        assert row == [str(channel + 1)] + [f"{result.heldout_operating[fold][channel].recall:.4f}" for fold in (0, 1)]
    below = result.below_target()
    assert below  # random statistics: some class cannot be found in 70% of its images
    for channel in below:
        assert (f"warning: class {channel + 1}: no setting on the grid finds it in 0.7 of the images that have it; the "
                f"best recall reached is {result.operating[channel].recall:.4f}") in captured.err
    assert (Paths(config).reports / "operating_points.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_objective_decides_whether_tune_is_up_to_date(workdir, capsys, no_heatmaps):
    config = load_config(CONFIG)
    write_folds(config)
    assert tune.main(["--config", CONFIG]) == 0
    kaggle = json.loads(Paths(config).thresholds.read_text())
    assert kaggle["objective"] == "kaggle" and set(kaggle["operating"]) == {"1", "2", "3", "4"}
    assert kaggle["operating"]["1"]["target_reached"] is None
    capsys.readouterr()
    assert tune.main(["--config", CONFIG, "--objective", "f1"]) == 0  # an operating decision: tuned again
    assert "objective changed since it was made: making it again" in capsys.readouterr().out
    assert json.loads(Paths(config).thresholds.read_text())["objective"] == "f1"
    for same in ([], ["--objective", "F1"]):  # without --objective the recorded one is kept (run_all.sh re-runs)
        assert tune.main(["--config", CONFIG, *same]) == 0
        assert "up to date" in capsys.readouterr().out
    assert json.loads(Paths(config).thresholds.read_text())["objective"] == "f1"
    assert tune.main(["--config", CONFIG, "--objective", "kaggle"]) == 0
    assert json.loads(Paths(config).thresholds.read_text())["classes"] == kaggle["classes"]
    # a file made before objectives were recorded was tuned for kaggle
    Paths(config).thresholds.write_text(json.dumps({key: value for key, value in kaggle.items() if key != "objective"}))
    capsys.readouterr()
    assert tune.main(["--config", CONFIG]) == 0
    assert "up to date" in capsys.readouterr().out
    assert tune.main(["--config", CONFIG, "--objective", "recall:0.5"]) == 0
    assert "making it again" in capsys.readouterr().out


@pytest.mark.parametrize("objective, message", [
    ("recall:1.5", "error: --objective recall:1.5: R must be in (0, 1]"),
    ("precision:0.9", "error: --objective precision:0.9: expected kaggle, f1 or recall:R"),
])
def test_a_bad_objective_stops_before_anything_is_written(workdir, capsys, objective, message):
    config = load_config(CONFIG)
    write_folds(config)
    assert tune.main(["--config", CONFIG, "--objective", objective]) != 0
    assert capsys.readouterr().err.startswith(message)
    assert not Paths(config).thresholds.exists() and not Paths(config).reports.exists()
