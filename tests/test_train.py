"""The train and oof stages end to end on the tiny data set, and the resume bookkeeping as pure logic."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from training_fixtures import REPO_ROOT, SEG_EPOCHS, tiny_run  # noqa: F401

from severstal.infra import oof_files as oofstats
from severstal.infra.artifacts import BEST_WEIGHTS, HISTORY, Paths, training_stamp
from severstal.infra.config import load_config
from severstal.infra.data import chosen_folds
from severstal.infra.errors import ConfigError, UserError
from severstal.infra.images import usable_images
from severstal.infra.stamps import write_stamp
from severstal.nn.callbacks import is_better, prepare_resume, rebuild_state
from severstal.stages import oof, train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_fold_artifacts(tiny_run, kind):  # noqa: F811
    fold_dir = tiny_run.fold_dir(kind)
    for name in ("best.weights.h5", "last.weights.h5", "history.csv", "curves.png", "config.yaml",
                 "training.json", "oof.npz", "metrics.json"):
        assert (fold_dir / name).is_file(), name
    assert not (fold_dir / "backup").exists()
    assert not list(fold_dir.glob("pending-*")) and not list(fold_dir.glob(".tmp-*"))
    history = pd.read_csv(fold_dir / "history.csv")
    epochs = SEG_EPOCHS if kind == "seg" else 1
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    summary = json.loads((fold_dir / "training.json").read_text())
    assert summary["epochs_run"] == epochs and summary["best_epoch"] in history["epoch"].tolist()
    best_row = history.loc[history["epoch"] == summary["best_epoch"]].iloc[0]
    assert summary["monitor"] == "val_loss"  # configs/demo.yaml picks the best epoch by validation loss
    assert best_row["val_loss"] == pytest.approx(summary["best_value"]) == history["val_loss"].min()
    if kind == "seg":
        assert {f"val_pos_dice_{c}" for c in range(1, 5)} <= set(history.columns)
        assert np.isnan(history["val_loss"][0]) and summary["best_epoch"] == 2  # validate_last 1: epoch 2 only


@pytest.mark.parametrize("validate_last, schedule, expected", [
    (None, "cosine", [1, 2, 3, 4, 5]), (2, "cosine", [4, 5]), (9, "cosine", [1, 2, 3, 4, 5]),
    (2, "constant", [1, 2, 3, 4, 5]),
])
def test_validation_epochs(validate_last, schedule, expected):
    from severstal.infra.schema import ClassifierSection
    from severstal.nn.training import validation_epochs

    assert validation_epochs(ClassifierSection(epochs=5, validate_last=validate_last, schedule=schedule)) == expected


def test_only_validated_epochs_can_be_the_best(tmp_path):
    from severstal.nn.callbacks import ResumeState, TrainingRecord, read_history
    from severstal.nn.tfsetup import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    record = TrainingRecord(tmp_path, "val_loss", "min", None, 4, ResumeState(0, None, None, 0), [3, 4])
    record.set_model(model)
    for epoch, logs in enumerate([{"loss": 1.0}, {"loss": 0.5}, {"loss": 0.4, "val_loss": 0.9},
                                  {"loss": 0.3, "val_loss": 0.95}]):
        record.on_epoch_begin(epoch)
        record.on_epoch_end(epoch, logs)
    history = read_history(tmp_path)
    assert history["best"].tolist() == [0, 0, 1, 0]
    assert history["val_loss"].isna().tolist() == [True, True, False, False]
    assert (record.state.best_epoch, record.state.wait) == (3, 1)
    rebuilt = rebuild_state(history.iloc[:2], "val_loss", "min")  # killed before the first validated epoch
    assert (rebuilt.completed, rebuilt.best_value, rebuilt.best_epoch, rebuilt.wait) == (2, None, None, 0)
    assert not rebuilt.stopped(2)  # unvalidated epochs are not waited for the patience
    resumed = rebuild_state(history, "val_loss", "min")  # the live record's state, unvalidated epochs not waited
    assert (resumed.completed, resumed.best_epoch, resumed.wait) == (4, 3, 1)
    with pytest.raises(KeyError, match="val_loss is not among the epoch's logs"):
        record.on_epoch_end(3, {"loss": 0.2})  # a validated epoch without its value


def test_weights_exclude_the_optimizer(tiny_run):  # noqa: F811
    import h5py

    with h5py.File(tiny_run.fold_dir("seg") / "best.weights.h5") as handle:
        assert "optimizer" not in handle


def test_segmenter_oof_files(tiny_run):  # noqa: F811
    fold_dir = tiny_run.fold_dir("seg")
    stats = oofstats.load_segmentation_oof(fold_dir / "oof.npz")
    folds = pd.read_csv(tiny_run.folds_file)
    validation = folds.loc[folds["fold"] == 0, "ImageId"].tolist()
    assert stats["image_ids"].tolist() == validation
    truth = tiny_run.presence.set_index("ImageId").loc[validation, [f"has_{c}" for c in range(1, 5)]].to_numpy()
    np.testing.assert_array_equal(stats["true_area"] > 0, truth > 0)
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    assert metrics["images_with_class"] == {str(c): int(truth[:, c - 1].sum()) for c in range(1, 5)}
    assert 0 <= metrics["dice_at_0.5"] <= 1


def test_classifier_oof_files(tiny_run):  # noqa: F811
    fold_dir = tiny_run.fold_dir("cls")
    probabilities = oofstats.load_classifier_oof(fold_dir / "oof.npz")["probabilities"]
    assert probabilities.shape == (6, 4)
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    assert set(metrics["at_0.5"]) == {"class 1", "class 2", "class 3", "class 4", "any defect"}
    assert metrics["at_0.5"]["any defect"]["positives"] == 5  # fold 0: images 0, 2, ..., 10; only 4 is clean
    assert (fold_dir / "confusion.png").is_file()


def test_finished_fold_is_skipped(tiny_run, capsys):  # noqa: F811
    fold_dir = tiny_run.fold_dir("seg")
    before = (fold_dir / BEST_WEIGHTS).stat().st_mtime_ns
    assert train.main(["--model", "seg", "--fold", "0", *tiny_run.arguments()]) == 0
    assert "already trained with this config" in capsys.readouterr().out
    assert (fold_dir / BEST_WEIGHTS).stat().st_mtime_ns == before


def test_a_trained_fold_without_current_statistics_gets_them_without_training(tiny_run, tmp_path, capsys):  # noqa: F811
    models = tmp_path / "models"
    shutil.copytree(tiny_run.models_dir, models)
    (tiny_run.fold_dir("seg", models_dir=models) / "oof.npz").unlink()
    before = (tiny_run.fold_dir("seg", models_dir=models) / BEST_WEIGHTS).read_bytes()
    assert train.main(["--model", "seg", "--fold", "0", *tiny_run.arguments(models)]) == 0
    assert "trained; computing its out-of-fold statistics" in capsys.readouterr().out
    assert (tiny_run.fold_dir("seg", models_dir=models) / "oof.npz").is_file()
    assert (tiny_run.fold_dir("seg", models_dir=models) / BEST_WEIGHTS).read_bytes() == before
    assert train.main(["--model", "seg", "--fold", "0", *tiny_run.arguments(models)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_changed_config_stops_without_force(tiny_run, capsys):  # noqa: F811
    code = train.main(["--model", "seg", "--fold", "0", *tiny_run.arguments(), "--set", "seg.learning_rate=0.5"])
    assert code == 1
    error = capsys.readouterr().err
    assert "different config" in error and "seg.learning_rate" in error and "--force" in error


def test_oof_stage_is_rerunnable(tiny_run):  # noqa: F811
    fold_dir = tiny_run.fold_dir("cls")
    before = oofstats.load_classifier_oof(fold_dir / "oof.npz")["probabilities"]
    assert oof.main(["--model", "cls", "--fold", "0", *tiny_run.arguments()]) == 0
    np.testing.assert_allclose(oofstats.load_classifier_oof(fold_dir / "oof.npz")["probabilities"], before,
                               atol=1e-5)


def test_missing_folds_file(tiny_run, tmp_path, capsys):  # noqa: F811
    arguments = tiny_run.arguments() + ["--set", f"data.folds_file={tmp_path / 'none.csv'}"]
    assert train.main(["--model", "seg", "--fold", "0", *arguments]) == 1
    assert "run severstal folds first" in capsys.readouterr().err


def test_bad_image_stops_training(tiny_run, tmp_path, capsys):  # noqa: F811
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run.data_dir, data_dir)
    broken = data_dir / "train_images" / "tiny003.jpg"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated JPEG
    arguments = tiny_run.arguments(tmp_path / "models") + ["--set", f"data.dir={data_dir}"]
    assert train.main(["--model", "cls", "--fold", "1", *arguments]) == 1
    error = capsys.readouterr().err
    assert "tiny003.jpg" in error and "--skip-bad" in error
    assert not tiny_run.fold_dir("cls", 1, tmp_path / "models").exists()  # nothing written
    assert usable_images(data_dir / "train_images", ["tiny003.jpg", "tiny004.jpg"], (64, 400), skip_bad=True) == {
        "tiny003.jpg"}


@pytest.mark.parametrize("text, expected", [("all", [0, 1, 2]), ("1", [1]), ("2,0", [0, 2])])
def test_chosen_folds(text, expected):
    folds = pd.DataFrame({"ImageId": ["a", "b", "c"], "fold": [0, 1, 2]})
    assert chosen_folds(text, folds) == expected


@pytest.mark.parametrize("text, message", [("3", "fold\\(s\\) \\[3\\] are not available"), ("x", "all or a list")])
def test_chosen_folds_rejects(text, message):
    folds = pd.DataFrame({"ImageId": ["a", "b", "c"], "fold": [0, 1, 2]})
    with pytest.raises(UserError, match=message):
        chosen_folds(text, folds)


# ---------------------------------------------------------------- resume bookkeeping (no training)

def write_history(fold_dir, values, best_flags):
    rows = [{"epoch": i + 1, "val_dice": v, "loss": 1.0, "best": b} for i, (v, b) in enumerate(
        zip(values, best_flags, strict=True))]
    pd.DataFrame(rows).to_csv(fold_dir / HISTORY, index=False)


@pytest.mark.parametrize("value, best, mode, expected", [
    (0.5, None, "max", True), (0.5, 0.4, "max", True), (0.4, 0.4, "max", False), (0.3, 0.4, "min", True),
    (float("nan"), None, "max", False),
])
def test_is_better(value, best, mode, expected):
    assert is_better(value, best, mode) is expected


def test_rebuild_state_counts_patience():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "val_dice": [0.5, 0.7, 0.6, 0.65]})
    state = rebuild_state(history, "val_dice", "max")
    assert (state.completed, state.best_value, state.best_epoch, state.wait) == (4, 0.7, 2, 2)
    assert state.stopped(2) and not state.stopped(3) and not state.stopped(None)


def test_prepare_resume_cuts_history_and_handles_pending_weights(tmp_path):
    # killed after epoch 3's backup but before its pending weights were promoted
    write_history(tmp_path, [0.5, 0.4, 0.6, 0.7], [1, 0, 1, 1])
    (tmp_path / BEST_WEIGHTS).write_text("epoch 1")
    (tmp_path / "pending-best-epoch0003.weights.h5").write_text("epoch 3")
    (tmp_path / "pending-best-epoch0004.weights.h5").write_text("epoch 4")  # its backup never happened
    state = prepare_resume(tmp_path, 3, "val_dice", "max")
    assert pd.read_csv(tmp_path / HISTORY)["epoch"].tolist() == [1, 2, 3]
    assert (tmp_path / BEST_WEIGHTS).read_text() == "epoch 3"
    assert not list(tmp_path.glob("pending-*"))
    assert (state.best_value, state.best_epoch, state.wait) == (0.6, 3, 0)


def test_prepare_resume_from_scratch_removes_old_files(tmp_path):
    write_history(tmp_path, [0.5], [1])
    (tmp_path / BEST_WEIGHTS).write_text("old")
    state = prepare_resume(tmp_path, 0, "val_dice", "max")
    assert not (tmp_path / HISTORY).exists() and not (tmp_path / BEST_WEIGHTS).exists()
    assert state.completed == 0 and state.best_value is None


@pytest.mark.parametrize("finished, progress, saved_rate, labels, force, expected, kept", [
    (False, True, 2.0e-3, "same", False, "fold", True),  # interrupted: resumed
    (False, True, 2.0e-3, "same", True, "fold", True),  # an interrupted `train --force` goes on where it stopped
    (False, True, 0.5, "same", True, "fold", False),  # made with another config, --force: restarted
    (False, True, 2.0e-3, "changed", False, "fold", False),  # its labels changed: restarted
    (False, False, 0.5, "same", False, "fold", False),  # another config but no finished epoch: nothing to keep
    (True, True, 2.0e-3, "same", False, None, True),  # finished and current: nothing to train
    (True, True, 2.0e-3, "same", True, "retrain", True),  # finished, --force: retrained beside it
    (True, True, 2.0e-3, "changed", False, "retrain", True),  # finished, labels changed: retrained beside it
    (True, True, 0.5, "same", True, "retrain", True),  # finished with another config, --force: retrained beside it
])
def test_plan_fold(tmp_path, monkeypatch, repo_root, finished, progress, saved_rate, labels, force, expected, kept):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    demo = str(repo_root / "configs" / "demo.yaml")
    config = load_config(demo, ["data.dir=data"])
    paths = Paths(config)
    fold_dir = paths.fold_dir("seg", 0)
    fold_dir.mkdir(parents=True)
    (fold_dir / HISTORY).write_text("epoch,loss\n1,0.9\n" if progress else "")
    made_with = load_config(demo, ["data.dir=data", f"seg.learning_rate={saved_rate}"])
    write_stamp(fold_dir / "stamp.json", training_stamp(made_with, paths, "seg"))
    if finished:
        (fold_dir / "training.json").write_text("{}")
        (fold_dir / BEST_WEIGHTS).write_text("weights")
    if labels == "changed":
        (tmp_path / "data" / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\n")
    target, stamp = train.plan_fold(config, paths, "seg", 0, force)
    assert target == {"fold": fold_dir, "retrain": paths.retrain_dir("seg", 0), None: None}[expected]
    assert stamp == training_stamp(config, paths, "seg")
    assert (fold_dir / HISTORY).is_file() == kept


def test_plan_fold_refuses_another_config_without_force(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(tmp_path)
    demo = str(repo_root / "configs" / "demo.yaml")
    config = load_config(demo)
    paths = Paths(config)
    fold_dir = paths.fold_dir("seg", 0)
    fold_dir.mkdir(parents=True)
    (fold_dir / HISTORY).write_text("epoch,loss\n1,0.9\n")
    write_stamp(fold_dir / "stamp.json", training_stamp(load_config(demo, ["seg.epochs=3"]), paths, "seg"))
    with pytest.raises(ConfigError, match="seg.epochs: 3 -> 18"):
        train.plan_fold(config, paths, "seg", 0, False)
    assert (fold_dir / HISTORY).is_file()


def test_fewer_training_images_than_the_batch_size_train_in_one_batch(tiny_run, tmp_path, capsys):  # noqa: F811
    arguments = tiny_run.arguments(tmp_path / "models") + ["--set", "cls.batch_size=16"]
    assert train.main(["--model", "cls", "--fold", "1", *arguments]) == 0
    assert "6 training images are fewer than the batch size 16: training with batches of 6" in capsys.readouterr().out
    summary = json.loads((tiny_run.fold_dir("cls", 1, tmp_path / "models") / "training.json").read_text())
    assert summary["batch_size"] == 6 and summary["training_images"] == 6


def test_a_required_gpu_stops_training_before_it_reads_the_folds_or_writes(tiny_run, tmp_path, capsys):  # noqa: F811
    models = tmp_path / "models"
    arguments = tiny_run.arguments(models) + ["--set", "hardware.require_gpu=true",
                                              "--set", f"data.folds_file={tmp_path / 'no-folds-yet.csv'}"]
    assert train.main(["--model", "seg", "--fold", "0", *arguments]) == 1
    output = capsys.readouterr()
    assert "no GPU is visible to TensorFlow" in output.err and "tensorflow[and-cuda]" in output.err
    assert "--set hardware.require_gpu=false" in output.err and "folds" not in output.err
    assert not models.exists()


def test_a_required_gpu_stops_oof_before_it_reads_the_folds(tiny_run, tmp_path, capsys):  # noqa: F811
    arguments = tiny_run.arguments() + ["--set", "hardware.require_gpu=true",
                                        "--set", f"data.folds_file={tmp_path / 'no-folds-yet.csv'}"]
    assert oof.main(["--model", "seg", "--fold", "0", "--force", *arguments]) == 1
    assert "no GPU is visible to TensorFlow" in capsys.readouterr().err


def test_default_recipe_without_a_visible_gpu_stops_within_seconds(tiny_run, tmp_path):  # noqa: F811
    """The issue's check: CUDA_VISIBLE_DEVICES= severstal train --model seg --fold 0 --config configs/default.yaml."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "severstal", "train", "--model", "seg", "--fold", "0", "--config",
                             str(REPO_ROOT / "configs" / "default.yaml"), "--data", str(tiny_run.data_dir)],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 60
    assert "CUDA_VISIBLE_DEVICES='' hides the GPUs" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no folds, models or locks folder


def test_release_memory_clears_the_keras_session():
    from severstal.nn.tfsetup import keras
    from severstal.nn.training import release_memory

    keras.layers.Dense(1)
    assert keras.layers.Dense(1).name != "dense"  # names count up while the session lives
    release_memory()
    assert keras.layers.Dense(1).name == "dense"


def test_memory_is_released_between_folds(tiny_run, tmp_path, monkeypatch):  # noqa: F811
    import severstal.nn.oof
    import severstal.nn.training

    calls = []
    monkeypatch.setattr(severstal.nn.training, "train_fold", lambda *args: calls.append(("train", args[2])))
    monkeypatch.setattr(severstal.nn.training, "release_memory", lambda: calls.append("release"))
    monkeypatch.setattr(severstal.nn.oof, "compute_oof", lambda *args: calls.append(("oof", args[2])))
    monkeypatch.setattr(train, "oof_stamp", lambda *args: None)
    assert train.main(["--model", "seg", "--fold", "all", *tiny_run.arguments(tmp_path / "models")]) == 0
    assert calls == [("train", 0), ("oof", 0), "release", ("train", 1), ("oof", 1)]
