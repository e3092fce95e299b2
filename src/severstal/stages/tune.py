"""Search per-class post-processing thresholds on the out-of-fold statistics of all folds.

Reads ``models/<experiment>/seg/fold<K>/oof.npz`` (and ``cls/fold<K>/oof.npz`` when the
classifier's exist) for every fold, tunes each class's classifier threshold, pixel threshold,
minimum component size and minimum area on the ``tune`` grid of the config, and writes
``models/<experiment>/thresholds.json`` (docs/thresholds-format.md: with the fingerprints of the
OOF files and of the weights they were made from, which ``predict`` checks) plus one heatmap per
class and ``operating_points.png`` (image-level precision against recall) in ``reports/<experiment>/``.
Prints the tuned, untuned and held-out-fold scores per class and the image-level recall, precision and
false alarms (in-sample and on each held-out fold), ending with ``cv_mean_dice``. Thresholds tuned with
the same grid and objective on the same OOF files are kept.

--objective kaggle maximises the Kaggle mean Dice; recall:R (0 < R <= 1) takes per class the setting with
the fewest false-positive images among those that find the class in at least R of the images that have
it; f1 the best image-level F1. The folders layout applies them to per-class decision thresholds. The
objective is an operating decision, not part of the config: another one tunes again (in seconds), and
without --objective tune keeps the one thresholds.json was tuned for (kaggle for a first tune), so a
re-run of run_all.sh keeps a chosen operating point.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..core.classification import (
    KAGGLE,
    RECALL,
    Objective,
    OperatingPoint,
    classification_scores,
    decide_classes,
    decision_document,
    majority_class,
    pooled_points,
    precision_recall_points,
    reaches,
)
from ..core.labels import presence_columns
from ..core.oofstats import OOFStatistics, combine_folds
from ..core.thresholds import SearchGrid, SearchResult, search_thresholds, thresholds_document
from ..infra import locks
from ..infra.artifacts import LOCKS, MODEL_NAMES, TUNE_KEYS, Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.config import Config, select
from ..infra.data import read_folds
from ..infra.errors import UserError
from ..infra.figures import label_confusion, operating_points_figure, save_figure, threshold_heatmap
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


OBJECTIVE_KEY = "objective"  # the --objective option in the stamp's inputs: another one tunes again


def current_stamp(config: Config, fingerprints: dict[str, str], objective: Objective) -> Stamp:
    """The stamp tune would save now: the config's tune keys; the OOF files' fingerprints and the objective as
    inputs."""
    return Stamp.of(config, TUNE_KEYS, {**fingerprints, OBJECTIVE_KEY: str(objective)})


def saved_thresholds(path: Path) -> dict | None:
    """An existing thresholds.json, parsed (None when missing or unreadable)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def recorded_objective(path: Path) -> Objective:
    """The objective an existing thresholds.json was tuned for (``kaggle`` for none, or one made before
    objectives were recorded)."""
    saved = saved_thresholds(path) or {}
    try:
        return Objective.parse(str(saved.get("objective", KAGGLE)))
    except ValueError:
        return Objective.parse(KAGGLE)


def previous_stamp(path: Path) -> Stamp | None:
    """The stamp of an existing thresholds.json (its ``config``, ``inputs`` and ``objective``); None when
    unreadable. A file made before objectives were recorded was tuned for ``kaggle``."""
    saved = saved_thresholds(path)
    if saved is None or not isinstance(saved.get("config"), dict) or "classes" not in saved or (
            "tuned_on" not in saved):  # made before the flips and precision were recorded: tune again
        return None
    return Stamp(TUNE_KEYS, select(saved["config"], TUNE_KEYS),
                 {**dict(saved.get("inputs") or {}), OBJECTIVE_KEY: str(saved.get("objective", KAGGLE))})


def objective_of(text: str) -> Objective:
    """``--objective`` parsed (UserError naming the option and what is wrong)."""
    try:
        return Objective.parse(text)
    except ValueError as error:
        raise UserError(f"--objective {error}") from None


def objective_line(objective: Objective) -> str:
    """What the objective chooses, in one line."""
    if objective.kind == RECALL:
        return (f"objective {objective}: per class the fewest false-positive images among the settings that find the "
                f"class in at least {objective.target:g} of the images that have it")
    if objective.kind == KAGGLE:
        return "objective kaggle: per class the best mean Dice (image-level counts shown for information)"
    return f"objective {objective}: per class the best image-level F1, then the fewest false-positive images"


def operating_text(labels: list[str], objective: Objective, operating: list[OperatingPoint],
                   heldout: dict[int, list[OperatingPoint]], found: str) -> str:
    """The image-level table: per class recall, precision and false alarms in-sample and pooled over the held-out
    folds, then each held-out fold's recall (``<`` marks a fold below a recall target); ``found`` says when a
    class counts as found in an image."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    def cells(point: OperatingPoint) -> str:
        return (f"{f'{number(point.recall)} ({point.tp}/{point.positives})':>20}{number(point.precision):>10}"
                f"{f'{number(point.false_alarm_rate)} ({point.fp}/{point.negatives})':>30}  ")

    width = max(6, *(len(label) for label in labels))
    titles = f"{'recall (found/with)':>20}{'precision':>10}{'false alarms (found/without)':>30}  "
    lines = [objective_line(objective),
             f"image level: a class is found in an image where {found}; recall = found / images with it, false "
             "alarms = found / images without it",
             f"{'':<{width}}{'in-sample':^62}" + (f"|{'held-out folds, pooled':^62}" if heldout else ""),
             f"{'class':<{width}}{titles}" + (f"|{titles}" if heldout else "")]
    pooled = pooled_points(heldout)
    for channel, label in enumerate(labels):
        lines.append(f"{label:<{width}}{cells(operating[channel])}" + (f"|{cells(pooled[channel])}" if heldout else ""))
    lines = [line.rstrip() for line in lines]
    if heldout:
        target = f"; < below the target {objective.target:g}" if objective.kind == RECALL else ""
        lines.append(f"held-out recall per fold (each fold found with the setting tuned on the other folds{target}):")
        lines.append(f"{'class':<{width}}" + "".join(f"{f'fold {fold}':>11}" for fold in heldout))
        for channel, label in enumerate(labels):
            row = ""
            for points in heldout.values():
                mark = "<" if reaches(points[channel], objective) is False else " "
                row += f"{number(points[channel].recall):>10}{mark}"
            lines.append(f"{label:<{width}}{row}")
    return "\n".join(lines)


def curve_of(label: str, tp: np.ndarray, fp: np.ndarray, chosen: OperatingPoint, objective: Objective) -> dict:
    """One panel of ``operating_points.png`` (``figures.operating_points_figure``)."""
    recall, precision, front = precision_recall_points(tp, fp, chosen.positives)
    point = None if chosen.recall is None or chosen.precision is None else (chosen.recall, chosen.precision)
    return {"label": label, "recall": recall, "precision": precision, "front": front, "chosen": point,
            "target": objective.target}


def draw_operating_points(curves: list[dict], objective: Objective, paths: Paths, what: str) -> Path:
    """``reports/<experiment>/operating_points.png``."""
    return save_figure(operating_points_figure(curves, f"image-level precision against recall of {what}; "
                                                       f"objective {objective}"),
                       paths.reports / "operating_points.png")


def report(result: SearchResult) -> str:
    """The per-class table (with what the classifier gate gains on held-out folds and whether it was
    adopted; ``-`` without a classifier, held-out check or gate decision), the image-level table
    (:func:`operating_text`) and the final ``cv_mean_dice`` line."""
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
    if result.objective.kind != KAGGLE:
        lines.append(f"gate+: - the {result.objective} objective searches the classifier threshold with the others "
                     "(no gate decision)")
    elif gain is not None:
        lines.append("gate+: held-out Dice with the classifier gate minus without it; the gate is adopted only "
                     "where it is higher")
    elif result.gated:
        lines.append("gate+: one fold, no held-out check: no classifier gate adopted")
    lines.append(operating_text([str(channel + 1) for channel in range(len(result.thresholds))], result.objective,
                                result.operating, result.heldout_operating, "its post-processed mask is non-empty"))
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
    parser.add_argument("--objective", default=None, metavar="kaggle|recall:R|f1",
                        help="what the thresholds are chosen by: kaggle (the mean Dice), recall:R (the fewest "
                             "false-positive images with an image-level recall of at least R, 0 < R <= 1) or f1 (the "
                             "best image-level F1); default: the one thresholds.json was tuned for, else kaggle")
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


def tune_classifier(config: Config, paths: Paths, force: bool, objective: Objective) -> int:
    """The folders layout: the decision is the most probable class (``kaggle``) or, by a ``recall:R`` / ``f1``
    objective, the most probable of the classes flagged by per-class thresholds; its out-of-fold scores, with the
    majority-class baseline and each class's image-level operating point, go into thresholds.json (with the weights
    and the predictions' flips and precision, which predict checks), a confusion-matrix PNG and
    ``operating_points.png``."""
    files = paths.oof_files("cls")
    missing = {fold: path for fold, path in files.items() if not path.is_file()}
    if missing:
        raise UserError(missing_folds_message("cls", missing, config))
    names = list(config.data.classes)
    fingerprints = {path.as_posix(): file_fingerprint(path) for path in files.values()}
    decision = decide(str(paths.thresholds), previous_stamp(paths.thresholds),
                      current_stamp(config, fingerprints, objective), force)
    if decision.action is Action.SKIP:
        print(decision.note)
        print(f"cv_accuracy {json.loads(paths.thresholds.read_text())['cv_accuracy']:.6f}")
        return 0
    if decision.note:
        print(decision.note)
    folds = read_folds(paths).set_index("ImageId")
    truth_of = dict(zip(folds.index, np.argmax(folds[presence_columns(config.data.class_ids)].to_numpy(), axis=1),
                        strict=True))
    weights, tuned_on, truth, probabilities, fold_of = {}, None, [], [], []
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
        truth += [truth_of[str(i)] for i in part["image_ids"]]
        probabilities.append(part["probabilities"])
        fold_of += [fold] * len(part["image_ids"])
        weights[fold] = (part["stamp"].inputs.get("weights") if part["stamp"] else None) or "unknown"
    truth, fold_of = np.asarray(truth, np.int64), np.asarray(fold_of)
    chosen = decide_classes(np.concatenate(probabilities), truth, fold_of, objective)  # (N, C) probabilities
    scores = classification_scores(truth, chosen.predicted, names)
    per_fold = {fold: classification_scores(truth[fold_of == fold], chosen.heldout_predicted[fold_of == fold],
                                            names)["accuracy"] for fold in files}
    counts = np.bincount(truth, minlength=len(names))
    majority = majority_class(counts)
    document = {
        "kind": "classification", "experiment": config.experiment_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "classes": names,
        **decision_document(chosen, names),
        "cv_accuracy": scores["accuracy"], "oof": scores, "heldout_accuracy_per_fold": per_fold,
        "majority_class": names[majority], "majority_accuracy": float(counts[majority] / counts.sum()),
        "config": config.raw, "inputs": fingerprints, "weights": {"cls": weights}, "tuned_on": tuned_on,
    }
    write_json(paths.thresholds, document)
    figure = paths.reports / "confusion_oof.png"
    save_figure(label_confusion(scores["confusion"], names, f"out-of-fold, {len(files)} folds: accuracy "
                                f"{scores['accuracy']:.3f}"), figure)
    curves = [curve_of(name, *chosen.curves[c], chosen.operating[c], objective) for c, name in enumerate(names)]
    operating_figure = draw_operating_points(curves, objective, paths, "each class's probability threshold")
    rule = ("each image gets its most probable class" if chosen.thresholds is None else
            "each image gets its most probable class among those whose probability reaches the class's threshold ("
            + ", ".join(f"{name} {value:.4f}" for name, value in zip(names, chosen.thresholds, strict=True))
            + "), or its most probable class when none does")
    print(f"classification (folders layout): {rule}; wrote {paths.thresholds}, {figure} and {operating_figure}")
    print(classification_text(scores, names))
    print(f"majority class ({names[majority]}) accuracy {document['majority_accuracy']:.4f}; per fold: "
          + ", ".join(f"fold {fold} {value:.4f}" for fold, value in per_fold.items()))
    print(operating_text(names, objective, chosen.operating, chosen.heldout_operating,
                         "it is the label" if chosen.thresholds is None else "its probability reaches its threshold"))
    print(f"cv_accuracy {scores['accuracy']:.6f}")
    return 0


def run(args: argparse.Namespace) -> int:
    objective = objective_of(args.objective) if args.objective is not None else None
    config = config_from_args(args)
    paths = Paths(config)
    if objective is None:
        objective = recorded_objective(paths.thresholds)
    if paths.layout == "folders":
        with locks.hold(paths.models / LOCKS, "thresholds", f"the thresholds of {config.experiment_name}"):
            return tune_classifier(config, paths, args.force, objective)
    grid = SearchGrid(config.tune.pixel_thresholds, config.tune.min_component_sizes, config.tune.min_areas,
                      config.tune.classifier_thresholds)
    with locks.hold(paths.models / LOCKS, "thresholds", f"the thresholds of {config.experiment_name}"):
        inputs = find_inputs(config, paths)
        fingerprints = {path.as_posix(): file_fingerprint(path) for files in inputs.values() for path in files.values()}
        decision = decide(str(paths.thresholds), previous_stamp(paths.thresholds),
                          current_stamp(config, fingerprints, objective), args.force)
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
        result = search_thresholds(stats, grid, objective)
        document = thresholds_document(result, config.experiment_name, config.raw, len(inputs["seg"]), fingerprints,
                                       weights, datetime.now(UTC).isoformat(timespec="seconds"), tuned_on)
        write_json(paths.thresholds, document)
        draw_heatmaps(result, paths)
        curves = [curve_of(f"class {channel + 1}", *result.found_tables[channel].reshape(2, -1), point, objective)
                  for channel, point in enumerate(result.operating)]
        operating_figure = draw_operating_points(curves, objective, paths, "the grid's post-processing settings")
    print(f"wrote {paths.thresholds}, heatmaps {paths.reports}/thresholds_class[1-{len(result.thresholds)}].png and "
          f"{operating_figure}")
    for channel in result.below_target():
        print(f"warning: class {channel + 1}: no setting on the grid finds it in {objective.target:g} of the images "
              f"that have it; the best recall reached is {result.operating[channel].recall:.4f} "
              f"({result.operating[channel].tp} of {result.operating[channel].positives}), taken with the fewest "
              "false positives", file=sys.stderr)
    print(report(result))
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
