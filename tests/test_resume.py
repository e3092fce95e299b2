"""A fold killed with SIGKILL in the middle of an epoch resumes and ends as an uninterrupted run does."""

import json
import os
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
