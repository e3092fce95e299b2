"""`bash run_all.sh --smoke` end to end: every stage of the real recipe at full resolution on a few images.

The run works in a copy of the repository's scripts and configs that shares the repository's
``.venv``, on a small demo data set as its source (``--data``): 4 training images (2 folds, so one
step of batch 2 per epoch), 2 test images, one epoch per model.
"""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from severstal.core.constants import HEIGHT, WIDTH
from severstal.core.submission import check_submission
from severstal.infra.tables import read_csv_text

pytestmark = pytest.mark.slow


def test_smoke_run_runs_every_stage_at_full_resolution(tmp_path, repo_root):
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("run_all.sh", "requirements.txt", "pyproject.toml"):
        shutil.copy(repo_root / name, work / name)
    for name in ("configs", "scripts"):
        shutil.copytree(repo_root / name, work / name)
    (work / ".venv").symlink_to(repo_root / ".venv")
    source = work / "plant"
    subprocess.run([sys.executable, "-m", "severstal", "demo-data", "--config", "configs/demo.yaml", "--out",
                    str(source), "--train", "8", "--test", "6"], cwd=work, check=True, capture_output=True)
    result = subprocess.run(
        ["bash", "run_all.sh", "--smoke", "--data", str(source), "--set", "smoke.train_images=4",
         "--set", "smoke.test_images=2", "--set", "cls.epochs=1", "--set", "seg.epochs=1"],
        cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for stage in ("data", "encoder weights", "check-data", "folds", "eda", "train-cls", "train-seg", "tune", "predict",
                  "validate", "score", "show"):
        assert f"== {stage}\n" in out
    assert "TensorFlow " in out and "on CPU (no GPU visible), float32" in out
    assert "== smoke run passed" in out
    assert ("encoder weights: the config's are available" in out) != ("encoder weights: the config's cannot be had "
                                                                       "here" in out)
    models = work / "models" / "smoke-plant"
    for kind in ("cls", "seg"):
        for fold in (0, 1):
            fold_dir = models / kind / f"fold{fold}"
            summary = json.loads((fold_dir / "training.json").read_text())
            assert (summary["training_images"], summary["batch_size"], summary["epochs_run"]) == (2, 2, 1)
            saved = yaml.safe_load((fold_dir / "config.yaml").read_text())
            assert (saved["data"]["height"], saved["data"]["width"], saved[kind]["scale"]) == (HEIGHT, WIDTH, 1.0)
            assert saved[kind]["crop"] == ([256, 512] if kind == "seg" else [224, 1568])
            assert saved[kind]["backbone" if kind == "cls" else "encoder"] == "resnet34"
            assert len(pd.read_csv(fold_dir / "history.csv")) == 1
    submission = work / "submissions" / "smoke-plant" / "submission.csv"
    test_images = sorted(path.name for path in (work / "data" / "smoke" / "plant" / "test_images").iterdir())
    assert len(test_images) == 2 and check_submission(read_csv_text(submission), test_images) == []
    assert (work / "models" / "smoke-plant" / "thresholds.json").is_file()
    assert "trained with TensorFlow " in out.split("== smoke run passed")[1]
