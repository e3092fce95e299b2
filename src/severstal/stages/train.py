"""Train a classifier or segmenter on one fold (or several, or all), resumably; then compute its out-of-fold statistics.

Artifacts go to ``models/<experiment>/<cls|seg>/fold<K>/``: ``best.weights.h5``, ``last.weights.h5``,
``history.csv``, ``curves.png``, ``config.yaml``, ``stamp.json``, ``training.json`` (written last: the
fold is finished) and, from the OOF step, ``oof.npz`` and ``metrics.json``. While training runs,
``backup/`` holds the state a killed run resumes from when the same command is run again.

A finished fold made with the same config from the same folds and labels is skipped. ``--force``
(or changed folds or labels) trains a finished fold again in ``fold<K>.retrain/``, which replaces
the old folder only once it has finished: a failed retrain leaves the old fold in the ensemble, and
the same command resumes it. A fold made with another config stops with the differences unless
``--force``. Each fold is locked while it trains, so two runs never write one fold; different folds
train in parallel. TensorFlow is imported only once a fold really has to be trained, or at once
when the config requires a GPU (``hardware.require_gpu``): without one, train stops before it reads
the folds or writes anything. Before its first fold's work, a run names the devices and precision
(also recorded in ``training.json``); between folds it releases the previous fold's models.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from ..infra import locks
from ..infra.artifacts import (
    LOCKS,
    OOF,
    FoldState,
    Paths,
    fold_label,
    fold_status,
    oof_stamp,
    replace_folder,
    training_stamp,
)
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.config import Config
from ..infra.data import TrainingImages, chosen_folds
from ..infra.errors import ConfigError, UserError, format_problems
from ..infra.oof_files import read_oof_stamp
from ..infra.schema import check_against_data, encoder_weights_problem, ineffective_keys
from ..infra.stamps import Action, decide, different_config_message


def check_before_training(config: Config, images: TrainingImages, kind: str) -> None:
    """The checks that need the data but not TensorFlow: the training labels, per-class keys, a local
    encoder weights file; then the keys that have no effect given the others are listed."""
    layout = images.paths.layout
    if layout == "folders" and kind == "seg":
        raise UserError(f"{config.data.dir} is classification data (the folders layout: one class per image, no "
                        "masks): train the classifier only (severstal train --model cls)")
    images.check_labels()
    problems = check_against_data(config, config.data.num_classes, kind)
    if kind == "cls" and config.cls.head == "softmax" and layout != "folders":
        problems.append(f"cls.head: softmax gives each image one class; the {layout} layout's images may have "
                        "several or none (multilabel or binary)")
    problems += [problem for problem in [encoder_weights_problem(config, kind)] if problem]
    if problems:
        raise ConfigError(f"{config.source}: the config does not fit this data set:\n{format_problems(problems)}")
    for note in ineffective_keys(config, kind):
        print(f"note: {note}")


def oof_current(config: Config, paths: Paths, kind: str, fold: int) -> bool:
    """Whether the fold's OOF statistics were made from its current weights with this config."""
    remedy = (f"Recompute them with `severstal oof --model {kind} --fold {fold} --force` (same --config and --set "
              "options)")
    saved = read_oof_stamp(paths.fold_dir(kind, fold) / OOF)
    label = fold_label(kind, fold, config.experiment_name)
    return decide(f"{label}: its OOF statistics", saved, oof_stamp(config, paths, kind, fold), False,
                  remedy).action is Action.SKIP


def plan_fold(config: Config, paths: Paths, kind: str, fold: int, force: bool):
    """Where fold ``fold`` must be trained: its folder, its ``.retrain`` folder, or nowhere (None)."""
    label = fold_label(kind, fold, config.experiment_name)
    fold_dir, retrain = paths.fold_dir(kind, fold), paths.retrain_dir(kind, fold)
    stamp = training_stamp(config, paths, kind)
    status = fold_status(fold_dir, stamp)
    if status.differences and not force:
        raise ConfigError(different_config_message(label, status.differences, (
            f"Re-run with --force (severstal train --model {kind} --fold {fold} --force) to train it again with the "
            "current config")))
    if status.state is FoldState.FINISHED:
        if status.current and not force:
            if retrain.exists():
                print(f"{label}: an unfinished retrain is in {retrain}; --force resumes it")
            return None, stamp
        reason = "--force" if force else f"{', '.join(status.changed)} changed since it was trained"
        previous = fold_status(retrain, stamp)
        if previous.state is FoldState.INTERRUPTED and previous.current:
            print(f"{label}: {reason}: resuming its unfinished retrain in {retrain}", flush=True)
        else:
            shutil.rmtree(retrain, ignore_errors=True)
            print(f"{label}: {reason}: training it again in {retrain} (the finished fold stays in use until the "
                  "retrain has finished)", flush=True)
        return retrain, stamp
    if status.state is FoldState.INTERRUPTED and status.current:
        return fold_dir, stamp
    if status.state is FoldState.INTERRUPTED:
        why = "made with another config (--force)" if status.differences else f"{', '.join(status.changed)} changed"
        print(f"{label}: the unfinished training was {why}: starting afresh", flush=True)
    shutil.rmtree(fold_dir, ignore_errors=True)  # no finished epoch worth keeping
    return fold_dir, stamp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--model", choices=("cls", "seg"), required=True, help="classifier or segmenter")
    parser.add_argument("--fold", required=True, help="fold number (0..k-1), several (0,2) or 'all'")
    parser.add_argument("--force", action="store_true",
                        help="train a finished fold again (it is replaced once the retrain has finished), or one "
                             "made with another config; an interrupted run with the same config resumes")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out images that check-data rejects (listed in the log) instead of stopping")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    kind = args.model
    images = TrainingImages(paths, config.data.shape, args.skip_bad)
    check_before_training(config, images, kind)
    if config.hardware.require_gpu:  # stop before the folds are read or anything is written when there is no GPU
        from ..nn.hardware import announce_devices

        announce_devices(config.hardware)
    worked = 0  # folds trained or given OOF statistics in this run
    for fold in chosen_folds(args.fold, images.folds):
        label = fold_label(kind, fold, config.experiment_name)
        with locks.hold(paths.models / LOCKS, f"{kind}-fold{fold}", label):
            target, stamp = plan_fold(config, paths, kind, fold, args.force)
            if target is None and oof_current(config, paths, kind, fold):
                print(f"{label}: already trained with this config in {paths.fold_dir(kind, fold)}; skipped "
                      "(--force retrains it)")
                continue
            train_ids, val_ids = images.split(fold)
            from ..nn.hardware import announce_devices
            from ..nn.oof import compute_oof
            from ..nn.training import release_memory, train_fold

            if worked:
                release_memory()  # the previous fold's model and datasets
            elif not config.hardware.require_gpu:
                announce_devices(config.hardware)
            worked += 1
            if target is not None:
                train_fold(config, kind, fold, target, train_ids, val_ids, images.lookup, paths.train_images, stamp)
                if target != paths.fold_dir(kind, fold):
                    replace_folder(target, paths.fold_dir(kind, fold))
                    print(f"{label}: the retrained fold replaced the old one in {paths.fold_dir(kind, fold)}")
            else:
                print(f"{label}: trained; computing its out-of-fold statistics", flush=True)
            compute_oof(config, kind, fold, val_ids, images.lookup, paths.train_images,
                        oof_stamp(config, paths, kind, fold))  # of the weights now in the fold
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
