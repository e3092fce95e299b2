"""Score the submission against the test truth and show what each post-processing step adds.

Scores ``submissions/<experiment>/submission.csv`` against ``<data>/test_labels.csv`` with
``metric.score_pairs`` and prints, from ``reports/<experiment>/ablation.json`` (written by
``severstal predict`` in the same pass as the submission), one row per step: all empty, raw
segmenter at 0.5, + tuned pixel/component/area thresholds, + tuned classifier gate, and the final
submission, with mean Dice, its gain over the row above and the Dice of each class. The submission's
own score must equal the ablation's final row. The table is also written to
``reports/<experiment>/score_table.md``; the last line printed is ``mean_dice 0.xxxxxx``.

Own data: the masks layout's label maps (``predictions/<experiment>/masks/``) are scored the same
way against ``test_masks/``; the folders layout's ``labels.csv`` against the test class folders
(accuracy, per-class precision, recall and F1, the majority-class baseline, ``confusion.png``; the
last line printed is ``accuracy 0.xxxxxx``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..core.classification import classification_scores, majority_class
from ..core.ensemble import VARIANT_LABELS, rows_frame
from ..core.labels import presence_columns
from ..core.metric import class_table_text, mean_dice, score_pairs
from ..infra import locks
from ..infra.artifacts import LOCKS, Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.data import read_folds, test_classes, truth_lookup
from ..infra.errors import UserError
from ..infra.figures import label_confusion, save_figure
from ..infra.files import content_sha256, write_atomically
from ..infra.images import image_names, image_sizes
from ..infra.label_maps import label_map_path, read_label_maps
from ..infra.tables import read_checked_submission, read_labels, read_predicted_labels

TOLERANCE = 1e-7  # ablation.json stores Dice rounded to 8 decimals


def submission_row(pairs: pd.DataFrame) -> dict:
    """``{"mean": ..., "class_1": ..., ...}`` of ``score_pairs`` output."""
    row = {"mean": mean_dice(pairs)}
    for class_id in sorted(pairs["ClassId"].unique()):
        row[f"class_{class_id}"] = float(pairs.loc[pairs["ClassId"] == class_id, "dice"].mean())
    return row


def ablation_rows(document: dict) -> list[tuple[str, dict]]:
    """``[(label, {"mean", "gain", "class_1".."class_4"})]`` from an ablation.json document."""
    rows = []
    for variant in document["variants"]:
        values = {"mean": variant["mean_dice"], "gain": variant["gain"]}
        values.update({f"class_{c}": value for c, value in variant["class_dice"].items()})
        rows.append((variant.get("label") or VARIANT_LABELS.get(variant["name"], variant["name"]), values))
    return rows


def check_final_row(document: dict, scored: dict, submission: Path) -> None:
    """UserError unless the ablation was made for this submission and its final row equals ``scored``."""
    rerun = "re-run `severstal predict --force` to remake both"
    if document.get("submission_sha256") != content_sha256(submission):
        raise UserError(f"the ablation report was made for another version of {submission}: {rerun}")
    final = next((v for v in document["variants"] if v["name"] == "final"), None)
    if final is None:
        raise UserError(f"the ablation report has no final row: {rerun}")
    saved = {"mean": final["mean_dice"], **{f"class_{c}": value for c, value in final["class_dice"].items()}}
    differ = [key for key, value in scored.items() if key not in saved or abs(value - saved[key]) > TOLERANCE]
    if differ:
        raise UserError(f"the ablation's final row ({saved['mean']:.6f}) differs from the submission's score "
                        f"({scored['mean']:.6f}) in {', '.join(differ)}: {rerun}")


def markdown_table(rows: list[tuple[str, dict]], class_ids: list[int]) -> str:
    """The score table: one row per step, Dice to 6 decimals."""
    def number(value, signed=False) -> str:
        if value is None or pd.isna(value):
            return ""
        return f"{value:+.6f}" if signed else f"{value:.6f}"

    header = ["step", "mean Dice", "gain", *(f"class {c}" for c in class_ids)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label, values in rows:
        cells = [label, number(values["mean"]), number(values.get("gain"), signed=True),
                 *(number(values.get(f"class_{c}")) for c in class_ids)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(paths: Paths, submission: Path, pairs: pd.DataFrame) -> str:
    """The markdown report: the step table (or the submission's row alone) and the per-class counts."""
    scored = submission_row(pairs)
    document_path = paths.ablation
    if document_path.is_file():
        document = json.loads(document_path.read_text())
        check_final_row(document, scored, submission)
        rows = ablation_rows(document)
        note = f"Steps scored by `severstal predict` in the same pass ({document_path})."
    else:
        empty = submission_row(pairs.assign(dice=(pairs["true_area"] == 0).astype(float)))
        rows = [(VARIANT_LABELS["empty"], empty), (VARIANT_LABELS["final"], {**scored, "gain": scored["mean"] -
                                                                              empty["mean"]})]
        note = (f"No ablation report ({document_path}): `severstal predict --force` makes one when the test truth "
                "exists.")
    class_ids = sorted(int(c) for c in pairs["ClassId"].unique())
    counts = class_table_text(pairs, class_ids)
    images = pairs["ImageId"].nunique()
    return (f"# Score of {submission} ({paths.config.experiment_name})\n\n"
            f"{images:,} test images, {len(pairs):,} (image, class) pairs; {note}\n\n"
            f"{markdown_table(rows, class_ids)}\n\n"
            f"Per class (false positive: a mask predicted on a defect-free pair; false negative: none predicted "
            f"on a defective pair):\n\n```\n{counts}\n```\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    return parser


def kaggle_pairs(paths: Paths) -> tuple[Path, pd.DataFrame]:
    """``(submission.csv, its scored pairs)`` against ``test_labels.csv``."""
    truth_path = paths.test_labels
    if not truth_path.is_file():
        raise UserError(f"no test truth: {truth_path} does not exist. The report needs the test images' labels "
                        "(the demo data set has them; Kaggle keeps the real test truth secret: submit with "
                        "`severstal kaggle-submit` to get a score)")
    submission = paths.submission
    if not submission.is_file():
        raise UserError(f"{submission} does not exist: run `severstal predict --config {paths.config.source}` first")
    frame = read_checked_submission(submission)
    truth = read_labels(truth_path, "test truth")
    try:
        return submission, score_pairs(frame, truth)
    except ValueError as error:
        raise UserError(f"cannot score {submission} against {truth_path}: {error}") from None


def label_map_pairs(paths: Paths) -> tuple[Path, pd.DataFrame]:
    """``(the predicted label-map folder, its scored pairs)`` against ``test_masks/`` (the masks layout)."""
    predictions, class_ids = paths.prediction_masks, paths.config.data.class_ids
    truth = truth_lookup(paths, paths.test_images)
    if truth is None:
        raise UserError(f"no test truth: {paths.test_masks}/ does not exist. The report needs the test images' "
                        "label maps (<image stem>.png, as train_masks/)")
    if not predictions.is_dir():
        raise UserError(f"{predictions}/ does not exist: run `severstal predict --config {paths.config.source}` "
                        "first")
    names = image_names(paths.test_images)
    missing = [name for name in names if not label_map_path(predictions, name).is_file()]
    if missing:
        raise UserError(f"{len(missing):,} test image(s) have no predicted label map in {predictions}/ (e.g. "
                        f"{missing[0]}): re-run `severstal predict --force`")
    frame = read_label_maps(predictions, names, class_ids, "predicted label maps")
    truth_frame = rows_frame((name, class_id, truth.get(name, {}).get(class_id, ""))
                             for name in names for class_id in class_ids)
    sizes = [size for size in image_sizes(paths.test_images, names).values() if size]
    num_pixels = max((height * width for height, width in sizes), default=1)
    try:
        return predictions, score_pairs(frame, truth_frame, num_pixels, class_ids)
    except ValueError as error:
        raise UserError(f"cannot score {predictions}/ against {paths.test_masks}/: {error}") from None


def classification_report(paths: Paths) -> int:
    """The folders layout: ``labels.csv`` against the test class folders: accuracy, per-class precision, recall and
    F1, the majority-class baseline (the most frequent training class) and a confusion-matrix PNG."""
    names = list(paths.config.data.classes)
    truth = test_classes(paths)
    if truth is None:
        raise UserError(f"no test truth: {paths.test_images}/ is not sorted into class folders "
                        f"({paths.test_images}/<class name>/<images>), so the predictions cannot be scored")
    frame = read_predicted_labels(paths.prediction_labels, names)
    missing = sorted(set(truth) - set(frame["image"]))
    if missing:
        raise UserError(f"{len(missing):,} test image(s) are not in {paths.prediction_labels} (e.g. {missing[0]}): "
                        "re-run `severstal predict --force`")
    frame = frame[frame["image"].isin(truth)]
    index = {name: number for number, name in enumerate(names)}
    true = [truth[image] for image in frame["image"]]
    scores = classification_scores(true, [index[label] for label in frame["label"]], names)
    training = read_folds(paths)[presence_columns(paths.config.data.class_ids)].sum().to_numpy()
    majority = majority_class(training)
    baseline = classification_scores(true, [majority] * len(true), names)["accuracy"]
    figure = paths.reports / "confusion.png"
    save_figure(label_confusion(scores["confusion"], names, f"test images: accuracy {scores['accuracy']:.3f} "
                                f"(majority class {baseline:.3f})"), figure)
    text = (f"# Score of {paths.prediction_labels} ({paths.config.experiment_name})\n\n"
            f"{scores['images']:,} labelled test images; confusion matrix in {figure}.\n\n"
            f"| | accuracy | macro F1 |\n|---|---:|---:|\n"
            f"| majority class ({names[majority]}, the most frequent training class) | {baseline:.4f} | |\n"
            f"| the classifier | {scores['accuracy']:.4f} | {scores['macro_f1'] or 0:.4f} |\n\n"
            f"| class | precision | recall | F1 | images |\n|---|---:|---:|---:|---:|\n" +
            "".join(f"| {name} | {_number(row['precision'])} | {_number(row['recall'])} | {_number(row['f1'])} | "
                    f"{row['support']} |\n" for name, row in scores["classes"].items()))
    with locks.hold(paths.reports / LOCKS, "report", f"the score table of {paths.config.experiment_name}"):
        write_atomically(paths.score_table, text)
    print(text)
    print(f"written to {paths.score_table}")
    print(f"majority_accuracy {baseline:.6f}")
    print(f"accuracy {scores['accuracy']:.6f}")
    return 0


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    if paths.layout == "folders":
        return classification_report(paths)
    submission, pairs = label_map_pairs(paths) if paths.layout == "masks" else kaggle_pairs(paths)
    text = build_report(paths, submission, pairs)
    target = paths.score_table
    with locks.hold(paths.reports / LOCKS, "report", f"the score table of {config.experiment_name}"):
        write_atomically(target, text)
    print(text)
    print(f"written to {target}")
    print(f"mean_dice {mean_dice(pairs):.6f}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
