"""A fold killed with SIGKILL in the middle of an epoch resumes and ends as an uninterrupted run does."""

import json
import os
import shutil
import signal
import time

import pandas as pd
import pytest
from training_fixtures import SEG_EPOCHS, tiny_run  # noqa: F401

from severstal.nn.callbacks import PAUSE_VARIABLE

pytestmark = pytest.mark.slow


def test_kill_mid_epoch_then_resume(tiny_run, tmp_path):  # noqa: F811
    models_dir = tmp_path / "models"
    flag = tmp_path / "paused"
    environment = {**os.environ, PAUSE_VARIABLE: f"1:1:{flag}"}  # epoch index 1, batch 1: mid second epoch
    process = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", models_dir=models_dir,
                                  env=environment, wait=False)
    deadline = time.monotonic() + 240
    while not flag.exists():
        assert process.poll() is None, f"training ended before the pause:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "training never reached the pause point"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()

    fold_dir = tiny_run.fold_dir("seg", models_dir=models_dir)
    assert (fold_dir / "backup").is_dir()
    assert pd.read_csv(fold_dir / "history.csv")["epoch"].tolist() == [1]
    assert not (fold_dir / "training.json").exists()

    resumed = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", models_dir=models_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming after epoch 1 of 2" in resumed.stdout

    reference_dir = tiny_run.fold_dir("seg")
    history = pd.read_csv(fold_dir / "history.csv")
    reference = pd.read_csv(reference_dir / "history.csv")
    assert history["epoch"].tolist() == reference["epoch"].tolist() == list(range(1, SEG_EPOCHS + 1))
    assert list(history.columns) == list(reference.columns)
    summary = json.loads((fold_dir / "training.json").read_text())
    assert summary["epochs_run"] == json.loads((reference_dir / "training.json").read_text())["epochs_run"]
    best = history.loc[history[summary["monitor"]].idxmin()]  # the first epoch with the lowest loss
    assert summary["monitor"] == "val_loss" and summary["best_epoch"] == int(best["epoch"])
    # the learning-rate schedule continued from the restored step counter (cosine over 2 epochs)
    assert history["lr"].tolist() == pytest.approx(reference["lr"].tolist(), rel=1e-5)
    assert not (fold_dir / "backup").exists() and (fold_dir / "oof.npz").is_file()


def wait_for(condition, process, seconds=240):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"training ended too early:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_second_run_of_the_same_fold_fails_at_once_while_the_first_finishes(tiny_run, tmp_path):  # noqa: F811
    models_dir = tmp_path / "models"
    lock = models_dir / "demo" / ".locks" / "seg-fold0.lock"
    first = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", models_dir=models_dir, wait=False)
    wait_for(lock.exists, first)
    started = time.monotonic()
    second = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", models_dir=models_dir)
    assert time.monotonic() - started < 30  # no model work: it stops at the lock
    assert second.returncode == 1
    assert second.stderr.startswith(f"error: seg fold 0 of demo is locked by pid {first.pid} on ")
    assert "(severstal train --config" in second.stderr and "--model seg --fold 0, since " in second.stderr
    assert second.stderr.rstrip().endswith(f"wait for it or stop it (kill {first.pid})")
    assert first.wait(timeout=300) == 0, first.stdout.read()
    first.stdout.close()
    assert (tiny_run.fold_dir("seg", models_dir=models_dir) / "oof.npz").is_file()
    assert not lock.exists() and not lock.parent.exists()


def test_force_retrains_beside_the_finished_fold_and_replaces_it_only_when_done(tiny_run, tmp_path):  # noqa: F811
    models_dir = tmp_path / "models"
    fold_dir = tiny_run.fold_dir("seg", models_dir=models_dir)
    shutil.copytree(tiny_run.fold_dir("seg"), fold_dir)
    original = (fold_dir / "best.weights.h5").read_bytes()
    flag = tmp_path / "paused"
    environment = {**os.environ, PAUSE_VARIABLE: f"1:1:{flag}"}
    process = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", "--force", models_dir=models_dir,
                                  env=environment, wait=False)
    wait_for(flag.exists, process)
    retrain = fold_dir.with_name("fold0.retrain")
    assert (retrain / "backup").is_dir() and not (retrain / "training.json").exists()
    assert (fold_dir / "training.json").is_file() and (fold_dir / "best.weights.h5").read_bytes() == original
    os.kill(process.pid, signal.SIGKILL)  # the retrain fails: the finished fold stays as it was
    process.wait()
    process.stdout.close()
    assert (fold_dir / "best.weights.h5").read_bytes() == original and (fold_dir / "oof.npz").is_file()
    again = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", models_dir=models_dir)
    assert again.returncode == 0 and "already trained with this config" in again.stdout
    assert "an unfinished retrain is in" in again.stdout  # kept for `--force` to resume
    resumed = tiny_run.subprocess("train", "--model", "seg", "--fold", "0", "--force", models_dir=models_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "--force: resuming its unfinished retrain" in resumed.stdout
    assert "resuming after epoch 1 of 2" in resumed.stdout
    assert "the retrained fold replaced the old one" in resumed.stdout
    assert not retrain.exists() and (fold_dir / "training.json").is_file() and (fold_dir / "oof.npz").is_file()
    assert pd.read_csv(fold_dir / "history.csv")["epoch"].tolist() == list(range(1, SEG_EPOCHS + 1))
    assert not list(fold_dir.parent.glob(".fold0.old-*"))
