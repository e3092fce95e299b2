"""Train a classifier or segmenter on one fold (or all folds), resumably; then compute its out-of-fold statistics.

Artifacts go to ``models/<experiment>/<cls|seg>/fold<K>/``: ``best.weights.h5``, ``last.weights.h5``,
``history.csv``, ``curves.png``, ``config.yaml``, ``training.json`` (written last: the fold is
finished) and, from the oof stage, ``oof.npz`` and ``metrics.json``. While training runs,
``backup/`` holds the state a killed run resumes from when the same command is run again.
TensorFlow is imported only once a fold really has to be trained.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.constants import BEST_WEIGHTS, FINISHED
from ..core.labels import read_table, rle_lookup
from ..infra.config import Config, ConfigError, check_saved_config, save_config

TRAINING_SECTIONS = ("data", "folds", "seed")  # plus the model's own section
METRICS = "metrics.json"


def trained_with(kind: str) -> tuple[str, ...]:
    """The config sections a trained fold depends on."""
    return (kind, *TRAINING_SECTIONS)


def oof_settings(config: Config) -> dict:
    """The config values the out-of-fold statistics depend on (beyond the model)."""
    return {"tta": config.get("inference.tta"), "pixel_thresholds": config.get("tune.pixel_thresholds"),
            "min_component_sizes": config.get("tune.min_component_sizes")}


def read_folds(config: Config) -> pd.DataFrame:
    """The folds file (``ImageId, fold, has_1..has_4``); UserError when it is missing or malformed."""
    path = config.folds_file
    if not path.is_file():
        raise UserError(f"folds file {path} does not exist: run severstal folds first "
                        f"(severstal folds --config {config.source})")
    folds = pd.read_csv(path, dtype={"ImageId": str})
    if not {"ImageId", "fold"} <= set(folds.columns):
        raise UserError(f"{path} must have columns ImageId,fold,...: re-make it with severstal folds --force")
    return folds


def fold_numbers(text: str, folds: pd.DataFrame) -> list[int]:
    """``--fold`` as a list: ``all`` or one fold present in the folds file."""
    available = sorted(int(f) for f in folds["fold"].unique())
    if text == "all":
        return available
    try:
        fold = int(text)
    except ValueError:
        raise UserError(f"--fold must be a fold number or 'all', got {text!r}") from None
    if fold not in available:
        raise UserError(f"fold {fold} is not in {available} (the folds file has {len(available)} folds)")
    return [fold]


def training_labels(config: Config) -> dict[str, dict[int, str]]:
    """``{ImageId: {ClassId: rle}}`` from ``<data>/train.csv``."""
    path = config.data_dir / "train.csv"
    if not path.is_file():
        raise UserError(f"{path} does not exist: --data must name a directory in Kaggle's layout")
    return rle_lookup(read_table(path))


def split_ids(folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """``(training image ids, validation image ids)`` of ``fold``."""
    validation = folds["fold"].astype(int) == fold
    return folds.loc[~validation, "ImageId"].tolist(), folds.loc[validation, "ImageId"].tolist()


def unusable_images(config: Config, ids: list[str], skip_bad: bool) -> set[str]:
    """Images among ``ids`` that check-data rejects: UserError with its report, or (``skip_bad``) listed and returned.
    """
    from .check_data import bad_images

    shape = (int(config["data"]["height"]), int(config["data"]["width"]))
    wanted = set(ids)
    bad = {name: reason for name, reason in bad_images(config.data_dir, "train", shape=shape, progress=False).items()
           if name in wanted}
    if not bad:
        return set()
    listing = "\n".join(f"  {name}: {reason}" for name, reason in sorted(bad.items()))
    if not skip_bad:
        raise UserError(f"{len(bad)} training image(s) cannot be used:\n{listing}\n"
                        "Fix or replace them (severstal check-data lists every problem), or re-run with "
                        "--skip-bad to train without them.")
    print(f"--skip-bad: leaving out {len(bad)} image(s):\n{listing}", flush=True)
    return set(bad)


def fold_state(config: Config, kind: str, fold: int, force: bool) -> str:
    """``fresh``, ``resume`` (unfinished training), ``oof`` (trained, OOF missing or stale) or ``done``.

    ``force`` restarts a finished fold or one made with another config; an unfinished fold with the
    same config resumes even then, so re-running an interrupted ``train --force`` command goes on
    where it stopped.

    Raises:
        ConfigError: the fold was made with another config (and ``force`` is not set).
    """
    fold_dir = config.fold_dir(kind, fold)
    if force and fold_dir.exists():
        if not (fold_dir / FINISHED).is_file() and _same_config(fold_dir, config, kind, fold):
            return "resume"
        shutil.rmtree(fold_dir)
        return "fresh"
    if not check_saved_config(fold_dir, config, trained_with(kind), f"{kind} fold {fold}"):
        return "fresh"
    if not (fold_dir / FINISHED).is_file():
        return "resume"
    metrics = fold_dir / METRICS
    if (fold_dir / "oof.npz").is_file() and metrics.is_file():
        if json.loads(metrics.read_text()).get("settings") == oof_settings(config):
            return "done"
    return "oof"


def _same_config(fold_dir: Path, config: Config, kind: str, fold: int) -> bool:
    try:
        return check_saved_config(fold_dir, config, trained_with(kind), f"{kind} fold {fold}")
    except ConfigError:
        return False


def train_fold(config: Config, kind: str, fold: int, train_ids: list[str], val_ids: list[str],
               lookup: dict) -> dict:
    """Train (or resume) one fold and write its artifacts; returns the content of ``training.json``."""
    from ..nn.callbacks import (
        BACKUP_DIR,
        LAST_WEIGHTS,
        PauseForTests,
        ResumableBackup,
        TrainingRecord,
        plot_curves,
        prepare_resume,
        read_history,
        save_weights_atomically,
        saved_epoch_count,
    )
    from ..nn.models import build_model, compile_model, configure_hardware, monitor_of
    from ..nn.pipeline import input_spec, make_samples, training_dataset, validation_dataset
    from ..nn.tfsetup import keras, tf

    section = config[kind]
    fold_dir = config.fold_dir(kind, fold)
    seed = int(config["seed"])
    keras.utils.set_random_seed(seed)
    strategy, hardware = configure_hardware(config["hardware"])
    print(f"{kind} fold {fold}: {len(train_ids)} training / {len(val_ids)} validation images, seed {seed}, "
          f"{hardware}", flush=True)
    image_dir = config.data_dir / "train_images"
    spec = input_spec(int(config["data"]["height"]), int(config["data"]["width"]), float(section.get("scale", 1.0)))
    train_samples = make_samples(train_ids, image_dir, lookup)
    if kind == "seg" and section.get("defect_images_only"):
        train_samples = train_samples.subset(train_samples.presence().max(axis=1) > 0)
    batch_size, epochs = int(section["batch_size"]), int(section["epochs"])
    if 0 < len(train_samples) < batch_size:  # a small data set, e.g. the demo config on a few real images
        print(f"{kind} fold {fold}: {len(train_samples)} training images are fewer than the batch size {batch_size}: "
              f"training with batches of {len(train_samples)}", flush=True)
        batch_size = len(train_samples)
    try:
        train_data, steps = training_dataset(train_samples, kind, section, spec, seed, batch_size)
    except ValueError as error:
        raise UserError(f"{kind}: {error}") from None
    val_data = validation_dataset(make_samples(val_ids, image_dir, lookup), kind, section, spec,
                                  int(config.get("inference.batch_size", batch_size)))
    with strategy.scope():
        try:
            model = build_model(kind, section)
        except ValueError as error:
            raise UserError(f"{kind}: {error}") from None
        compile_model(model, kind, section, steps, jit_compile=bool(config.get("hardware.xla")))
    try:
        monitor, mode = monitor_of(kind, section)
    except ValueError as error:
        raise UserError(str(error)) from None
    patience = section.get("early_stopping_patience")
    completed = saved_epoch_count(fold_dir)
    state = prepare_resume(fold_dir, completed, monitor, mode)
    if completed:
        print(f"resuming after epoch {completed} of {epochs} (best {monitor} {state.best_value:.4f} at epoch "
              f"{state.best_epoch}, {state.wait} epoch(s) without improvement)", flush=True)
    record = TrainingRecord(fold_dir, monitor, mode, patience, epochs, state)
    # the progress bar first, so that its end-of-epoch line is printed before the summary line
    callbacks = [keras.callbacks.ProgbarLogger(count_mode="steps"), record, ResumableBackup(fold_dir, record)]
    pause = PauseForTests.from_environment()
    if pause is not None:
        callbacks.append(pause)
    started = time.monotonic()
    if completed < epochs and not state.stopped(patience):
        model.fit(train_data, steps_per_epoch=steps, epochs=epochs, validation_data=val_data,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)  # 2: one line per epoch in logs
    else:  # the run was killed after its last epoch was backed up: take the last state from the backup
        latest = tf.train.latest_checkpoint(str(fold_dir / BACKUP_DIR / "chief"))
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    save_weights_atomically(model, fold_dir / LAST_WEIGHTS)
    history = read_history(fold_dir)
    plot_curves(history, "dice" if kind == "seg" else "f1", fold_dir / "curves.png")
    if not (fold_dir / BEST_WEIGHTS).is_file():
        raise RuntimeError(f"{fold_dir / BEST_WEIGHTS} was not written: {monitor} was never a number")
    summary = {
        "kind": kind, "fold": fold, "epochs_run": len(history), "epochs_planned": epochs,
        "stopped_early": len(history) < epochs, "monitor": monitor, "best_epoch": record.state.best_epoch,
        "best_value": record.state.best_value, "seconds_this_run": round(time.monotonic() - started, 1),
        "training_images": len(train_samples), "validation_images": len(val_ids), "batch_size": batch_size,
        "seed": seed,
    }
    temporary = fold_dir / f".tmp-{FINISHED}"
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, fold_dir / FINISHED)
    shutil.rmtree(fold_dir / BACKUP_DIR, ignore_errors=True)
    print(f"{kind} fold {fold}: finished after {len(history)} epoch(s); best {monitor} {record.state.best_value:.4f} "
          f"at epoch {record.state.best_epoch} -> {fold_dir / BEST_WEIGHTS}", flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal train", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--model", choices=("cls", "seg"), required=True, help="classifier or segmenter")
    parser.add_argument("--fold", required=True, help="fold number (0..k-1) or 'all'")
    parser.add_argument("--force", action="store_true",
                        help="retrain a finished fold, or one made with another config (an interrupted fold "
                        "with the same config resumes)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out images that check-data rejects (listed in the log) instead of stopping")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    folds = read_folds(config)
    lookup, excluded = None, None
    for fold in fold_numbers(args.fold, folds):
        state = fold_state(config, args.model, fold, args.force)
        fold_dir = config.fold_dir(args.model, fold)
        if state == "done":
            print(f"{args.model} fold {fold}: already trained with this config in {fold_dir}; skipped "
                  "(--force retrains it)")
            continue
        if excluded is None:
            excluded = unusable_images(config, folds["ImageId"].tolist(), args.skip_bad)
        if state == "oof":
            print(f"{args.model} fold {fold}: trained; computing its out-of-fold statistics", flush=True)
        else:
            lookup = lookup if lookup is not None else training_labels(config)
            train_ids, val_ids = (
                [name for name in ids if name not in excluded] for ids in split_ids(folds, fold))
            fold_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, fold_dir)
            train_fold(config, args.model, fold, train_ids, val_ids, lookup)
        from .oof import compute_oof

        compute_oof(config, args.model, fold, exclude=excluded)
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
