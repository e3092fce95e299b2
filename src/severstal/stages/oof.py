"""Compute the out-of-fold statistics of trained folds (``oof.npz``, ``metrics.json``; see ``nn.oof``).

``train`` runs this at the end of every fold; run it alone after changing ``inference.tta`` or the
``tune`` grid. Statistics made with the same TTA and grid from the same weights are kept (``--force``
recomputes them). Each fold is locked while its statistics are written. The statistics are made with
the TTA and precision ``predict`` uses (``hardware.mixed_precision``; the precision is recorded, and
``predict`` refuses thresholds tuned on another). With ``hardware.require_gpu`` and no GPU, it stops
before anything is read or written.
"""

from __future__ import annotations

import argparse
import sys

from ..infra import locks
from ..infra.artifacts import LOCKS, OOF, FoldState, Paths, fold_label, fold_status, oof_stamp
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.data import TrainingImages, chosen_folds
from ..infra.errors import UserError
from ..infra.oof_files import read_oof_stamp
from ..infra.stamps import Action, decide


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal oof", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--model", choices=("cls", "seg"), required=True, help="classifier or segmenter")
    parser.add_argument("--fold", required=True, help="fold number, several (0,2) or 'all'")
    parser.add_argument("--skip-bad", action="store_true", help="leave out images that check-data rejects")
    parser.add_argument("--force", action="store_true", help="recompute statistics that are up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    kind = args.model
    images = TrainingImages(paths, config.data.shape, args.skip_bad)
    images.check_labels()
    if config.hardware.require_gpu:  # stop before the folds are read or anything is written when there is no GPU
        from ..nn.hardware import announce_devices

        announce_devices(config.hardware)
    computed = 0
    for fold in chosen_folds(args.fold, images.folds):
        label = fold_label(kind, fold, config.experiment_name)
        with locks.hold(paths.models / LOCKS, f"{kind}-fold{fold}", label):
            if fold_status(paths.fold_dir(kind, fold)).state is not FoldState.FINISHED:
                raise UserError(f"{label} has not finished training: run severstal train --model {kind} --fold {fold} "
                                "(it computes the statistics at the end)")
            stamp = oof_stamp(config, paths, kind, fold)
            decision = decide(f"{label}: its OOF statistics", read_oof_stamp(paths.fold_dir(kind, fold) / OOF), stamp,
                              args.force)
            if decision.action is Action.SKIP:
                print(decision.note)
                continue
            if decision.note:
                print(decision.note, flush=True)
            from ..nn.hardware import announce_devices
            from ..nn.oof import compute_oof
            from ..nn.training import release_memory

            if computed:
                release_memory()  # the previous fold's model
            elif not config.hardware.require_gpu:
                announce_devices(config.hardware)
            compute_oof(config, kind, fold, images.split(fold)[1], images.lookup, paths.train_images, stamp)
            computed += 1
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
