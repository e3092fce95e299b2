"""Experiment configs: YAML on top of shared defaults, ``--set`` overrides, resolved paths.

A config file may name a parent with ``inherit: other.yaml`` (relative to its own folder);
the child's keys are merged into the parent's, section by section. All paths in a config are
relative to the directory the command runs in (the repository root).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = "configs/default.yaml"


class ConfigError(ValueError):
    """A config file, override or artifact does not fit: the message says what and what to do."""


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` with ``override`` merged in recursively (neither input is modified)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file and the files it inherits from, merged parent first."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (configs live in configs/, e.g. configs/demo.yaml)")
    if path.resolve() in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    return deep_merge(read_yaml_chain(path.parent / parent, seen + (path.resolve(),)), raw)


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``section.key=value`` override in place; the key must already exist."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    dotted, text = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[:depth]) or "the top level"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not a section)"
            raise ConfigError(f"unknown config key {dotted!r}: {where} has keys {known}")
        if depth < len(keys) - 1:
            node = node[key]
    try:
        node[keys[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[keys[-1]] = text


@dataclass
class Config:
    """A resolved config: the merged YAML plus the experiment name and paths derived from it."""

    raw: dict
    name: str  # the config file's stem, e.g. "demo"
    source: str  # the config file as given

    def __getitem__(self, section: str) -> Any:
        return self.raw[section]

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.raw
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    @property
    def experiment(self) -> str:
        return self.raw["experiment"]

    @property
    def data_dir(self) -> Path:
        return Path(self.raw["data"]["dir"])

    @property
    def folds_file(self) -> Path:
        return Path(self.raw["data"]["folds_file"])

    @property
    def models_dir(self) -> Path:
        return Path(self.raw["paths"]["models"]) / self.experiment

    @property
    def reports_dir(self) -> Path:
        return Path(self.raw["paths"]["reports"]) / self.experiment

    @property
    def submission_path(self) -> Path:
        return Path(self.raw["paths"]["submissions"]) / self.experiment / "submission.csv"

    @property
    def thresholds_path(self) -> Path:
        return self.models_dir / "thresholds.json"

    def fold_dir(self, model: str, fold: int) -> Path:
        """``models/<experiment>/<cls|seg>/fold<K>``."""
        if model not in ("cls", "seg"):
            raise ConfigError(f"model must be 'cls' or 'seg', got {model!r}")
        return self.models_dir / model / f"fold{fold}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


def load_config(
    path: str | os.PathLike = DEFAULT_CONFIG,
    overrides: list[str] | tuple[str, ...] = (),
    data: str | os.PathLike | None = None,
    experiment: str | None = None,
) -> Config:
    """Load a config, apply ``--set`` overrides and ``--data``/``--experiment``, derive paths.

    Args:
        path: YAML file (relative to the working directory).
        overrides: ``section.key=value`` strings; values are parsed as YAML.
        data: a data directory that replaces the config's; when it differs, the experiment
            becomes ``<config name>-<base name of data>`` and the folds file
            ``folds/<experiment>_folds.csv`` so that runs on different data share nothing.
        experiment: explicit experiment name (wins over the derived one).

    Returns:
        The resolved :class:`Config`.
    """
    raw = read_yaml_chain(Path(path))
    for section in ("data", "paths"):
        if not isinstance(raw.get(section), dict):
            raise ConfigError(f"config {path} has no '{section}' section")
    for assignment in overrides:
        apply_override(raw, assignment)
    name = Path(path).stem
    raw["experiment"] = raw.get("experiment") or name
    derived_experiment = None
    if data is not None and os.path.normpath(str(data)) != os.path.normpath(str(raw["data"]["dir"])):
        derived_experiment = f"{name}-{Path(os.path.normpath(str(data))).name}"
        raw["data"]["dir"] = os.path.normpath(str(data))
    if experiment or derived_experiment:
        raw["experiment"] = experiment or derived_experiment
        if derived_experiment:
            raw["data"]["folds_file"] = str(Path(raw["paths"].get("folds", "folds")) / f"{raw['experiment']}_folds.csv")
    return Config(raw=raw, name=name, source=str(path))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_differences(saved: dict, current: dict, sections: list[str] | tuple[str, ...]) -> list[str]:
    """Keys under ``sections`` whose values differ, as ``key: saved -> current`` lines."""
    old = {k: v for k, v in flatten(saved).items() if k.split(".")[0] in sections}
    new = {k: v for k, v in flatten(current).items() if k.split(".")[0] in sections}
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def save_config(config: Config, directory: str | os.PathLike) -> Path:
    """Write the resolved config as ``<directory>/config.yaml`` (atomically) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "config.yaml"
    temporary = target.with_suffix(".yaml.tmp")
    temporary.write_text(config.to_yaml())
    os.replace(temporary, target)
    return target


def check_saved_config(
    directory: str | os.PathLike, config: Config, sections: list[str] | tuple[str, ...], what: str
) -> bool:
    """Compare an artifact's saved config with ``config`` on the sections that made it.

    Returns:
        True when a saved config exists and matches; False when there is none.

    Raises:
        ConfigError: when it exists and differs, listing the differences.
    """
    saved_path = Path(directory) / "config.yaml"
    if not saved_path.is_file():
        return False
    saved = yaml.safe_load(saved_path.read_text()) or {}
    differences = config_differences(saved, config.raw, sections)
    if differences:
        listing = "\n  ".join(differences[:20])
        raise ConfigError(
            f"{what} in {directory} was made with a different config:\n  {listing}\n"
            "Re-run with --force to rebuild it with the current config, or use another experiment name "
            "(--experiment NAME) to keep both."
        )
    return True
