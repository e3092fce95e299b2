"""Every path and file name of an experiment, the state of a trained fold, and the one up-to-date policy.

Layout (``paths.*`` of the config; ``<experiment>`` from the config, ``--data`` or ``--experiment``)::

    <data.dir>/                            in one of infra.layouts' layouts: kaggle (train.csv, train_images/,
                                           test_images/, sample_submission.csv [, test_labels.csv]), masks
                                           (classes.txt, train_images/, train_masks/, test_images/ [, test_masks/])
                                           or folders (train/<class>/ [, test/])
    <data.folds_file>                      the folds (+ <stem>.config.yaml: the config that made them)
    models/<experiment>/<cls|seg>/fold<K>/ best.weights.h5, last.weights.h5, history.csv, curves.png,
                                           config.yaml, stamp.json, training.json (written last),
                                           oof.npz, metrics.json [, confusion.png]; backup/ while training
    models/<experiment>/<cls|seg>/fold<K>.retrain/   a retrain (--force) until it has finished
    models/<experiment>/thresholds.json
    reports/<experiment>/eda/, thresholds_class<N>.png, ablation.json, ablation_pairs.csv,
                         score_table.md, predictions/
    submissions/<experiment>/submission.csv, submission.meta.json, shards/part-<i>-of-<n>.csv
    predictions/<experiment>/masks/<image stem>.png, masks.meta.json   (masks layout)
    predictions/<experiment>/labels.csv, labels.meta.json              (folders layout)
    <each of models, reports, submissions>/<experiment>/.locks/   held while a stage writes there

Here also: which config keys shape each output (what ``infra.stamps.decide`` compares), the state of
a trained fold, and the thresholds file as ``predict`` and ``bundle`` read it.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.classification import decision_thresholds
from ..core.ensemble import select_folds, shard_file_name
from ..core.thresholds import thresholds_from_document
from .config import Config, select
from .errors import UserError
from .layouts import (
    FOLDERS_TEST,
    FOLDERS_TRAIN,
    SAMPLE_SUBMISSION,
    TEST_IMAGES,
    TEST_LABELS,
    TEST_MASKS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    TRAIN_MASKS,
    LayoutError,
    detect_layout,
    folder_images,
)
from .oof_files import read_oof_stamp
from .stamps import Stamp, file_fingerprint, folder_fingerprint, images_fingerprint, read_stamp, stamp_differences

# ----------------------------------------------------------------------------- file names

# a fold folder
CONFIG_FILE = "config.yaml"
STAMP_FILE = "stamp.json"  # the config keys and inputs the fold was trained with
BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"
FINISHED = "training.json"  # written last by the train stage: the fold's training is complete
HISTORY = "history.csv"
CURVES = "curves.png"
OOF = "oof.npz"
METRICS = "metrics.json"
CONFUSION = "confusion.png"
BACKUP_DIR = "backup"
RETRAIN_SUFFIX = ".retrain"

# an experiment
THRESHOLDS = "thresholds.json"
SUBMISSION = "submission.csv"
LOCKS = ".locks"
MODEL_KINDS = ("cls", "seg")
MODEL_NAMES = {"cls": "classifier", "seg": "segmenter"}

# the config keys that shape each output (what a stage compares before reusing it)
FOLDS_KEYS = ("folds.k", "folds.seed")
EDA_KEYS = ("data.height", "data.width", "data.classes")
OOF_KEYS = ("inference.tta", "tune.pixel_thresholds", "tune.min_component_sizes")
TUNE_KEYS = ("tune", "folds.k")
PREDICT_KEYS = ("inference.tta", "inference.folds", "inference.tile_size", "inference.tile_overlap")


def training_keys(kind: str) -> tuple[str, ...]:
    """The config keys a trained fold of ``kind`` depends on (its inputs are the folds file and labels)."""
    return (kind, "seed", "data.height", "data.width", "data.classes")


class Paths:
    """The paths of one experiment (and of its data directory), from a resolved config."""

    def __init__(self, config: Config):
        self.config = config
        experiment = config.experiment_name
        self.data_dir = Path(config.data.dir)
        folders = self.layout == "folders"  # images in class folders: train/<class>/, test/[<class>/]
        self.train_images = self.data_dir / (FOLDERS_TRAIN if folders else TRAIN_IMAGES)
        self.test_images = self.data_dir / (FOLDERS_TEST if folders else TEST_IMAGES)
        self.train_labels = self.data_dir / TRAIN_LABELS
        self.test_labels = self.data_dir / TEST_LABELS
        self.sample_submission = self.data_dir / SAMPLE_SUBMISSION
        self.train_masks = self.data_dir / TRAIN_MASKS
        self.test_masks = self.data_dir / TEST_MASKS
        self.folds_file = Path(config.data.folds_file)
        self.folds_config = self.folds_file.with_name(f"{self.folds_file.stem}.config.yaml")
        self.models = Path(config.paths.models) / experiment
        self.reports = Path(config.paths.reports) / experiment
        self.submissions = Path(config.paths.submissions) / experiment
        self.prediction_dir = Path(config.paths.predictions) / experiment
        self.prediction_masks = self.prediction_dir / "masks"
        self.prediction_labels = self.prediction_dir / "labels.csv"
        self.defects = self.prediction_dir / "defects.json"
        self.exports = Path(config.paths.exports) / experiment
        self.thresholds = self.models / THRESHOLDS
        self.submission = self.submissions / SUBMISSION
        self.shards = self.submissions / "shards"
        self.eda = self.reports / "eda"
        self.predictions = self.reports / "predictions"
        self.ablation = self.reports / "ablation.json"
        self.ablation_pairs = self.reports / "ablation_pairs.csv"
        self.score_table = self.reports / "score_table.md"

    @functools.cached_property
    def layout(self) -> str:
        """The data directory's layout (``kaggle``, ``masks``, ``folders``).

        A directory in none of them (missing, or with test images only, as in a Kaggle notebook) counts as
        Kaggle's: each stage then names the files it misses (``check-data`` names the layouts).
        """
        try:
            return detect_layout(self.data_dir)
        except LayoutError:
            return "kaggle"

    def model_dir(self, kind: str) -> Path:
        """``models/<experiment>/<cls|seg>``."""
        if kind not in MODEL_KINDS:
            raise ValueError(f"model must be 'cls' or 'seg', got {kind!r}")
        return self.models / kind

    def fold_dir(self, kind: str, fold: int) -> Path:
        """``models/<experiment>/<cls|seg>/fold<K>``."""
        return self.model_dir(kind) / f"fold{int(fold)}"

    def retrain_dir(self, kind: str, fold: int) -> Path:
        """``models/<experiment>/<cls|seg>/fold<K>.retrain``: where ``train --force`` trains a finished fold anew."""
        return self.model_dir(kind) / f"fold{int(fold)}{RETRAIN_SUFFIX}"

    def heatmap(self, class_id: int) -> Path:
        """``reports/<experiment>/thresholds_class<N>.png``."""
        return self.reports / f"thresholds_class{class_id}.png"

    def shard(self, index: int, count: int) -> Path:
        """``submissions/<experiment>/shards/part-<i>-of-<n>.csv``."""
        return self.shards / shard_file_name(index, count)

    def shard_ablation(self, index: int, count: int) -> Path:
        """``reports/<experiment>/shards/ablation-part-<i>-of-<n>.csv``: one shard's ablation pairs."""
        return self.reports / "shards" / f"ablation-{shard_file_name(index, count)}"

    def oof_files(self, kind: str) -> dict[int, Path]:
        """``{fold: models/<experiment>/<kind>/fold<K>/oof.npz}`` for folds 0..k-1."""
        return {fold: self.fold_dir(kind, fold) / OOF for fold in range(self.config.folds.k)}


def sidecar_path(path: Path) -> Path:
    """``submission.csv`` -> ``submission.meta.json``: what the submission was made from."""
    return path.with_suffix(".meta.json")


# ----------------------------------------------------------------------------- trained folds

class FoldState(enum.Enum):
    ABSENT = "absent"  # nothing worth keeping (no folder, or no epoch finished)
    INTERRUPTED = "interrupted"  # epochs done, training not finished: resumable
    FINISHED = "finished"  # training.json and best weights present


@dataclass(frozen=True)
class FoldStatus:
    """What a fold folder holds, compared with what the current config would train.

    ``differences`` lists config keys that differ; ``changed`` names inputs that changed (the folds
    file, the training labels).
    """

    state: FoldState
    directory: Path
    differences: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def current(self) -> bool:
        """Made with the current config from the current inputs."""
        return not self.differences and not self.changed


def has_progress(directory: Path) -> bool:
    """Whether a fold folder holds finished epochs (a backup checkpoint or history rows)."""
    history = directory / HISTORY
    return ((directory / BACKUP_DIR).is_dir() and any((directory / BACKUP_DIR).rglob("*"))) or (
        history.is_file() and history.stat().st_size > 0)


def fold_status(directory: Path, current: Stamp | None = None) -> FoldStatus:
    """The state of one fold folder, and how it differs from ``current`` (when given).

    A folder without ``stamp.json`` (made before stamps existed) is compared on its ``config.yaml``.
    """
    directory = Path(directory)
    finished = (directory / FINISHED).is_file() and (directory / BEST_WEIGHTS).is_file()
    if finished:
        state = FoldState.FINISHED
    elif directory.is_dir() and has_progress(directory):
        state = FoldState.INTERRUPTED
    else:
        return FoldStatus(FoldState.ABSENT, directory)
    if current is None:
        return FoldStatus(state, directory)
    previous = read_stamp(directory / STAMP_FILE)
    if previous is None:
        saved = read_saved_config(directory / CONFIG_FILE)
        previous = Stamp(current.keys, select(saved, current.keys) if saved else {}, {})
        differences, _ = stamp_differences(previous, current)  # inputs were not recorded: taken as unchanged
        return FoldStatus(state, directory, tuple(differences))
    differences, changed = stamp_differences(previous, current)
    return FoldStatus(state, directory, tuple(differences), tuple(changed))


def read_saved_config(path: Path) -> dict | None:
    """A config saved beside an artifact (a fold's ``config.yaml``, a folds file's ``.config.yaml``) as a
    mapping; None when missing or unreadable."""
    try:
        saved = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def fold_numbers(directory: Path) -> list[int]:
    """Fold numbers of the ``fold<K>`` folders in ``models/<experiment>/<kind>``."""
    if not directory.is_dir():
        return []
    return sorted(int(entry.name[4:]) for entry in directory.iterdir()
                  if entry.is_dir() and entry.name.startswith("fold") and entry.name[4:].isdigit())


def finished_folds(paths: Paths, kind: str) -> list[int]:
    """Folds of ``kind`` whose training finished."""
    return [fold for fold in fold_numbers(paths.model_dir(kind))
            if fold_status(paths.fold_dir(kind, fold)).state is FoldState.FINISHED]


def fold_label(kind: str, fold: int, experiment: str) -> str:
    """``"seg fold 0 of demo"``."""
    return f"{kind} fold {fold} of {experiment}"


# ----------------------------------------------------------------------------- thresholds

def _thresholds_json(paths: Paths, trained: str):
    """The parsed ``thresholds.json``; UserError when it is missing (tune after training ``trained``) or not JSON."""
    path = paths.thresholds
    if not path.is_file():
        others = sorted(other.parent.name for other in paths.models.parent.glob(f"*/{THRESHOLDS}"))
        hint = (f" (tuned experiments here: {', '.join(others)}; the demo's config is configs/demo.yaml: give the "
                "--config the run used)") if others else ""
        raise UserError(f"{path} does not exist: run severstal tune first (after training {trained}), "
                        f"e.g. `severstal tune --config {paths.config.source}`{hint}")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path} is not valid JSON ({error}): run severstal tune --force") from None


def read_thresholds(paths: Paths) -> dict:
    """The tuned thresholds document; UserError when missing, unreadable or out of range (naming the key).

    Returns:
        The document (docs/thresholds-format.md) with ``"settings"``: the per-class
        ``ClassThresholds`` in channel order, checked.
    """
    path = paths.thresholds
    document = _thresholds_json(paths, "every fold")
    try:
        settings = thresholds_from_document(document, paths.config.data.num_classes)
    except ValueError as error:
        raise UserError(f"{path}: {error}; run severstal tune --force to tune it again") from None
    return {**document, "settings": settings}


def read_classification_thresholds(paths: Paths) -> dict:
    """The folders layout's thresholds.json (the decision and what it was tuned on); UserError when missing,
    made for another layout or other classes, or with a broken decision.

    Returns:
        The document with ``"decision_thresholds"``: None for the most probable class, else the per-class
        thresholds of ``core.classification.thresholded_classes`` in class order, checked.
    """
    path = paths.thresholds
    document = _thresholds_json(paths, "every classifier fold")
    names = list(paths.config.data.classes)
    if not isinstance(document, dict) or document.get("kind") != "classification" or document.get("classes") != names:
        raise UserError(f"{path} was not tuned for this classification data set (classes "
                        f"{', '.join(paths.config.data.classes)}): run severstal tune --force")
    try:
        thresholds = decision_thresholds(document, names)
    except ValueError as error:
        raise UserError(f"{path}: {error}; run severstal tune --force to tune it again") from None
    return {**document, "decision_thresholds": thresholds}


def tuned_weights(document: Mapping, kind: str) -> dict[int, str]:
    """``{fold: weights fingerprint}`` the thresholds were tuned on (from their OOF files' stamps)."""
    recorded = (document.get("weights") or {}).get(kind) or {}
    return {int(fold): value for fold, value in recorded.items()} if isinstance(recorded, Mapping) else {}


def check_tuned_on(document: Mapping, paths: Paths, kind: str, folds: Iterable[int]) -> dict[int, str]:
    """UserError unless every fold's weights are those whose OOF statistics the thresholds were tuned on.

    A subset of the tuned folds (``predict --folds``) is fine.

    Returns:
        ``{fold: fingerprint of its best.weights.h5}`` (checked: the recorded ones).
    """
    recorded = tuned_weights(document, kind)
    for fold in folds:
        weights = paths.fold_dir(kind, fold) / BEST_WEIGHTS
        if fold not in recorded:
            raise UserError(
                f"{paths.thresholds} was not tuned on {kind} fold {fold}'s out-of-fold statistics (it records "
                f"folds {sorted(recorded) or 'none'}): re-run `severstal oof --model {kind} --fold {fold}` if needed, "
                f"then `severstal tune --config {paths.config.source}`")
        current = file_fingerprint(weights)
        if recorded[fold] != current:
            oof = read_oof_stamp(paths.fold_dir(kind, fold) / OOF)
            steps = (f"`severstal tune --config {paths.config.source}`" if oof and oof.inputs.get("weights") == current
                     else f"`severstal oof --model {kind} --fold {fold}` and `severstal tune --config "
                          f"{paths.config.source}`")
            raise UserError(
                f"{kind} fold {fold}'s weights ({weights}) are not those {paths.thresholds} was tuned on: the fold was "
                f"retrained since. Run {steps}, then predict again")
    return {fold: recorded[fold] for fold in folds}


def check_predicted_like(document: Mapping, paths: Paths, tta: Sequence[str], precision: str) -> None:
    """UserError unless ``tta`` and ``precision`` are those of the OOF predictions the thresholds were tuned on.

    Thresholds tuned on predictions made one way are only right for predictions made the same way
    (averaging fewer flips, or float16 kernels, shift the probabilities near every threshold).
    """
    tuned = document.get("tuned_on")
    if not isinstance(tuned, Mapping):
        raise UserError(f"{paths.thresholds} does not record the flips and precision it was tuned on (it predates "
                        f"them): run `severstal tune --config {paths.config.source} --force`")
    if list(tuned.get("tta") or []) == list(tta) and tuned.get("precision") == precision:
        return
    raise UserError(
        f"{paths.thresholds} was tuned on out-of-fold predictions with flips {','.join(tuned.get('tta') or [])} in "
        f"{tuned.get('precision')}; this predict would use flips {','.join(tta)} in {precision}. Predict as tuned "
        f"(--tta {','.join(tuned.get('tta') or [])}; the precision follows hardware.mixed_precision and the "
        f"devices), or re-tune for these settings on a machine like the one that predicts: `severstal oof --model seg "
        f"--fold all --force --set inference.tta={','.join(tta)}` (the same for --model cls), then `severstal tune "
        f"--config {paths.config.source}`")


@dataclass(frozen=True)
class Ensemble:
    """The fold models a prediction uses: what ``predict`` runs and ``bundle`` ships."""

    folds: list[int]  # the segmenter folds (and the classifier's, when the thresholds gate on it)
    kinds: tuple[str, ...]  # ("seg",) or ("seg", "cls")
    weights: dict[tuple[str, int], str]  # (kind, fold) -> fingerprint of its best.weights.h5, as tuned on


def ensemble_folds(paths: Paths, document: Mapping, spec) -> Ensemble:
    """Choose the folds to ensemble and check them against the tuned thresholds.

    Args:
        paths: the experiment's paths.
        document: the thresholds document (:func:`read_thresholds`).
        spec: ``"all"`` or fold numbers (the config's ``inference.folds``).

    Raises:
        UserError: no finished segmenter fold, a chosen fold that is not finished, a classifier fold
            the gate needs that is not finished, or weights other than those the thresholds were tuned on.
    """
    trained = finished_folds(paths, "seg")
    if not trained:
        raise UserError(f"no trained segmenter fold in {paths.model_dir('seg')}: run `bash run_all.sh` or "
                        "`severstal train --model seg --fold all` and `severstal tune` first.")
    try:
        folds = select_folds(spec, trained)
    except ValueError as error:
        raise UserError(f"--folds / inference.folds: {error}") from None
    gated = any(setting.classifier_threshold > 0 for setting in document["settings"])
    kinds = ("seg", "cls") if gated else ("seg",)
    if gated:
        missing = sorted(set(folds) - set(finished_folds(paths, "cls")))
        if missing:
            raise UserError(f"the tuned thresholds gate on the classifier, but classifier fold(s) {missing} are not "
                            "trained: run `severstal train --model cls --fold all`, or choose other folds (--folds)")
    weights = {(kind, fold): value for kind in kinds for fold, value in check_tuned_on(document, paths, kind,
                                                                                        folds).items()}
    return Ensemble(folds, kinds, weights)


def classifier_ensemble(paths: Paths, document: Mapping, spec) -> Ensemble:
    """:func:`ensemble_folds` of a classification data set (the folders layout): the classifier folds alone.

    Raises:
        UserError: a chosen fold that is not trained, or weights other than those the thresholds were tuned on.
    """
    trained = finished_folds(paths, "cls")
    try:
        folds = select_folds(spec, trained)
    except ValueError as error:
        raise UserError(f"--folds / inference.folds: {error} (trained classifier folds: {trained})") from None
    weights = check_tuned_on(document, paths, "cls", folds)
    return Ensemble(folds, ("cls",), {("cls", fold): value for fold, value in weights.items()})


def ensemble_inputs(paths: Paths, ensemble: Ensemble) -> dict[str, str]:
    """The inputs of what an ensemble makes (predictions, an export): the thresholds file's fingerprint and each
    fold's weights as tuned on, e.g. ``{"thresholds": ..., "seg fold 0 weights": ...}``."""
    return {"thresholds": file_fingerprint(paths.thresholds),
            **{f"{kind} fold {fold} weights": value for (kind, fold), value in ensemble.weights.items()}}


def model_records(paths: Paths, weights: Mapping[tuple[str, int], str]) -> list[dict]:
    """What ``defects.json`` and ``export.json`` record of the model files: kind, fold, file and fingerprint.

    Args:
        weights: ``{(kind, fold): fingerprint of its best.weights.h5}`` (``Ensemble.weights``).
    """
    return [{"kind": kind, "fold": fold, "file": str(paths.fold_dir(kind, fold) / BEST_WEIGHTS), "sha256": value}
            for (kind, fold), value in sorted(weights.items())]


def replace_folder(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``, replacing what is there (renamed away first, then deleted):
    a reader sees the old folder or the new one, and a crash leaves one of them whole."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old)
    else:
        os.replace(new, target)


# ----------------------------------------------------------------------------- the stamps of a fold

def data_inputs(paths: Paths) -> dict[str, str]:
    """The fingerprints of what a fold is trained on: the folds file and the training labels (``train.csv``, or the
    masks layout's label maps)."""
    if paths.layout == "masks":
        labels = folder_fingerprint(paths.train_masks)
    elif paths.layout == "folders":  # the labels are the class folders the images are in
        labels = images_fingerprint(paths.train_images,
                                    [image_id for image_id, _ in folder_images(paths.train_images)])
    else:
        labels = file_fingerprint(paths.train_labels)
    return {"folds file": file_fingerprint(paths.folds_file), "training labels": labels}


def training_stamp(config: Config, paths: Paths, kind: str) -> Stamp:
    """What a trained fold of ``kind`` is made from (``stamp.json`` in its folder)."""
    return Stamp.of(config, training_keys(kind), data_inputs(paths))


# How prediction (and so the OOF statistics) reads an image; change it when nn.pipeline's whole-image decoding
# changes, so that statistics made the old way are computed again (train and oof see a changed input).
PREDICTION_DECODING = "whole image, libjpeg exact IDCT, area resize"


def oof_stamp(config: Config, paths: Paths, kind: str, fold: int) -> Stamp:
    """What a fold's OOF statistics are made from: the TTA and grid, the weights, the folds and labels, and how the
    images were decoded."""
    weights = file_fingerprint(paths.fold_dir(kind, fold) / BEST_WEIGHTS)
    return Stamp.of(config, OOF_KEYS, {"weights": weights, **data_inputs(paths),
                                       "image decoding": PREDICTION_DECODING})
