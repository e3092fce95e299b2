"""The config schema: every key's type, range, default and meaning, in one place.

A config is a mapping of sections (``data``, ``seg``, ...) of keys. Each section is a frozen
dataclass below; each field carries its default (the real-data GPU recipe) and a :class:`Rule` that
checks a value and returns its normal form. ``infra.config`` merges the YAML files and ``--set``
overrides onto these defaults and validates the result with :func:`build_sections` before
anything else runs, so an unknown key or a bad value stops a command before TensorFlow is imported
and before any file is written. Values that depend on the data (one positive weight per class) are
checked by :func:`check_against_data` once the data are read.

Standard-library dataclasses rather than a validation library: no dependency to pin in the offline
Kaggle bundle, plain attribute access for the code, and messages written for this project's keys.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.constants import CLASS_IDS, HEIGHT, WIDTH
from ..core.ensemble import FLIPS

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
EFFICIENTNETS = tuple(f"efficientnetb{index}" for index in range(8))
BACKBONES = RESNETS + EFFICIENTNETS  # segmenter encoders and classifier backbones
CLASSIFIER_BACKBONES = BACKBONES + ("inceptionv3",)  # the healthy/defective photo classifiers' usual choice
SEGMENTER_LOSSES = ("bce", "bce_dice", "focal", "focal_tversky")
BCE_LOSSES = ("bce", "bce_dice", "focal")  # the losses with a (weighted) cross-entropy term
CLASSIFIER_MONITORS = ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc")
SEGMENTER_MONITORS = ("val_tuned_dice", "val_loss", "val_dice")
VALIDATE_LAST_HELP = ("validate (and pick the best epoch) in the last N epochs only, with schedule cosine, whose best "
                      "epochs come in its annealed end; null: every epoch")
PATIENCE_HELP = ("epochs without improvement before stopping, with schedule constant (a cosine schedule always runs "
                 "to its end); 0 or null: never")
CROP_MULTIPLE = 32  # a U-Net halves its input five times


class RuleError(ValueError):
    """A value does not fit its rule; the message completes "must be ...": the loader adds where and what."""


@dataclass(frozen=True)
class Rule:
    """How one key's value is checked.

    Args:
        expects: what a valid value is, completing "must be ...", e.g. ``"an integer of at least 1"``.
        convert: returns the normal form of a valid value; raises :class:`RuleError` (with
            ``expects`` or a more precise text) otherwise.
        text: ``--set`` passes the text as it is instead of reading it as YAML (paths, names).
    """

    expects: str
    convert: Callable[[Any], Any]
    text: bool = False

    def __call__(self, value: Any) -> Any:
        return self.convert(value)


def _fail(expects: str) -> None:
    raise RuleError(expects)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Rule:
    """An integer (not a bool) in ``[minimum, maximum]``."""
    bounds = [f"at least {minimum}" if minimum is not None else "", f"at most {maximum}" if maximum is not None else ""]
    expects = "an integer" + (" of " + " and ".join(b for b in bounds if b) if any(bounds) else "")

    def convert(value):
        if not _is_integer(value) or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            _fail(expects)
        return int(value)

    return Rule(expects, convert)


def number(minimum: float | None = None, maximum: float | None = None, above: bool = False,
           below: bool = False) -> Rule:
    """A finite number in the range; ``above``/``below`` exclude the bounds."""
    low = "" if minimum is None else f"{'above' if above else 'at least'} {minimum:g}"
    high = "" if maximum is None else f"{'below' if below else 'at most'} {maximum:g}"
    expects = "a number" + (" " + " and ".join(b for b in (low, high) if b) if low or high else "")

    def convert(value):
        if not _is_number(value):
            _fail(expects)
        if minimum is not None and (value <= minimum if above else value < minimum):
            _fail(expects)
        if maximum is not None and (value >= maximum if below else value > maximum):
            _fail(expects)
        return float(value)

    return Rule(expects, convert)


PROBABILITY = number(0.0, 1.0)


def boolean() -> Rule:
    """``true`` or ``false``."""
    def convert(value):
        if not isinstance(value, bool):
            _fail("true or false")
        return value

    return Rule("true or false", convert)


def choice(*options: Any) -> Rule:
    """One of ``options`` (compared exactly: ``false`` is not ``"false"``)."""
    expects = "one of " + ", ".join("true" if o is True else "false" if o is False else str(o) for o in options)

    def convert(value):
        if not any(value is option or (type(value) is type(option) and value == option) for option in options):
            _fail(expects)
        return value

    return Rule(expects, convert)


def optional(rule: Rule) -> Rule:
    """``null`` or a value of ``rule``."""
    return Rule(f"null or {rule.expects}", lambda value: None if value is None else rule(value), rule.text)


def path() -> Rule:
    """A file or folder path, as text (relative paths are relative to the repository root)."""
    expects = "a path (text)"

    def convert(value):
        if not isinstance(value, str) or not value.strip():
            if _is_number(value):
                raise RuleError(f"{expects}, not the number {value!r}: quote it in YAML (\"{value}\")")
            _fail(expects)
        return value.strip()

    return Rule(expects, convert, text=True)


def name() -> Rule:
    """A name for folders: letters, digits, ``-``, ``_`` and ``.``, not starting with ``.``."""
    expects = "a name of letters, digits, '-', '_' or '.' (not starting with '.')"

    def convert(value):
        if not isinstance(value, str) or not value or value.startswith(".") or not all(
                character.isalnum() or character in "-_." for character in value):
            _fail(expects)
        return value

    return Rule(expects, convert, text=True)


def sequence(rule: Rule, length: int | None = None, increasing: bool = False, distinct: bool = False,
             contains: Any = None, commas: bool = False) -> Rule:
    """A non-empty list of values of ``rule`` (normal form: a tuple).

    Args:
        rule: each element's rule.
        length: the exact length, if fixed.
        increasing: strictly increasing.
        distinct: no value twice.
        contains: a value the list must hold.
        commas: also accept ``"a,b"`` (text split at commas, each part read as YAML would).
    """
    expects = (f"a list of {length} values" if length else "a non-empty list") + f", each {rule.expects}"
    if increasing:
        expects += ", strictly increasing"
    if distinct:
        expects += ", each at most once"
    if contains is not None:
        expects += f", including {contains}"

    def convert(value):
        if commas and isinstance(value, str):
            value = [_scalar(part.strip()) for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not value or (length is not None and len(value) != length):
            _fail(expects)
        try:
            items = tuple(rule(item) for item in value)
        except RuleError:
            _fail(expects)
        if increasing and any(b <= a for a, b in zip(items, items[1:], strict=False)):
            _fail(expects)
        if distinct and len(set(items)) != len(items):
            _fail(expects)
        if contains is not None and contains not in items:
            _fail(expects)
        return items

    return Rule(expects, convert)


def _scalar(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, anything else stays text (for comma-separated lists)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def label() -> Rule:
    """A class name: non-empty text without commas or line breaks (a number is read as its text)."""
    expects = "a class name (text without commas or line breaks)"

    def convert(value):
        if _is_integer(value):
            value = str(value)
        if not isinstance(value, str) or not value.strip() or any(c in value for c in ",\n\r"):
            _fail(expects)
        return value.strip()

    return Rule(expects, convert, text=True)


def crop(multiple: int = 1) -> Rule:
    """``null`` (the whole image) or ``[height, width]`` of positive integers (multiples of ``multiple``)."""
    sides = "positive integers" if multiple == 1 else f"positive multiples of {multiple}"
    expects = f"null or [height, width] with {sides}"

    def convert(value):
        if value is None:
            return None
        if not isinstance(value, list | tuple) or len(value) != 2 or not all(
                _is_integer(side) and side > 0 and side % multiple == 0 for side in value):
            _fail(expects)
        return int(value[0]), int(value[1])

    return Rule(expects, convert)


def encoder_weights() -> Rule:
    """``imagenet``, ``none`` or the path of a local weights file (normal form: ``"none"`` for null)."""
    expects = "imagenet, none or the path of a weights file"

    def convert(value):
        if value is None:
            return "none"
        if not isinstance(value, str) or not value.strip():
            _fail(expects)
        lowered = value.strip().lower()
        if lowered in ("none", "null"):
            return "none"
        return "imagenet" if lowered == "imagenet" else value.strip()

    return Rule(expects, convert, text=True)


def sampling() -> Rule:
    """``false``, ``defect`` (``true`` means the same) or ``classes``."""
    expects = "false, defect (or true) or classes"

    def convert(value):
        if value is True:
            return "defect"
        if value is False or value in ("defect", "classes"):
            return value
        _fail(expects)

    return Rule(expects, convert)


def folds_choice() -> Rule:
    """``all`` or fold numbers (a list, or text such as ``0,1``); normal form ``"all"`` or a sorted tuple."""
    expects = "all or a list of distinct fold numbers such as [0, 1]"
    numbers = sequence(integer(0), distinct=True, commas=True)

    def convert(value):
        if isinstance(value, str) and value.strip().lower() == "all":
            return "all"
        if _is_integer(value):
            value = [value]
        try:
            return tuple(sorted(numbers(value)))
        except RuleError:
            _fail(expects)

    return Rule(expects, convert)


def segmenter_monitor() -> Rule:
    """``val_tuned_dice``, ``val_loss``, ``val_dice`` or ``val_pos_dice_K`` (K: a class number)."""
    expects = "val_tuned_dice, val_loss, val_dice or val_pos_dice_K (K a class number)"

    def convert(value):
        if value in SEGMENTER_MONITORS:
            return value
        suffix = value.removeprefix("val_pos_dice_") if isinstance(value, str) else ""
        if isinstance(value, str) and value.startswith("val_pos_dice_") and suffix.isdigit() and int(suffix) >= 1:
            return value
        _fail(expects)

    return Rule(expects, convert)


def key(default: Any, rule: Rule, help: str) -> Any:
    """A dataclass field: its default, its rule and a one-line meaning."""
    return field(default=default, metadata={"rule": rule, "help": help})


def section_of(default_factory: Callable[[], Any], help: str) -> Any:
    """A nested section (e.g. ``augment``)."""
    return field(default_factory=default_factory, metadata={"help": help})


# ----------------------------------------------------------------------------- the sections

@dataclass(frozen=True)
class DataSection:
    dir: str = key("data/severstal-steel-defect-detection", path(),
                   "the data directory, in the kaggle, masks or folders layout (README: Your own data)")
    folds_file: str = key("folds/folds.csv", path(), "the folds file every trainer reads")
    height: int | None = key(None, optional(integer(1)),
                             "image height in pixels; null: from the data (Kaggle: 256; masks and folders: the "
                             "training images')")
    width: int | None = key(None, optional(integer(1)), "image width in pixels; null: from the data (Kaggle: 1600)")
    classes: tuple[str, ...] | None = key(None, optional(sequence(label(), distinct=True, commas=True)),
                                          "class names in class-number order; null: from the data (Kaggle: 1..4; "
                                          "masks: classes.txt; folders: the class folders)")
    adapt_sizes: bool = key(False, boolean(),
                            "the models' scales, crops and batches and tune's areas are given for Severstal's 256 x "
                            "1600 images: on data of another size, fit them to its images (README: Your own data)")

    # Loading a config fills height, width and classes from the data (infra.config.resolve_data); a config saved
    # before these keys existed was made for Severstal's data, whose values the properties then give.
    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the data set's images."""
        return (HEIGHT if self.height is None else self.height), (WIDTH if self.width is None else self.width)

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The class numbers ``1..C``."""
        return tuple(range(1, self.num_classes + 1))

    @property
    def num_classes(self) -> int:
        return len(CLASS_IDS) if self.classes is None else len(self.classes)


@dataclass(frozen=True)
class PathsSection:
    folds: str = key("folds", path(), "folder of folds files")
    models: str = key("models", path(), "models/<experiment>/: trained folds and thresholds.json")
    reports: str = key("reports", path(), "reports/<experiment>/: figures and score tables")
    submissions: str = key("submissions", path(), "submissions/<experiment>/submission.csv")
    predictions: str = key("predictions", path(),
                           "predictions/<experiment>/: masks/<image stem>.png (masks layout), labels.csv (folders), "
                           "defects.json")
    exports: str = key("exports", path(), "exports/<experiment>/: the SavedModel and export.json (severstal export)")


@dataclass(frozen=True)
class FoldsSection:
    k: int = key(5, integer(2), "number of folds")
    seed: int = key(42, integer(0), "shuffle seed of the split")


@dataclass(frozen=True)
class DemoSection:
    train: int = key(400, integer(1), "training images of the embedded demo data set")
    test: int = key(200, integer(1), "test images of the demo data set")
    seed: int = key(0, integer(0), "seed of the demo data set")


@dataclass(frozen=True)
class SmokeSection:
    train_images: int = key(8, integer(2), "training images of the smoke run's data subset (severstal smoke-data)")
    test_images: int = key(8, integer(1), "test images of the smoke run's data subset")


@dataclass(frozen=True)
class HardwareSection:
    mixed_precision: Any = key("auto", choice("auto", True, False), "auto: on when a GPU is visible, off on a CPU")
    xla: bool = key(False, boolean(), "compile the training step with XLA")
    distribute: bool = key(False, boolean(), "tf.distribute.MirroredStrategy over all visible GPUs")
    require_gpu: bool = key(True, boolean(),
                            "train, oof and predict stop at once when TensorFlow sees no GPU (false: run on the CPU)")


@dataclass(frozen=True)
class AugmentSection:
    hflip: float = key(0.5, PROBABILITY, "probability of a left-right flip")
    vflip: float = key(0.5, PROBABILITY, "probability of a top-bottom flip")
    brightness_contrast: float = key(0.5, PROBABILITY, "probability of a brightness/contrast change")
    mask_dropout: float = key(0.0, PROBABILITY,
                              "probability of 'defect blackout' (1st place): hide a defect, clear its label")


def _classifier_augment() -> AugmentSection:
    return AugmentSection(mask_dropout=0.3)


@dataclass(frozen=True)
class ClassifierSection:
    head: str = key("multilabel", choice("multilabel", "binary", "softmax"),
                    "multilabel: one sigmoid per class; binary: defect / no defect; softmax: one class per image "
                    "(the folders layout, where it is the default)")
    backbone: str = key("resnet34", choice(*CLASSIFIER_BACKBONES), "the classifier's backbone")
    encoder_weights: str = key("imagenet", encoder_weights(), "imagenet | none | path/to/weights.h5")
    scale: float = key(1.0, number(0.0, 1.0, above=True), "images are resized by this factor in the input pipeline")
    crop: tuple[int, int] | None = key((224, 1568), crop(),
                                       "training crop (height, width) at the scaled size; null: the whole image")
    crop_non_empty: float = key(0.0, PROBABILITY,
                                "probability that a crop is centred on a defect (labels follow the crop)")
    balanced_sampling: Any = key(False, sampling(),
                                 "false | defect (defective and clean images equally) | classes (each class and clean)")
    pooling: str = key("avgmax", choice("avg", "max", "avgmax"), "global pooling of the backbone's features")
    dense_units: int = key(128, integer(1), "units of the dense layer of the head")
    dropout: float = key(0.3, number(0.0, 1.0, below=True), "dropout before and after the dense layer")
    bn_momentum: float | None = key(None, optional(number(0.0, 1.0, below=True)),
                                    "null: the backbone's 0.99; lower (0.9) for short runs from scratch")
    batch_size: int = key(16, integer(1), "images per training step")
    epochs: int = key(25, integer(1), "training epochs")
    learning_rate: float = key(3.0e-4, number(0.0, above=True), "peak learning rate (Adam)")
    schedule: str = key("cosine", choice("cosine", "constant"), "learning-rate schedule after the warm-up")
    warmup_epochs: int = key(1, integer(0), "epochs of linear warm-up")
    monitor: str = key("val_loss", choice(*CLASSIFIER_MONITORS), "the validation quantity that picks the best epoch")
    early_stopping_patience: int | None = key(None, optional(integer(0)), PATIENCE_HELP)
    validate_last: int | None = key(None, optional(integer(1)), VALIDATE_LAST_HELP)
    augment: AugmentSection = section_of(_classifier_augment, "training augmentations")


@dataclass(frozen=True)
class SegmenterSection:
    architecture: str = key("unet", choice("unet", "fpn"), "unet | fpn")
    encoder: str = key("resnet34", choice(*BACKBONES), "the encoder backbone")
    encoder_weights: str = key("imagenet", encoder_weights(), "imagenet | none | path/to/weights.h5")
    decoder_filters: tuple[int, ...] = key((256, 128, 64, 32, 16), sequence(integer(1), length=5),
                                           "U-Net decoder blocks, deepest first")
    pyramid_filters: int = key(256, integer(1), "FPN pyramid blocks")
    bn_momentum: float | None = key(None, optional(number(0.0, 1.0, below=True)),
                                    "null: the backbone's 0.99; lower (0.9) for short runs from scratch")
    scale: float = key(1.0, number(0.0, 1.0, above=True), "images are resized by this factor in the input pipeline")
    crop: tuple[int, int] | None = key((256, 512), crop(CROP_MULTIPLE),
                                       "training crop (height, width) at the scaled size; multiples of 32")
    crop_non_empty: float = key(0.9, PROBABILITY,
                                "probability that a crop is centred on a defect when the image has one")
    defect_images_only: bool = key(False, boolean(), "train on the images with a defect only")
    balanced_sampling: Any = key(False, sampling(),
                                 "false | defect | classes (each class and the clean images equally often)")
    loss: str = key("bce_dice", choice(*SEGMENTER_LOSSES),
                    "bce (cross-entropy) | bce_dice (bce_weight x BCE + dice_weight x (1 - soft Dice)) | focal | "
                    "focal_tversky")
    pos_weight: tuple[float, ...] | None = key((2.0, 2.0, 1.0, 1.5), optional(sequence(number(0.0, above=True))),
                                               "positive-pixel weights, one per class, of the cross-entropy term "
                                               "(bce, bce_dice, focal); null: 1")
    bce_weight: float = key(0.75, number(0.0), "weight of the BCE term of bce_dice")
    dice_weight: float = key(0.25, number(0.0), "weight of the soft-Dice term of bce_dice")
    focal_gamma: float = key(2.0, number(0.0), "focal loss exponent")
    batch_size: int = key(16, integer(1), "crops per training step")
    epochs: int = key(40, integer(1), "training epochs")
    learning_rate: float = key(3.0e-4, number(0.0, above=True), "peak learning rate (Adam)")
    schedule: str = key("cosine", choice("cosine", "constant"), "learning-rate schedule after the warm-up")
    warmup_epochs: int = key(1, integer(0), "epochs of linear warm-up")
    monitor: str = key("val_tuned_dice", segmenter_monitor(),
                       "picks the best epoch: val_tuned_dice (Kaggle Dice with the best pixel threshold and minimum "
                       "area per class, tune's grid) | val_dice (at 0.5, no post-processing) | val_loss | "
                       "val_pos_dice_K")
    early_stopping_patience: int | None = key(None, optional(integer(0)), PATIENCE_HELP)
    validate_last: int | None = key(None, optional(integer(1)), VALIDATE_LAST_HELP)
    augment: AugmentSection = section_of(AugmentSection, "training augmentations")


@dataclass(frozen=True)
class InferenceSection:
    batch_size: int = key(8, integer(1), "images per prediction batch (OOF statistics and predict)")
    tta: tuple[str, ...] = key(("none", "hflip"),
                               sequence(choice(*FLIPS), distinct=True, commas=True),
                               "flips averaged for the OOF statistics and for the submission")
    folds: Any = key("all", folds_choice(), "all, or a list of fold numbers to ensemble")
    tile_size: tuple[int, int] | None = key(None, crop(),
                                            "[height, width] of the tiles of images larger than the data set's "
                                            "(masks layout); null: the data set's image size")
    tile_overlap: int = key(96, integer(0), "least overlap of neighbouring tiles, in pixels of the image")


PIXEL_THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80)
MIN_AREAS = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000, 2300, 2600, 3000,
             3400, 3800, 4200, 4600, 5000, 5500, 6000, 7000, 8000, 9000, 10000)


@dataclass(frozen=True)
class TuneSection:
    pixel_thresholds: tuple[float, ...] = key(
        PIXEL_THRESHOLDS, sequence(PROBABILITY, increasing=True, contains=0.5),
        "pixel thresholds searched (0.5, the untuned default, must be among them)")
    min_component_sizes: tuple[int, ...] = key(
        (0, 64, 150, 300), sequence(integer(0), increasing=True, contains=0),
        "minimum connected-component sizes searched, pixels at full resolution (0 must be among them)")
    min_areas: tuple[int, ...] = key(MIN_AREAS, sequence(integer(0), increasing=True),
                                     "minimum mask areas searched, pixels at full resolution")
    classifier_thresholds: tuple[float, ...] = key(
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), sequence(PROBABILITY, increasing=True),
        "classifier thresholds searched (0: no gate)")


# section name -> (dataclass, what it is for); the order is the order of a printed config
SECTIONS: dict[str, tuple[type, str]] = {
    "data": (DataSection, "the data set"),
    "paths": (PathsSection, "where artifacts go (relative to the repository root)"),
    "folds": (FoldsSection, "the K-fold split, made once"),
    "demo": (DemoSection, "the embedded demo data set (severstal demo-data)"),
    "smoke": (SmokeSection, "the smoke run's data subset (bash run_all.sh --smoke)"),
    "hardware": (HardwareSection, "precision and devices"),
    "cls": (ClassifierSection, "the classifier (the gate in front of the segmenter)"),
    "seg": (SegmenterSection, "the segmenter"),
    "inference": (InferenceSection, "OOF statistics and predict"),
    "tune": (TuneSection, "the post-processing grid searched on out-of-fold statistics"),
}
TOP_LEVEL: dict[str, Any] = {
    "experiment": key(None, optional(name()), "experiment name (default: the config file's name)"),
    "seed": key(42, integer(0), "seed of training (weights, shuffling, augmentation)"),
}


@dataclass(frozen=True)
class Sections:
    """A validated config: typed sections plus the two top-level keys."""

    experiment: str | None
    seed: int
    data: DataSection
    paths: PathsSection
    folds: FoldsSection
    demo: DemoSection
    smoke: SmokeSection
    hardware: HardwareSection
    cls: ClassifierSection
    seg: SegmenterSection
    inference: InferenceSection
    tune: TuneSection


# ----------------------------------------------------------------------------- walking the schema

def nested_sections(cls: type) -> dict[str, type]:
    """``{field name: dataclass}`` of the sub-sections of a section (e.g. ``augment``)."""
    return {f.name: f.default_factory().__class__ for f in dataclasses.fields(cls)
            if f.default_factory is not dataclasses.MISSING}


def defaults_tree(cls: type | None = None) -> dict:
    """The defaults as a plain mapping (lists, not tuples): the whole config, or one section."""
    if cls is None:
        tree = {name: field_.default for name, field_ in TOP_LEVEL.items()}
        tree.update({name: defaults_tree(section) for name, (section, _) in SECTIONS.items()})
        return tree
    return to_tree(cls())


def to_tree(value: Any) -> Any:
    """A section (or value) as plain YAML types: dataclasses to mappings, tuples to lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_tree(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_tree(item) for item in value]
    return value


def rule_of(dotted: str) -> Rule | None:
    """The rule of a key such as ``seg.epochs`` or ``seg.augment.hflip``; None for a section or an unknown key."""
    parts = dotted.split(".")
    if len(parts) == 1:
        field_ = TOP_LEVEL.get(parts[0])
        return None if field_ is None else field_.metadata["rule"]
    if parts[0] not in SECTIONS:
        return None
    cls = SECTIONS[parts[0]][0]
    for depth, part in enumerate(parts[1:], start=1):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        if "rule" in fields[part].metadata:
            return fields[part].metadata["rule"] if depth == len(parts) - 1 else None
        cls = nested_sections(cls)[part]
    return None


def known_keys(prefix: str = "") -> list[str]:
    """Every dotted key of the schema under ``prefix`` (``""``: all, ``"seg"``: the segmenter's)."""
    keys = list(TOP_LEVEL) + [f"{name}.{dotted}" for name, (cls, _) in SECTIONS.items() for dotted in _keys(cls)]
    return [k for k in keys if not prefix or k == prefix or k.startswith(prefix + ".")]


def _keys(cls: type) -> list[str]:
    keys = []
    nested = nested_sections(cls)
    for f in dataclasses.fields(cls):
        keys += [f"{f.name}.{sub}" for sub in _keys(nested[f.name])] if f.name in nested else [f.name]
    return keys


def help_of(dotted: str) -> str:
    """The one-line meaning of a key or section."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return TOP_LEVEL[parts[0]].metadata["help"] if parts[0] in TOP_LEVEL else SECTIONS[parts[0]][1]
    cls = SECTIONS[parts[0]][0]
    for part in parts[1:-1]:
        cls = nested_sections(cls)[part]
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}[parts[-1]]


def is_section(dotted: str) -> bool:
    """Whether ``dotted`` names a section (``seg``) or a sub-section (``seg.augment``)."""
    parts = dotted.split(".")
    if parts[0] not in SECTIONS:
        return False
    cls = SECTIONS[parts[0]][0]
    for part in parts[1:]:
        nested = nested_sections(cls)
        if part not in nested:
            return False
        cls = nested[part]
    return True


def build_section(cls: type, values: Mapping, where: Callable[[str], str], prefix: str) -> Any:
    """Validate a complete mapping of one section into its dataclass.

    Args:
        cls: the section's dataclass.
        values: ``{key: value}`` with every key of the section (defaults merged in).
        where: ``dotted key -> where its value came from`` for messages.
        prefix: the section's dotted name, e.g. ``"seg"``.

    Raises:
        RuleError: with the full message (where, key, what is expected, what was given).
    """
    nested = nested_sections(cls)
    converted = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}"
        value = values[f.name]
        if f.name in nested:
            converted[f.name] = build_section(nested[f.name], value, where, dotted)
            continue
        converted[f.name] = check_value(dotted, value, where(dotted))
    return cls(**converted)


def check_value(dotted: str, value: Any, origin: str) -> Any:
    """The normal form of ``value`` for key ``dotted``; :class:`RuleError` naming ``origin`` and the key."""
    rule = rule_of(dotted)
    try:
        return rule(value)
    except RuleError as error:
        shown = f"{value!r}" if not isinstance(value, str) else f"'{value}'"
        raise RuleError(f"{origin}{dotted}: must be {error}, got {shown}") from None


def build_sections(tree: Mapping, where: Callable[[str], str]) -> Sections:
    """Validate a complete config tree (every section and key present) into :class:`Sections`.

    Raises:
        RuleError: the first problem, as one message.
    """
    values = {name: check_value(name, tree[name], where(name)) for name in TOP_LEVEL}
    for name, (cls, _) in SECTIONS.items():
        values[name] = build_section(cls, tree[name], where, name)
    return Sections(**values)


def check_against_data(sections: Sections, num_classes: int, kind: str) -> list[str]:
    """Problems of the keys that depend on the data, for the model ``kind`` about to be trained.

    Only keys that take effect are checked: the training crop against the scaled image size,
    ``seg.pos_weight`` when the loss uses it, a ``val_pos_dice_K`` monitor against the number of classes.

    Returns:
        Messages, empty when everything fits.
    """
    problems = []
    model = getattr(sections, kind)
    if model.crop is not None:
        height = max(1, round(sections.data.shape[0] * model.scale))
        width = max(1, round(sections.data.shape[1] * model.scale))
        if model.crop[0] > height or model.crop[1] > width:
            problems.append(f"{kind}.crop: {model.crop[0]} x {model.crop[1]} is larger than the scaled image "
                            f"{height} x {width} (data.height x data.width x {kind}.scale)")
    if kind == "seg":
        seg = sections.seg
        if seg.loss in BCE_LOSSES and seg.pos_weight is not None and len(seg.pos_weight) != num_classes:
            problems.append(f"seg.pos_weight: the loss {seg.loss} weighs positive pixels per class: {num_classes} "
                            f"weights for this data set (or null), got {len(seg.pos_weight)}")
        if seg.monitor.startswith("val_pos_dice_") and int(seg.monitor.rsplit("_", 1)[1]) > num_classes:
            problems.append(f"seg.monitor: {seg.monitor} names a class the data set does not have "
                            f"(classes 1..{num_classes})")
    return problems


def encoder_weights_problem(sections: Sections, kind: str) -> str | None:
    """The problem of ``<kind>.encoder_weights`` when it names a file that does not exist; None otherwise."""
    setting = getattr(sections, kind).encoder_weights
    if setting in ("imagenet", "none") or Path(setting).is_file():
        return None
    return f"{kind}.encoder_weights: {setting} is neither imagenet, none nor an existing weights file"


def ineffective_keys(sections: Sections, kind: str) -> list[str]:
    """Keys of the model ``kind`` whose values have no effect given its other settings, with the reason.

    Returns:
        One line per key, e.g. ``seg.pos_weight has no effect: the loss focal_tversky has no cross-entropy term``.
    """
    model = getattr(sections, kind)
    notes = []
    if model.early_stopping_patience and model.schedule == "cosine":
        notes.append(f"{kind}.early_stopping_patience has no effect: a cosine schedule runs to its end (early "
                     "stopping applies with schedule constant)")
    if model.validate_last is not None and model.schedule != "cosine":
        notes.append(f"{kind}.validate_last has no effect: with schedule {model.schedule} every epoch is validated "
                     "(early stopping needs them)")
    if model.crop is None and model.crop_non_empty > 0:
        notes.append(f"{kind}.crop_non_empty has no effect: {kind}.crop is null (whole images)")
    if kind == "seg":
        loss = model.loss
        if model.pos_weight is not None and loss not in BCE_LOSSES:
            notes.append(f"seg.pos_weight has no effect: the loss {loss} has no cross-entropy term")
        if loss != "bce_dice":
            notes.append(f"seg.bce_weight and seg.dice_weight have no effect: they weigh the terms of bce_dice, "
                         f"the loss is {loss}")
        if loss != "focal" and model.focal_gamma != SegmenterSection.focal_gamma:
            notes.append(f"seg.focal_gamma has no effect: the loss is {loss}, not focal")
    return notes
