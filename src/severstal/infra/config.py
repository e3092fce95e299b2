"""Experiment configs: YAML files on top of the schema's defaults, ``--set`` overrides, checked before anything runs.

A config file may name a parent with ``inherit: other.yaml`` (relative to its own folder); the
child's keys are merged into the parent's, section by section, and both onto the defaults of
``infra.schema``. Every file's keys and every ``--set`` key must be known to the schema, and the
merged values are validated by it, so a misspelt key or a bad value stops the command with one
message that names the file (or the override), the key and what is expected. All paths in a
config are relative to the directory the command runs in (the repository root).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.constants import HEIGHT, WIDTH
from .errors import ConfigError
from .layouts import SEVERSTAL_CLASSES, TRAIN_LABELS, LayoutError, data_facts
from .schema import (
    CROP_MULTIPLE,
    SECTIONS,
    TOP_LEVEL,
    ClassifierSection,
    RuleError,
    Sections,
    SegmenterSection,
    build_sections,
    defaults_tree,
    help_of,
    is_section,
    known_keys,
    nested_sections,
    rule_of,
    to_tree,
)

DEFAULT_CONFIG = "configs/default.yaml"
DEMO_CONFIG = "configs/demo.yaml"
REAL_DATA = defaults_tree()["data"]["dir"]  # where download puts the competition, where run_all.sh looks
DEMO_DATA = "data/demo"
INHERIT = "inherit"


def chosen_config(data: str | None = None) -> tuple[str, str | None]:
    """The config a stage reads without ``--config``: the one ``run_all.sh`` chooses, so that the commands of a
    run can be re-run alone without naming it.

    Args:
        data: the stage's ``--data`` (run_all.sh runs other data with the demo config).

    Returns:
        ``(path, why)``: ``why`` says why it is not DEFAULT_CONFIG (None when it is).
    """
    if data is not None:
        return DEMO_CONFIG, f"--data without --config: {DEMO_CONFIG}, as run_all.sh --data uses"
    if not (Path(REAL_DATA) / TRAIN_LABELS).is_file() and Path(DEMO_DATA).is_dir():
        return DEMO_CONFIG, f"{DEMO_DATA}/ is here and {REAL_DATA}/ is not: {DEMO_CONFIG}, as run_all.sh chose"
    return DEFAULT_CONFIG, None


@dataclass(frozen=True)
class Config(Sections):
    """A validated, resolved config: the typed sections plus where it came from.

    ``raw`` is the complete resolved tree in plain YAML types (what ``config.yaml`` beside an
    artifact holds); ``name`` is the config file's stem (``demo``), ``source`` the file as given.
    """

    name: str
    source: str
    raw: dict

    @property
    def experiment_name(self) -> str:
        """The experiment (never None once loaded)."""
        return str(self.experiment)

    def model(self, kind: str) -> ClassifierSection | SegmenterSection:
        """The ``cls`` or ``seg`` section."""
        if kind not in ("cls", "seg"):
            raise ValueError(f"model must be 'cls' or 'seg', got {kind!r}")
        return self.cls if kind == "cls" else self.seg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


# ----------------------------------------------------------------------------- reading files

def suggestion(dotted: str) -> str:
    """``"; did you mean seg.epochs?"`` for a near miss, else the keys of the section it is in."""
    parts = dotted.split(".")
    prefix = ".".join(parts[:-1])
    if prefix and is_section(prefix):
        cls = SECTIONS[parts[0]][0]
        for part in parts[1:-1]:
            cls = nested_sections(cls)[part]
        siblings = [f"{prefix}.{f.name}" for f in dataclasses.fields(cls)]
        where = f"{prefix} has"
    elif prefix:  # a misspelt section: any key may be meant
        siblings, where = known_keys(), "see severstal config for the known keys; the sections are"
    else:
        siblings, where = list(SECTIONS) + list(TOP_LEVEL), "the known sections and keys are"
    close = difflib.get_close_matches(dotted, siblings, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    names = list(SECTIONS) if prefix and not is_section(prefix) else [name.rsplit(".", 1)[-1] for name in siblings]
    return f"; {where}: {', '.join(names)}"


def check_file_keys(tree: Mapping, origin: str, prefix: str = "") -> None:
    """Refuse unknown sections or keys and sections given as scalars in one file's mapping."""
    for name, value in tree.items():
        dotted = f"{prefix}.{name}" if prefix else str(name)
        if not prefix and name == INHERIT:
            continue
        if is_section(dotted):
            if not isinstance(value, Mapping):
                keys = [key.rsplit(".", 1)[-1] for key in known_keys(dotted) if key.count(".") == dotted.count(".") + 1]
                listing = " and ".join([", ".join(keys[:-1]), keys[-1]] if len(keys) > 1 else keys)
                raise ConfigError(f"{origin}{dotted}: must be a mapping with {listing}, got {value!r}")
            check_file_keys(value, origin, dotted)
        elif rule_of(dotted) is None:
            kind = "section" if not prefix else "key"
            raise ConfigError(f"{origin}{dotted}: unknown {kind}{suggestion(dotted)}")


def read_yaml(path: Path) -> dict:
    """One config file's mapping (``{}`` when empty); ConfigError when missing, not YAML or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (configs live in configs/, e.g. configs/demo.yaml)")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(tree).__name__}")
    return tree


def read_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """A config file and the files it inherits from, parent first, each checked for unknown keys."""
    if path.resolve() in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    tree = read_yaml(path)
    check_file_keys(tree, f"{path}: ")
    parent = tree.pop(INHERIT, None)
    if parent is None:
        return [(path, tree)]
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: inherit: must be the file name of the parent config, got {parent!r}")
    return read_chain(path.parent / parent, (*seen, path.resolve())) + [(path, tree)]


# ----------------------------------------------------------------------------- merging with provenance

def merge(base: dict, update: Mapping, origins: dict[str, str], origin: str, prefix: str = "") -> None:
    """Merge ``update`` into ``base`` in place, recording ``origin`` for every key it sets."""
    for name, value in update.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Mapping) and isinstance(base.get(name), dict):
            merge(base[name], value, origins, origin, dotted)
        else:
            base[name] = copy.deepcopy(value)
            origins[dotted] = origin


def parse_assignment(assignment: str, origin: str | None = None) -> tuple[str, Any]:
    """``"seg.epochs=3"`` -> ``("seg.epochs", 3)``: the value read as YAML, or as text for paths and names.

    Args:
        assignment: ``section.key=value``.
        origin: how messages name it (default ``--set section.key=value: ``).
    """
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    dotted, text = (part.strip() for part in assignment.split("=", 1))
    origin = origin or f"--set {assignment}: "
    if is_section(dotted):
        example = known_keys(dotted)[0]
        raise ConfigError(f"{origin}{dotted} is a section: set one of its keys, e.g. {example}=...")
    rule = rule_of(dotted)
    if rule is None:
        raise ConfigError(f"{origin}{dotted}: unknown key{suggestion(dotted)}")
    if rule.text and text.lower() not in ("null", "~"):
        return dotted, text
    try:
        return dotted, yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return dotted, text


def assign(tree: dict, dotted: str, value: Any) -> None:
    """Set a dotted key of a tree in place."""
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node[part]
    node[last] = value


def experiment_slug(text: str) -> str:
    """A folder-safe experiment name made from a data directory's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "data"


def load_config(
    path: str | os.PathLike = DEFAULT_CONFIG,
    overrides: Sequence[str | tuple[str, str]] = (),
    data: str | os.PathLike | None = None,
    experiment: str | None = None,
) -> Config:
    """Load, merge and validate a config with ``--set`` overrides and ``--data``/``--experiment``.

    Args:
        path: YAML file (relative to the working directory).
        overrides: ``section.key=value`` strings; values are read as YAML, except for path and
            name keys, which take the text as it is (``data.dir=2019`` is the folder ``2019``). An
            item may be ``(assignment, origin)`` to be named by ``origin`` in messages (a stage's option).
        data: a data directory that replaces the config's; when it differs, the experiment
            becomes ``<config name>-<base name of data>`` and the folds file
            ``<paths.folds>/<experiment>_folds.csv`` so that runs on different data share nothing.
        experiment: explicit experiment name (wins over the derived one); the folds file stays
            the config's unless ``data`` changed it.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: an unknown key, a bad value or an unreadable file, in one message.
    """
    path = Path(path)
    tree = defaults_tree()
    origins: dict[str, str] = {}
    for file, mapping in read_chain(path):
        merge(tree, mapping, origins, f"{file}: ")
    overridden = set()
    for override in overrides:
        assignment, origin = override if isinstance(override, tuple) else (override, f"--set {override}: ")
        dotted, value = parse_assignment(assignment, origin)
        assign(tree, dotted, value)
        origins[dotted] = origin
        overridden.add(dotted)
    name = path.stem
    if tree["experiment"] is None:
        tree["experiment"] = name
    derived = None
    if data is not None and os.path.normpath(str(data)) != os.path.normpath(str(tree["data"]["dir"])):
        derived = f"{name}-{experiment_slug(Path(os.path.normpath(str(data))).name)}"
        tree["data"]["dir"] = os.path.normpath(str(data))
        origins["data.dir"] = "--data: "
    if experiment or derived:
        tree["experiment"] = experiment or derived
        origins["experiment"] = "--experiment: " if experiment else "--data: "
        if derived and "data.folds_file" not in overridden:  # an explicit override wins
            tree["data"]["folds_file"] = str(Path(str(tree["paths"]["folds"])) / f"{tree['experiment']}_folds.csv")
    resolve_data(tree, origins, overridden)
    return config_from_tree(tree, name, str(path), lambda dotted: origins.get(dotted, f"{path}: "))


def resolve_data(tree: dict, origins: dict[str, str], overridden: set[str]) -> None:
    """Fill ``data.height``, ``data.width`` and ``data.classes`` left null from the data directory, in place,
    and apply ``data.adapt_sizes``.

    A directory that does not exist yet (before ``download`` or ``demo-data``) or is in no layout gives
    Severstal's values; ``check-data`` names what is wrong with it.
    """
    data = tree["data"]
    facts = None
    if Path(str(data["dir"])).is_dir():
        try:
            facts = data_facts(str(data["dir"]))
        except LayoutError:
            facts = None
    shape = facts.shape if facts is not None and facts.shape else (HEIGHT, WIDTH)
    filled = {"height": shape[0], "width": shape[1],
              "classes": list(facts.class_names) if facts is not None else list(SEVERSTAL_CLASSES)}
    for name, value in filled.items():
        if data[name] is None:
            data[name] = value
            origins[f"data.{name}"] = f"the data ({data['dir']}): "
    if facts is not None and facts.layout == "folders":  # one class per image, no masks
        folders_classifier(tree, origins, overridden)
    if data["adapt_sizes"] is True and _is_size(data["height"]) and _is_size(data["width"]):
        adapt_sizes(tree, (data["height"], data["width"]), origins, overridden)


def folders_classifier(tree: dict, origins: dict[str, str], overridden: set[str]) -> None:
    """The classifier of a folders data set, in place: a softmax head (one class per image), no defect blackout
    (``cls.augment.mask_dropout``, which needs masks) and, as no segmenter is trained, at least the segmenter's
    ``epochs`` (its training time goes to the classifier). Keys set with ``--set`` are left as they are."""
    origin = "the folders layout (one class per image): "
    if "cls.epochs" not in overridden and isinstance(tree["cls"]["epochs"], int) and isinstance(
            tree["seg"]["epochs"], int) and tree["seg"]["epochs"] > tree["cls"]["epochs"]:
        tree["cls"]["epochs"] = tree["seg"]["epochs"]
        origins["cls.epochs"] = origin
    if "cls.head" not in overridden:
        tree["cls"]["head"] = "softmax"
        origins["cls.head"] = origin
    if "cls.augment.mask_dropout" not in overridden:
        tree["cls"]["augment"]["mask_dropout"] = 0.0
        origins["cls.augment.mask_dropout"] = origin


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


PIXEL_ALLOWANCE = 4  # data.adapt_sizes: whole images may hold up to 4x the pixels the config gives Severstal's


def adapt_sizes(tree: dict, shape: tuple[int, int], origins: dict[str, str], overridden: set[str]) -> None:
    """Scale the pixel sizes a config gives for Severstal's 256 x 1600 images to images of ``shape``, in place.

    Each model's ``scale`` is set so its scaled images hold at most :data:`PIXEL_ALLOWANCE` times the
    pixels the config gives it at 256 x 1600 (at most 1): Severstal's defects are long and wide enough
    for a quarter of the resolution, other data sets' (thin scratches, small pits on a plate) are small
    within smaller images, and a whole image costs only in validation and prediction, while a training
    step's cost is its crop's, which does not grow. A training ``crop`` larger than the scaled image is
    cut to it (to a multiple of 32 for the segmenter) and the ``batch_size`` raised by the pixels it
    lost (at most 4 times); ``tune``'s
    ``min_component_sizes`` and ``min_areas`` are scaled by the ratio of the images' pixel counts. Keys
    set with ``--set`` are left as they are. Nothing changes for 256 x 1600 images.
    """
    height, width = shape
    if (height, width) == (HEIGHT, WIDTH):
        return
    origin = f"data.adapt_sizes (the data's {height} x {width} images): "
    factor = math.sqrt(PIXEL_ALLOWANCE * HEIGHT * WIDTH / (height * width))
    for kind, multiple in (("cls", 1), ("seg", CROP_MULTIPLE)):
        section = tree[kind]
        if not _adaptable(section, ("scale", "crop", "batch_size")):
            continue
        if f"{kind}.scale" not in overridden:
            section["scale"] = min(1.0, round(float(section["scale"]) * factor, 4))
            origins[f"{kind}.scale"] = origin
        scaled = (max(1, round(height * section["scale"])), max(1, round(width * section["scale"])))
        crop = section["crop"]
        if crop is None or f"{kind}.crop" in overridden:
            continue
        cut = [min(int(side), max(multiple, limit // multiple * multiple)) for side, limit in zip(crop, scaled,
                                                                                                 strict=True)]
        if cut != list(crop):
            section["crop"] = cut
            origins[f"{kind}.crop"] = origin
            if f"{kind}.batch_size" not in overridden:
                gain = min(4.0, crop[0] * crop[1] / (cut[0] * cut[1]))
                section["batch_size"] = max(1, round(int(section["batch_size"]) * gain))
                origins[f"{kind}.batch_size"] = origin
    ratio = height * width / (HEIGHT * WIDTH)
    for name in ("min_component_sizes", "min_areas"):
        values = tree["tune"][name]
        if f"tune.{name}" in overridden or not isinstance(values, list | tuple) or not all(
                _is_size(value) or value == 0 for value in values):
            continue
        tree["tune"][name] = sorted({round(value * ratio) for value in values})
        origins[f"tune.{name}"] = origin


def _adaptable(section: Mapping, names: Sequence[str]) -> bool:
    """Whether the values the adaptation reads are of the right types (else validation reports them as given)."""
    scale, crop, batch = (section.get(name) for name in names)
    good_crop = crop is None or (isinstance(crop, list | tuple) and len(crop) == 2 and all(_is_size(s) for s in crop))
    return isinstance(scale, int | float) and not isinstance(scale, bool) and 0 < scale <= 1 and good_crop and \
        _is_size(batch)


def config_from_tree(tree: Mapping, name: str, source: str, where=None) -> Config:
    """Validate a complete tree (defaults merged in) into a :class:`Config`.

    Raises:
        ConfigError: the first bad value.
    """
    where = where or (lambda dotted: f"{source}: ")
    try:
        sections = build_sections(tree, where)
    except RuleError as error:
        raise ConfigError(str(error)) from None
    values = {f.name: getattr(sections, f.name) for f in dataclasses.fields(Sections)}
    raw = to_tree(sections)
    return Config(**values, name=name, source=source, raw=raw)


def normalised_tree(saved: Mapping) -> dict:
    """A saved config (``config.yaml`` beside an artifact) on top of today's defaults, unknown keys dropped.

    Artifacts made before a key was added compare equal on it; a saved value that no longer
    validates stays as it was (it then differs from any current config).
    """
    tree = defaults_tree()

    def overlay(base: dict, update: Mapping, prefix: str) -> None:
        for name, value in update.items():
            dotted = f"{prefix}.{name}" if prefix else str(name)
            if is_section(dotted) and isinstance(value, Mapping):
                overlay(base[name], value, dotted)
            elif rule_of(dotted) is not None:
                try:
                    base[name] = to_tree(rule_of(dotted)(value))
                except RuleError:
                    base[name] = value

    overlay(tree, saved if isinstance(saved, Mapping) else {}, "")
    return tree


def saved_config(saved: Mapping, source: str) -> Config:
    """A :class:`Config` from a saved resolved config (e.g. a fold's ``config.yaml``).

    Raises:
        ConfigError: the saved values do not validate.
    """
    experiment = saved.get("experiment") if isinstance(saved, Mapping) else None
    return config_from_tree(normalised_tree(saved), str(experiment or "saved"), source)


# ----------------------------------------------------------------------------- comparing

def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def select(tree: Mapping, keys: Iterable[str]) -> dict[str, Any]:
    """The flattened values of ``tree`` under the dotted ``keys`` (sections or single keys)."""
    keys = tuple(keys)
    return {dotted: value for dotted, value in flatten(tree).items()
            if any(dotted == key or dotted.startswith(key + ".") for key in keys)}


def config_differences(saved: Mapping, current: Mapping, keys: Iterable[str]) -> list[str]:
    """The keys under ``keys`` whose values differ, as ``key: saved -> current`` lines (saved normalised first)."""
    keys = tuple(keys)
    old = select(normalised_tree(saved), keys)
    new = select(normalised_tree(current), keys)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def commented_yaml(config: Config) -> str:
    """The resolved config as YAML with each section's and key's meaning as a comment (``severstal config``)."""
    lines = [f"# resolved from {config.source} (every key: its value here, its meaning after #)"]

    def emit(tree: Mapping, prefix: str, indent: str) -> None:
        for name, value in tree.items():
            dotted = f"{prefix}.{name}" if prefix else name
            meaning = help_of(dotted)
            if isinstance(value, Mapping):
                lines.append(f"{indent}{name}:{'':<1} # {meaning}")
                emit(value, dotted, indent + "  ")
            else:
                text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
                text = text.removesuffix("\n...").removesuffix("...").strip()
                lines.append(f"{indent}{name}: {text}  # {meaning}")

    emit(config.raw, "", "")
    return "\n".join(lines) + "\n"
