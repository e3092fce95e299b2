"""A tiny data set and a tiny trained classifier + segmenter, shared by the training tests.

Twelve quarter-resolution (64 x 400) images with simple shapes on noise, two folds, a ResNet18
U-Net with a narrow decoder; no working-directory changes: every path goes through ``--set``.
Import the fixture in a test module with ``from training_fixtures import tiny_run  # noqa: F401``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal.core.rle import encode

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(REPO_ROOT / "configs" / "demo.yaml")
HEIGHT, WIDTH = 64, 400
SEG_EPOCHS = 2


def draw_example(rng: np.random.Generator, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A grey noisy image ``(64, 400)`` uint8 and its masks ``(64, 400, 4)`` uint8 with one shape per class."""
    image = np.clip(rng.normal(110, 12, (HEIGHT, WIDTH)), 0, 255).astype(np.uint8)
    masks = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    for class_id in classes:
        x = int(rng.integers(20, WIDTH - 60))
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        if class_id == 1:  # small dark square
            cv2.rectangle(mask, (x, 20), (x + 8, 28), 1, -1)
        elif class_id == 2:  # thin bright vertical streak
            cv2.rectangle(mask, (x, 5), (x + 3, 58), 1, -1)
        elif class_id == 3:  # bright rectangle
            cv2.rectangle(mask, (x, 10), (x + 40, 40), 1, -1)
        else:  # dark ellipse
            cv2.ellipse(mask, (x + 20, 32), (22, 14), 0, 0, 360, 1, -1)
        masks[..., class_id - 1] |= mask
        image[mask > 0] = 40 if class_id in (1, 4) else 220
    return image, masks


def make_tiny_data(root: Path, count: int = 12, seed: int = 0) -> pd.DataFrame:
    """Write ``train_images/`` and ``train.csv`` in Kaggle's layout; return ``ImageId, has_1..has_4``."""
    rng = np.random.default_rng(seed)
    (root / "train_images").mkdir(parents=True)
    combos = [(3,), (4,), (1, 3), (2,), (), (3, 4), (1,), ()]
    rows, presence = [], []
    for index in range(count):
        image_id = f"tiny{index:03d}.jpg"
        classes = combos[index % len(combos)]
        image, masks = draw_example(rng, classes)
        cv2.imwrite(str(root / "train_images" / image_id), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows += [(image_id, c, encode(masks[..., c - 1])) for c in classes]
        presence.append({"ImageId": image_id, **{f"has_{c}": int(c in classes) for c in range(1, 5)}})
    pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(root / "train.csv", index=False)
    return pd.DataFrame(presence)


def tiny_overrides(data_dir: Path, folds_file: Path, models_dir: Path) -> list[str]:
    """``--set`` values of the tiny configuration (on top of configs/demo.yaml)."""
    values = {
        "data.dir": data_dir, "data.folds_file": folds_file, "data.height": HEIGHT, "data.width": WIDTH,
        "paths.models": models_dir,
        "seg.scale": 1.0, "seg.crop": "[64, 128]", "seg.batch_size": 2, "seg.epochs": SEG_EPOCHS,
        "seg.decoder_filters": "[16, 8, 8, 8, 8]", "seg.early_stopping_patience": 5, "seg.warmup_epochs": 0,
        "seg.validate_last": 1,  # epoch 1 trains only: the path of configs/demo.yaml's validate_last
        "cls.scale": 0.5, "cls.batch_size": 2, "cls.epochs": 1, "cls.dense_units": 8, "cls.warmup_epochs": 0,
        "inference.batch_size": 4, "inference.tta": "[none, hflip]",
    }
    return [part for key, value in values.items() for part in ("--set", f"{key}={value}")]


@dataclass
class TinyRun:
    """Where the tiny run's files are and how to run a command on them."""

    root: Path
    data_dir: Path
    folds_file: Path
    models_dir: Path
    presence: pd.DataFrame

    def arguments(self, models_dir: Path | None = None) -> list[str]:
        return ["--config", CONFIG, *tiny_overrides(self.data_dir, self.folds_file, models_dir or self.models_dir)]

    def fold_dir(self, kind: str, fold: int = 0, models_dir: Path | None = None) -> Path:
        return (models_dir or self.models_dir) / "demo" / kind / f"fold{fold}"

    def subprocess(self, stage: str, *extra: str, models_dir: Path | None = None, env=None, wait: bool = True):
        """Run ``python -m severstal STAGE`` in another process (from the tiny run's root directory)."""
        command = [sys.executable, "-m", "severstal", stage, *self.arguments(models_dir), *extra]
        if not wait:
            return subprocess.Popen(command, cwd=self.root, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        return subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=300)


_TRAINED: dict[str, TinyRun] = {}  # one training per session, however many modules import the fixture


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """Tiny data, folds, and fold 0 of both models trained in this process (about half a minute)."""
    if "run" not in _TRAINED:
        _TRAINED["run"] = train_tiny_run(tmp_path_factory.mktemp("tiny"))
    return _TRAINED["run"]


def train_tiny_run(root: Path) -> TinyRun:
    """Write the tiny data and folds under ``root`` and train fold 0 of both models."""
    from severstal.stages import train

    data_dir = root / "data"
    presence = make_tiny_data(data_dir)
    folds = presence.assign(fold=np.arange(len(presence)) % 2)[["ImageId", "fold", "has_1", "has_2", "has_3",
                                                                   "has_4"]]
    folds_file = root / "folds.csv"
    folds.to_csv(folds_file, index=False)
    run = TinyRun(root, data_dir, folds_file, root / "models", presence)
    for kind in ("seg", "cls"):
        assert train.main(["--model", kind, "--fold", "0", *run.arguments()]) == 0
    return run
