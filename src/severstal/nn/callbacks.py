"""Training callbacks: resumable backups, atomic best checkpoints, history.csv, early stopping, epoch summaries.

Keras' ``BackupAndRestore`` restores weights, optimizer and epoch after a crash, but not other
callbacks' state. The order of writes at the end of each epoch makes the rest recoverable:

1. an improved model is saved as ``pending-best-epochNNNN.weights.h5`` (temporary file, then rename);
2. its row is appended to ``history.csv`` (rewritten atomically), flagged ``best``;
3. the backup checkpoint of the epoch is written;
4. the pending file replaces ``best.weights.h5``.

A run killed anywhere resumes from the backup's epoch count ``n``: :func:`prepare_resume` cuts
``history.csv`` to ``n`` rows, promotes a pending file whose epoch survived and deletes one that did
not, and rebuilds the best score and early-stopping patience from the kept rows.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..infra.artifacts import BACKUP_DIR, BEST_WEIGHTS, HISTORY, LAST_WEIGHTS
from ..infra.files import atomic_path
from .tfsetup import keras, tf

PENDING_PATTERN = re.compile(r"pending-best-epoch(\d+)\.weights\.h5$")
PAUSE_VARIABLE = "SEVERSTAL_TEST_PAUSE"


def save_weights_atomically(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save the model's weights (not its optimizer's) as ``.weights.h5``, atomically.

    A compiled model's ``save_weights`` to ``*.weights.h5`` would also store the optimizer state
    (three times the size), so the weights are saved through an uncompiled model sharing its layers.
    """
    with atomic_path(path) as temporary:  # keeps the .weights.h5 suffix Keras needs
        keras.Model(model.inputs, model.outputs, name=model.name).save_weights(str(temporary))
    return Path(path)


def write_csv_atomically(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` as CSV, atomically."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


def read_history(fold_dir: str | os.PathLike) -> pd.DataFrame:
    """``history.csv`` of a fold (an empty frame when there is none)."""
    path = Path(fold_dir) / HISTORY
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()


def saved_epoch_count(fold_dir: str | os.PathLike) -> int:
    """Completed epochs recorded in the fold's ``BackupAndRestore`` checkpoint (0 without one)."""
    latest = tf.train.latest_checkpoint(str(Path(fold_dir) / BACKUP_DIR / "chief"))
    if latest is None:
        return 0
    reader = tf.train.load_checkpoint(latest)
    return int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (None: nothing yet; NaN never improves)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


@dataclass
class ResumeState:
    """Best score and patience rebuilt from the kept history rows."""

    completed: int  # epochs already done
    best_value: float | None
    best_epoch: int | None  # 1-based, as in history.csv
    wait: int  # validated epochs since the best one

    def stopped(self, patience: int | None) -> bool:
        """Whether early stopping has already fired."""
        return bool(patience) and self.completed > 0 and self.wait >= patience

    def best_text(self, monitor: str) -> str:
        """``best val_loss 0.1234 at epoch 3``, or that no epoch has been validated yet."""
        if self.best_value is None:
            return f"no {monitor} yet (no validated epoch)"
        return f"best {monitor} {self.best_value:.4f} at epoch {self.best_epoch}"


def rebuild_state(history: pd.DataFrame, monitor: str, mode: str) -> ResumeState:
    """The best value, its epoch and the validated epochs waited since, from history rows in epoch order.

    Unvalidated epochs (``validate_last``: no ``monitor`` value) count for nothing, as in :class:`TrainingRecord`.
    """
    best_value, best_epoch, wait = None, None, 0
    values = history[monitor] if monitor in history else [math.nan] * len(history)  # none validated yet
    for epoch, value in zip(history.get("epoch", []), values, strict=True):
        if math.isnan(float(value)):
            continue
        if is_better(float(value), best_value, mode):
            best_value, best_epoch, wait = float(value), int(epoch), 0
        else:
            wait += 1
    return ResumeState(len(history), best_value, best_epoch, wait)


def prepare_resume(fold_dir: str | os.PathLike, completed: int, monitor: str, mode: str) -> ResumeState:
    """Make the fold's files agree with a backup holding ``completed`` epochs.

    Cuts ``history.csv`` to ``completed`` rows, promotes or deletes pending best-weight files, and
    with ``completed == 0`` removes every earlier training file (a fresh start).

    Returns:
        The rebuilt :class:`ResumeState`.
    """
    fold_dir = Path(fold_dir)
    history = read_history(fold_dir)
    if completed == 0:
        for name in (HISTORY, BEST_WEIGHTS, LAST_WEIGHTS):
            (fold_dir / name).unlink(missing_ok=True)
        history = pd.DataFrame()
    elif len(history) < completed:
        raise RuntimeError(f"{fold_dir / HISTORY} has {len(history)} rows but the backup holds {completed} "
                           "epochs: the fold's files were changed by hand; retrain it with --force")
    elif len(history) > completed:
        history = history.iloc[:completed]
        write_csv_atomically(history, fold_dir / HISTORY)
    kept_best = set(history.loc[history["best"] == 1, "epoch"].astype(int)) if len(history) else set()
    for pending in fold_dir.glob("pending-best-epoch*.weights.h5"):
        epoch = int(PENDING_PATTERN.search(pending.name).group(1))
        if epoch <= completed and epoch in kept_best:
            os.replace(pending, fold_dir / BEST_WEIGHTS)
        else:
            pending.unlink()
    return rebuild_state(history, monitor, mode)


def _format(value: float) -> str:
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"


def epoch_summary(row: dict, epochs: int, monitor: str, improved: bool) -> str:
    """One line per epoch: losses, the validation Dice/F1 and, for a segmenter, Dice per class."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {_format(row['loss'])}"]
    for key in ("val_loss", "val_tuned_dice", "val_dice", "val_f1", "val_auc"):
        if key in row:
            parts.append(f"{key} {_format(row[key])}")
    classes = sorted(int(key.removeprefix("val_pos_dice_")) for key in row if key.startswith("val_pos_dice_"))
    per_class = [row[f"val_pos_dice_{c}"] for c in classes]
    if per_class:
        parts.append(f"val Dice on images with class 1-{len(per_class)}: " + " ".join(f"{v:.3f}" for v in per_class))
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['seconds']:.0f}s")
    if improved:
        parts.append(f"best {monitor} so far")
    return "  ".join(parts)


class TrainingRecord(keras.callbacks.Callback):
    """Writes history.csv, keeps the best weights, stops early, prints a summary line per epoch.

    Args:
        fold_dir: the fold's directory.
        monitor, mode: the quantity that picks the best epoch and whether higher (``max``) is better.
        patience: epochs without improvement before stopping (0 or None: never stop early).
        epochs: the planned number of epochs (for the summary).
        state: the :class:`ResumeState` to continue from.
        validated: the 1-based epochs that are validated (default: all); the others are recorded
            with their training metrics only and cannot become the best.
    """

    def __init__(self, fold_dir, monitor: str, mode: str, patience: int | None, epochs: int, state: ResumeState,
                 validated=None):
        super().__init__()
        self.fold_dir, self.monitor, self.mode = Path(fold_dir), monitor, mode
        self.patience, self.epochs, self.state = patience, epochs, state
        self.validated = set(range(1, epochs + 1) if validated is None else validated)
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        number = epoch + 1
        improved = False
        if number in self.validated:
            if self.monitor not in logs:
                raise KeyError(f"{self.monitor} is not among the epoch's logs {sorted(logs)}")
            value = float(logs[self.monitor])
            improved = is_better(value, self.state.best_value, self.mode)
            if improved:
                save_weights_atomically(self.model, self.fold_dir / f"pending-best-epoch{number:04d}.weights.h5")
                self.state.best_value, self.state.best_epoch, self.state.wait = value, number, 0
            else:
                self.state.wait += 1
        self.state.completed = number
        learning_rate = float(keras.backend.get_value(self.model.optimizer.learning_rate))  # MirroredVariable-safe
        row = {"epoch": number, **{k: float(v) for k, v in sorted(logs.items())},
               "lr": learning_rate, "seconds": time.monotonic() - self.started, "best": int(improved)}
        history = read_history(self.fold_dir)
        write_csv_atomically(pd.concat([history, pd.DataFrame([row])], ignore_index=True),
                             self.fold_dir / HISTORY)
        print(epoch_summary(row, self.epochs, self.monitor, improved), flush=True)
        if self.state.stopped(self.patience):
            print(f"early stopping: no {self.monitor} improvement for {self.patience} epochs "
                  f"({self.state.best_text(self.monitor)})", flush=True)
            self.model.stop_training = True

    def promote(self, epoch: int) -> None:
        """Move the pending best weights of 0-based ``epoch`` (if any) to ``best.weights.h5``."""
        pending = self.fold_dir / f"pending-best-epoch{epoch + 1:04d}.weights.h5"
        if pending.exists():
            os.replace(pending, self.fold_dir / BEST_WEIGHTS)


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` in ``fold_dir/backup`` that promotes the epoch's best weights once backed up.

    Put it after :class:`TrainingRecord` in the callback list. The backup is kept when training ends;
    the train stage deletes it after the fold's final files are written.
    """

    def __init__(self, fold_dir, record: TrainingRecord):
        super().__init__(str(Path(fold_dir) / BACKUP_DIR), save_freq="epoch", delete_checkpoint=False)
        self.record = record

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.record.promote(epoch)


class PauseForTests(keras.callbacks.Callback):
    """Test hook: at (0-based) ``epoch`` and ``batch``, touch ``flag`` and sleep, so a test can kill the run.

    Enabled only by the environment variable ``SEVERSTAL_TEST_PAUSE=EPOCH:BATCH:FLAG_FILE``.
    """

    def __init__(self, epoch: int, batch: int, flag: str):
        super().__init__()
        self.epoch, self.batch, self.flag, self.current = epoch, batch, Path(flag), -1

    @classmethod
    def from_environment(cls) -> PauseForTests | None:
        value = os.environ.get(PAUSE_VARIABLE)
        if not value:
            return None
        epoch, batch, flag = value.split(":", 2)
        return cls(int(epoch), int(batch), flag)

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            self.flag.touch()
            print(f"{PAUSE_VARIABLE}: paused at epoch {self.epoch} batch {batch}", file=sys.stderr, flush=True)
            time.sleep(3600)
