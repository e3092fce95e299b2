"""Search per-class post-processing thresholds on the out-of-fold statistics of all folds.

Reads ``models/<experiment>/seg/fold<K>/oof.npz`` (and ``cls/fold<K>/oof.npz`` when the
classifier's exist) for every fold, tunes each class's classifier threshold, pixel threshold,
minimum component size and minimum area on the ``tune`` grid of the config, and writes
``models/<experiment>/thresholds.json`` (docs/thresholds-format.md: with the fingerprints of the
OOF files and of the weights they were made from, which ``predict`` checks) plus one heatmap per
class in ``reports/<experiment>/``. Prints the tuned, untuned and held-out-fold scores per class,
ending with ``cv_mean_dice``. Thresholds tuned with the same grid on the same OOF files are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..core.classification import classification_scores, majority_class, predicted_classes
from ..core.labels import presence_columns
from ..core.oofstats import OOFStatistics, combine_folds
from ..core.thresholds import SearchGrid, SearchResult, search_thresholds, thresholds_document
from ..infra import locks
from ..infra.artifacts import LOCKS, MODEL_NAMES, TUNE_KEYS, Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.config import Config, select
from ..infra.data import read_folds
from ..infra.errors import UserError
from ..infra.figures import label_confusion, save_figure, threshold_heatmap
from ..infra.files import write_json
from ..infra.oof_files import load_classifier_oof, load_segmentation_oof
from ..infra.stamps import Action, Stamp, decide, file_fingerprint


def missing_folds_message(kind: str, missing: dict[int, Path], config: Config) -> str:
    folds = ", ".join(str(fold) for fold in missing)
    listing = "\n  ".join(str(path) for path in missing.values())
    return (f"no out-of-fold {MODEL_NAMES[kind]} statistics for fold(s) {folds}:\n  {listing}\n"
            f"Train them with `severstal train --model {kind} --fold K --config {config.source}` (it computes them), "
            "then run tune again.")


def find_inputs(config: Config, paths: Paths) -> dict[str, dict[int, Path]]:
    """``{"seg": {fold: oof.npz}, "cls": {...}}`` of every fold (``"cls"`` absent when there are none at all)."""
    found = {}
    for kind in ("seg", "cls"):
        files = paths.oof_files(kind)
        missing = {fold: path for fold, path in files.items() if not path.is_file()}
        if kind == "cls" and len(missing) == len(files):
            continue
        if missing:
            note = " (Or delete every cls oof.npz to tune without a classifier gate.)" if kind == "cls" else ""
            raise UserError(missing_folds_message(kind, missing, config) + note)
        found[kind] = files
    return found


def predictions_of(part: dict, path: Path, recompute: str) -> dict:
    """``{"tta": [...], "precision": ...}``: how an OOF file's predictions were made (UserError when unknown)."""
    tta = part["stamp"].config.get("inference.tta") if part["stamp"] else None
    if tta is None or part["precision"] is None:
        raise UserError(f"{path} does not record the flips and precision its predictions were made with (it predates "
                        f"them): {recompute}")
    return {"tta": list(tta), "precision": part["precision"]}


def load_statistics(inputs: dict[str, dict[int, Path]], grid: SearchGrid) -> tuple[OOFStatistics, dict, dict]:
    """Read and join every fold's files, checked against their fold number, the grid and each other's
    flips and precision.

    Returns:
        ``(statistics, {kind: {fold: weights fingerprint}}, tuned_on)``: ``tuned_on`` is
        ``{"tta": [...], "precision": ...}`` of every file, which predict must use too.
    """
    parts, weights, made = {}, {}, {}
    for kind, files in inputs.items():
        parts[kind], weights[kind] = [], {}
        for fold, path in files.items():
            recompute = f"recompute it with `severstal oof --model {kind} --fold {fold} --force`"
            try:
                part = (load_segmentation_oof if kind == "seg" else load_classifier_oof)(path)
            except ValueError as error:
                raise UserError(f"{error}; {recompute}") from None
            if part["fold"] != fold:
                raise UserError(f"{path} holds the statistics of fold {part['fold']}, not fold {fold}: {recompute}")
            if kind == "seg" and not grid.matches(part["pixel_thresholds"], part["min_component_sizes"]):
                raise UserError(
                    f"{path} was computed on pixel thresholds {part['pixel_thresholds'].tolist()} and component sizes "
                    f"{part['min_component_sizes'].tolist()}, but the config's tune section asks for "
                    f"{list(grid.pixel_thresholds)} and {list(grid.min_component_sizes)}: {recompute}, or restore the "
                    "grid")
            parts[kind].append(part)
            weights[kind][fold] = (part["stamp"].inputs.get("weights") if part["stamp"] else None) or "unknown"
            made[path] = predictions_of(part, path, recompute)
    first_path, tuned_on = next(iter(made.items()))
    for path, predictions in made.items():
        if predictions != tuned_on:
            raise UserError(f"{path} was predicted with flips {','.join(predictions['tta'])} in "
                            f"{predictions['precision']}, {first_path} with flips {','.join(tuned_on['tta'])} in "
                            f"{tuned_on['precision']}: thresholds must be tuned on predictions made one way. Recompute "
                            "them all with the same config on one kind of machine: `severstal oof --model seg --fold "
                            "all --force` and `severstal oof --model cls --fold all --force`")
    try:
        return combine_folds(parts["seg"], parts.get("cls")), weights, tuned_on
    except ValueError as error:
        raise UserError(f"the out-of-fold statistics do not fit together: {error}. Recompute them with "
                        "`severstal oof ... --force` after checking that every fold used the same folds file.") \
            from None


def previous_stamp(path: Path) -> Stamp | None:
    """The stamp of an existing thresholds.json (its ``config`` and ``inputs``); None when unreadable."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "classes" not in saved or (
            "tuned_on" not in saved):  # made before the flips and precision were recorded: tune again
        return None
    return Stamp(TUNE_KEYS, select(saved["config"], TUNE_KEYS), dict(saved.get("inputs") or {}))


def report(result: SearchResult) -> str:
    """The per-class table (with what the classifier gate gains on held-out folds and whether it was
    adopted; ``-`` without a classifier or held-out check) and the final ``cv_mean_dice`` line."""
    header = (f"{'class':<6}{'positives':>10}{'classifier':>11}{'pixel':>7}{'component':>10}{'min_area':>9}"
              f"{'tuned':>10}{'default':>10}{'held-out':>10}  gate+")
    lines = [header]
    heldout, gain = result.heldout_per_class, result.gate_heldout_gain
    for channel, setting in enumerate(result.thresholds):
        held = "-" if heldout is None else f"{heldout[channel]:.6f}"
        gate = "-" if gain is None else (f"{gain[channel]:+.6f} "
                                         f"{'adopted' if result.gate_adopted[channel] else 'not adopted'}")
        lines.append(f"{channel + 1:<6}{result.positives[channel]:>10}{setting.classifier_threshold:>11.2f}"
                     f"{setting.pixel_threshold:>7.2f}{setting.min_component_size:>10}{setting.min_area:>9}"
                     f"{result.tuned_per_class[channel]:>10.6f}{result.default_per_class[channel]:>10.6f}{held:>10}"
                     f"  {gate}")
    held = "-" if result.heldout_mean is None else f"{result.heldout_mean:.6f}"
    lines.append(f"{'mean':<6}{result.positives.sum():>10}{'':>37}{result.tuned_mean:>10.6f}"
                 f"{result.default_mean:>10.6f}{held:>10}")
    if result.heldout_per_fold:
        folds = ", ".join(f"fold {fold} {value:.6f}" for fold, value in result.heldout_per_fold.items())
        lines.append(f"held-out (each fold scored with thresholds tuned on the other folds): {folds}")
    if gain is not None:
        lines.append("gate+: held-out Dice with the classifier gate minus without it; the gate is adopted only "
                     "where it is higher")
    elif result.gated:
        lines.append("gate+: one fold, no held-out check: no classifier gate adopted")
    lines.append(f"cv_mean_dice {result.tuned_mean:.6f}")
    return "\n".join(lines)


def draw_heatmaps(result: SearchResult, paths: Paths) -> None:
    """One ``thresholds_class<N>.png`` per class: Dice over (pixel threshold x minimum area)."""
    grid = result.grid
    for channel, chosen in enumerate(result.thresholds):
        title = (f"class {channel + 1}: mean Dice, best over component size and classifier threshold\n"
                 f"chosen (*): pixel {chosen.pixel_threshold:.2f}, component {chosen.min_component_size}, "
                 f"area {chosen.min_area}, classifier {chosen.classifier_threshold:.2f}; "
                 f"tuned {result.tuned_per_class[channel]:.4f}, default {result.default_per_class[channel]:.4f}")
        table = result.score_tables[channel].max(axis=(1, 3))  # (P, A)
        save_figure(threshold_heatmap(table, grid.pixel_thresholds, grid.min_areas,
                                      (chosen.pixel_threshold, chosen.min_area), title), paths.heatmap(channel + 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--force", action="store_true", help="tune again even when thresholds.json is up to date")
    return parser


def classification_text(scores: dict, names: list[str]) -> str:
    """Accuracy, macro F1 and per-class precision, recall and F1 of ``core.classification`` scores, as a table."""
    def number(value) -> str:
        return "   n/a" if value is None else f"{value:6.3f}"

    width = max(8, *(len(name) for name in names))
    lines = [f"{'class':<{width}} {'precision':>9} {'recall':>6} {'f1':>6} {'images':>6}"]
    for name in names:
        row = scores["classes"][name]
        lines.append(f"{name:<{width}} {number(row['precision']):>9} {number(row['recall'])} {number(row['f1'])} "
                     f"{row['support']:>6}")
    lines.append(f"accuracy {scores['accuracy']:.4f} over {scores['images']} images, macro F1 "
                 f"{number(scores['macro_f1']).strip()}")
    return "\n".join(lines)


def tune_classifier(config: Config, paths: Paths, force: bool) -> int:
    """The folders layout: the decision is the most probable class; its out-of-fold scores, with the majority-class
    baseline, go into thresholds.json (with the weights and the predictions' flips and precision, which predict
    checks) and a confusion-matrix PNG."""
    files = paths.oof_files("cls")
    missing = {fold: path for fold, path in files.items() if not path.is_file()}
    if missing:
        raise UserError(missing_folds_message("cls", missing, config))
    names = list(config.data.classes)
    fingerprints = {path.as_posix(): file_fingerprint(path) for path in files.values()}
    current = Stamp.of(config, TUNE_KEYS, fingerprints)
    decision = decide(str(paths.thresholds), previous_stamp(paths.thresholds), current, force)
    if decision.action is Action.SKIP:
        print(decision.note)
        print(f"cv_accuracy {json.loads(paths.thresholds.read_text())['cv_accuracy']:.6f}")
        return 0
    if decision.note:
        print(decision.note)
    folds = read_folds(paths).set_index("ImageId")
    truth_of = dict(zip(folds.index, np.argmax(folds[presence_columns(config.data.class_ids)].to_numpy(), axis=1),
                        strict=True))
    weights, tuned_on, truth, predicted, per_fold = {}, None, [], [], {}
    for fold, path in files.items():
        recompute = f"recompute it with `severstal oof --model cls --fold {fold} --force`"
        try:
            part = load_classifier_oof(path)
        except ValueError as error:
            raise UserError(f"{error}; {recompute}") from None
        made = predictions_of(part, path, recompute)
        if tuned_on is not None and made != tuned_on:
            raise UserError(f"{path} was predicted otherwise than the other folds ({made} vs {tuned_on}): recompute "
                            "them all with `severstal oof --model cls --fold all --force`")
        tuned_on = made
        unknown = [str(i) for i in part["image_ids"] if str(i) not in truth_of]
        if unknown or part["probabilities"].shape[1] != len(names):
            raise UserError(f"{path} does not fit the folds file and classes ({len(unknown)} unknown images, "
                            f"{part['probabilities'].shape[1]} classes for {len(names)}): {recompute}")
        fold_truth = [truth_of[str(i)] for i in part["image_ids"]]
        fold_predicted = predicted_classes(part["probabilities"]).tolist()
        per_fold[fold] = classification_scores(fold_truth, fold_predicted, names)["accuracy"]
        truth += fold_truth
        predicted += fold_predicted
        weights[fold] = (part["stamp"].inputs.get("weights") if part["stamp"] else None) or "unknown"
    scores = classification_scores(truth, predicted, names)
    counts = np.bincount(np.asarray(truth, np.int64), minlength=len(names))
    majority = majority_class(counts)
    document = {
        "kind": "classification", "experiment": config.experiment_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "decision": "argmax", "classes": names,
        "cv_accuracy": scores["accuracy"], "oof": scores, "heldout_accuracy_per_fold": per_fold,
        "majority_class": names[majority], "majority_accuracy": float(counts[majority] / counts.sum()),
        "config": config.raw, "inputs": fingerprints, "weights": {"cls": weights}, "tuned_on": tuned_on,
    }
    write_json(paths.thresholds, document)
    figure = paths.reports / "confusion_oof.png"
    save_figure(label_confusion(scores["confusion"], names, f"out-of-fold, {len(files)} folds: accuracy "
                                f"{scores['accuracy']:.3f}"), figure)
    print(f"classification (folders layout): each image gets its most probable class; wrote {paths.thresholds} "
          f"and {figure}")
    print(classification_text(scores, names))
    print(f"majority class ({names[majority]}) accuracy {document['majority_accuracy']:.4f}; per fold: "
          + ", ".join(f"fold {fold} {value:.4f}" for fold, value in per_fold.items()))
    print(f"cv_accuracy {scores['accuracy']:.6f}")
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    if paths.layout == "folders":
        with locks.hold(paths.models / LOCKS, "thresholds", f"the thresholds of {config.experiment_name}"):
            return tune_classifier(config, paths, args.force)
    grid = SearchGrid(config.tune.pixel_thresholds, config.tune.min_component_sizes, config.tune.min_areas,
                      config.tune.classifier_thresholds)
    with locks.hold(paths.models / LOCKS, "thresholds", f"the thresholds of {config.experiment_name}"):
        inputs = find_inputs(config, paths)
        fingerprints = {path.as_posix(): file_fingerprint(path) for files in inputs.values() for path in files.values()}
        current = Stamp.of(config, TUNE_KEYS, fingerprints)
        decision = decide(str(paths.thresholds), previous_stamp(paths.thresholds), current, args.force)
        if decision.action is Action.SKIP:
            print(decision.note)
            print(f"cv_mean_dice {json.loads(paths.thresholds.read_text())['cv_mean_dice']:.6f}")
            return 0
        if decision.note:
            print(decision.note)
        stats, weights, tuned_on = load_statistics(inputs, grid)
        if "cls" not in inputs:
            print(f"no classifier out-of-fold statistics ({paths.model_dir('cls')}/fold*/oof.npz): "
                  "tuning without a classifier gate")
        print(f"tuning on {stats.count} images from {len(inputs['seg'])} folds, grid {grid.shape} "
              "(pixel thresholds x component sizes x minimum areas x classifier thresholds); predicted with flips "
              f"{','.join(tuned_on['tta'])} in {tuned_on['precision']}, as predict must")
        result = search_thresholds(stats, grid)
        document = thresholds_document(result, config.experiment_name, config.raw, len(inputs["seg"]), fingerprints,
                                       weights, datetime.now(UTC).isoformat(timespec="seconds"), tuned_on)
        write_json(paths.thresholds, document)
        draw_heatmaps(result, paths)
    print(f"wrote {paths.thresholds} and heatmaps {paths.reports}/thresholds_class[1-{len(result.thresholds)}].png")
    print(report(result))
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
