"""Train one fold of a classifier or segmenter, resumably, into a fold folder.

``train_fold`` builds the model, writes the fold's ``config.yaml`` and ``stamp.json`` once the
model exists (a config that cannot be built writes nothing), fits with the resumable callbacks
and writes ``training.json`` last: the fold is then finished. The train stage decides which folder
to train into and holds the fold's lock.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from pathlib import Path

from ..infra.artifacts import BACKUP_DIR, BEST_WEIGHTS, CONFIG_FILE, CURVES, FINISHED, LAST_WEIGHTS, STAMP_FILE
from ..infra.config import Config
from ..infra.errors import UserError
from ..infra.figures import save_figure, training_curves
from ..infra.files import write_atomically
from ..infra.schema import ClassifierSection, SegmenterSection, TuneSection
from ..infra.stamps import Stamp, write_stamp
from .callbacks import (
    PauseForTests,
    ResumableBackup,
    TrainingRecord,
    prepare_resume,
    read_history,
    save_weights_atomically,
    saved_epoch_count,
)
from .hardware import configure_hardware, device_line
from .losses import classifier_metrics, segmentation_loss, segmenter_metrics
from .models import build_model
from .pipeline import input_spec, make_samples, training_dataset, validation_dataset
from .schedules import learning_rate_schedule
from .tfsetup import keras, tf


def compile_model(model: keras.Model, kind: str, section: ClassifierSection | SegmenterSection, steps_per_epoch: int,
                  grid: TuneSection, num_classes: int, jit_compile: bool = False) -> keras.Model:
    """Compile with Adam, the section's schedule, its loss and the metrics of its kind.

    Args:
        grid: the ``tune`` section: the segmenter's ``tuned_dice`` searches its pixel thresholds and
            minimum areas (full-size pixels, converted with the section's ``scale``).
        num_classes: the data set's classes (the metrics' channels).
    """
    optimizer = keras.optimizers.Adam(learning_rate_schedule(section, steps_per_epoch))
    if kind == "seg":
        loss = segmentation_loss(section.loss, section.pos_weight, section.bce_weight, section.dice_weight,
                                 section.focal_gamma)
        metrics = segmenter_metrics(num_classes, grid.pixel_thresholds, grid.min_areas, 1.0 / section.scale ** 2)
    else:
        loss = keras.losses.CategoricalCrossentropy(name="cce") if section.head == "softmax" else \
            keras.losses.BinaryCrossentropy(name="bce")
        metrics = classifier_metrics(single_label=section.head == "softmax")
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=bool(jit_compile))
    return model


def monitor_of(section: ClassifierSection | SegmenterSection) -> tuple[str, str]:
    """The validation quantity that picks the best epoch and stops early, and ``max`` or ``min``.

    Losses are minimised, everything else maximised.
    """
    return section.monitor, "min" if section.monitor.endswith("loss") else "max"


def early_stopping_patience(section: ClassifierSection | SegmenterSection) -> int | None:
    """The section's patience with a constant schedule; None (never stop early) with a cosine schedule,
    whose best epochs come in its annealed end."""
    return section.early_stopping_patience if section.schedule == "constant" else None


def validation_epochs(section: ClassifierSection | SegmenterSection) -> list[int]:
    """The 1-based epochs that are validated: the last ``validate_last`` of a cosine schedule, else all."""
    epochs = section.epochs
    first = epochs - section.validate_last + 1 if section.validate_last and section.schedule == "cosine" else 1
    return list(range(max(first, 1), epochs + 1))


def release_memory() -> None:
    """Free the previous fold's models, graphs and datasets before the next fold is built."""
    keras.backend.clear_session()
    gc.collect()


def train_fold(config: Config, kind: str, fold: int, fold_dir: Path, train_ids: list[str], val_ids: list[str],
               lookup: dict, image_dir: Path, stamp: Stamp) -> dict:
    """Train (or resume) one fold in ``fold_dir`` and write its artifacts.

    Args:
        config: the experiment's config.
        kind: ``cls`` or ``seg``.
        fold: the fold number (for messages and ``training.json``).
        fold_dir: the folder to train in (the fold's, or its ``.retrain`` folder).
        train_ids: training image names.
        val_ids: validation image names.
        lookup: ``{ImageId: {ClassId: rle}}`` of the training labels.
        image_dir: the training images.
        stamp: what the fold is made from (written as ``stamp.json``).

    Returns:
        The content of ``training.json``.
    """
    section = config.model(kind)
    seed = config.seed
    keras.utils.set_random_seed(seed)
    strategy, hardware = configure_hardware(config.hardware)
    print(f"{kind} fold {fold}: {len(train_ids)} training / {len(val_ids)} validation images, seed {seed}, "
          f"{hardware}", flush=True)
    spec = input_spec(*config.data.shape, section.scale)
    class_ids = config.data.class_ids
    train_samples = make_samples(train_ids, image_dir, lookup, class_ids)
    if kind == "seg" and section.defect_images_only:
        train_samples = train_samples.subset(train_samples.presence().max(axis=1) > 0)
    batch_size, epochs = section.batch_size, section.epochs
    if 0 < len(train_samples) < batch_size:  # a small data set, e.g. the demo config on a few real images
        print(f"{kind} fold {fold}: {len(train_samples)} training images are fewer than the batch size {batch_size}: "
              f"training with batches of {len(train_samples)}", flush=True)
        batch_size = len(train_samples)
    if not len(train_samples) or not val_ids:
        raise UserError(f"{kind} fold {fold} has {len(train_samples)} training and {len(val_ids)} validation images: "
                        "a fold needs both (more images, or fewer folds with --set folds.k=K)")
    train_data, steps = training_dataset(train_samples, kind, section, spec, seed, batch_size)
    val_data = validation_dataset(make_samples(val_ids, image_dir, lookup, class_ids), kind, section, spec,
                                  config.inference.batch_size)
    with strategy.scope():
        try:
            model = build_model(kind, section, len(class_ids))
        except ValueError as error:  # e.g. ImageNet weights that cannot be downloaded, a foreign weights file
            raise UserError(f"{kind}: {error}") from None
        compile_model(model, kind, section, steps, config.tune, len(class_ids), jit_compile=config.hardware.xla)
    monitor, mode = monitor_of(section)
    patience = early_stopping_patience(section)
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(fold_dir / CONFIG_FILE, config.to_yaml())
    write_stamp(fold_dir / STAMP_FILE, stamp)
    completed = saved_epoch_count(fold_dir)
    state = prepare_resume(fold_dir, completed, monitor, mode)
    if completed:
        print(f"resuming after epoch {completed} of {epochs} ({state.best_text(monitor)}, {state.wait} epoch(s) "
              "without improvement)", flush=True)
    validated = validation_epochs(section)
    if len(validated) < epochs:
        print(f"{kind} fold {fold}: validating epochs {validated[0]}-{epochs} (validate_last {len(validated)})",
              flush=True)
    record = TrainingRecord(fold_dir, monitor, mode, patience, epochs, state, validated)
    # the progress bar first, so that its end-of-epoch line is printed before the summary line
    callbacks = [keras.callbacks.ProgbarLogger(count_mode="steps"), record, ResumableBackup(fold_dir, record)]
    pause = PauseForTests.from_environment()
    if pause is not None:
        callbacks.append(pause)
    started = time.monotonic()
    if completed < epochs and not state.stopped(patience):
        model.fit(train_data, steps_per_epoch=steps, epochs=epochs, validation_data=val_data, validation_freq=validated,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)  # 2: one line per epoch in logs
    else:  # the run was killed after its last epoch was backed up: take the last state from the backup
        latest = tf.train.latest_checkpoint(str(fold_dir / BACKUP_DIR / "chief"))
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    save_weights_atomically(model, fold_dir / LAST_WEIGHTS)
    history = read_history(fold_dir)
    save_figure(training_curves(history, "dice" if kind == "seg" else "f1"), fold_dir / CURVES)
    if not (fold_dir / BEST_WEIGHTS).is_file():
        raise UserError(f"{kind} fold {fold}: {monitor} was never a number (the training diverged?), so no best "
                        f"weights were saved in {fold_dir}; lower the learning rate and run it again with --force")
    summary = {
        "kind": kind, "fold": fold, "epochs_run": len(history), "epochs_planned": epochs,
        "stopped_early": len(history) < epochs, "monitor": monitor, "best_epoch": record.state.best_epoch,
        "best_value": record.state.best_value, "seconds_this_run": round(time.monotonic() - started, 1),
        "training_images": len(train_samples), "validation_images": len(val_ids), "batch_size": batch_size,
        "seed": seed, "devices": device_line(config.hardware),
    }
    write_atomically(fold_dir / FINISHED, json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(fold_dir / BACKUP_DIR, ignore_errors=True)
    print(f"{kind} fold {fold}: finished after {len(history)} epoch(s); {record.state.best_text(monitor)} "
          f"-> {fold_dir / BEST_WEIGHTS}", flush=True)
    return summary
