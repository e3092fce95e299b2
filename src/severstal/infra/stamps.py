"""The one up-to-date policy of every stage, and the stamps it compares.

A stamp records what an output was made from: the config keys that shape it (flattened, in their
normal form) and a fingerprint of each input (a SHA-256 of a file, of a list of names). The
policy (:func:`decide`), the same for every stage: an output made with the same config from the
same inputs is kept and the stage says so in one line; changed inputs (a retrained fold, new OOF
files) remake it, naming what changed; a different config stops with the list of differences
unless ``--force``. Where a stage keeps its stamp (``stamp.json`` in a fold folder, inside
``oof.npz``, in ``thresholds.json``, in a submission's ``.meta.json``) is up to the stage.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, select
from .errors import ConfigError, format_problems
from .files import content_sha256, file_sha256, text_sha256, write_json
from .schema import RuleError, defaults_tree, rule_of, to_tree


@dataclass(frozen=True)
class Stamp:
    """What an output was made from: the config keys that shape it and its inputs' fingerprints.

    ``config`` holds flattened dotted keys (``{"inference.tta": ["none", "hflip"]}``); ``keys`` the
    prefixes they were selected by; ``inputs`` a fingerprint (e.g. a SHA-256) per named input.
    """

    keys: tuple[str, ...]
    config: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Config, keys: Sequence[str], inputs: Mapping[str, Any] | None = None,
           settings: Mapping[str, Any] | None = None) -> Stamp:
        """The stamp of the config's ``keys`` and the ``inputs``; ``settings`` adds a stage's own values
        (options that are not config keys, e.g. ``{"predict.format": "long"}``)."""
        settings = dict(settings or {})
        return cls((*keys, *settings), {**select(config.raw, keys), **settings}, dict(inputs or {}))

    def to_dict(self) -> dict:
        return {"keys": list(self.keys), "config": self.config, "inputs": self.inputs}

    @classmethod
    def from_dict(cls, value: Any) -> Stamp | None:
        """A stamp read back (None for anything that is not one)."""
        if not isinstance(value, Mapping) or not isinstance(value.get("config"), Mapping):
            return None
        return cls(tuple(value.get("keys") or ()), dict(value["config"]), dict(value.get("inputs") or {}))


def normalised_flat(flat: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Flattened stamp values in their normal form: config keys through the schema's rules (defaults for keys
    added since the stamp was written), other entries (a stage's own settings) as they are."""
    values = select(defaults_tree(), keys)
    for dotted, value in flat.items():
        rule = rule_of(dotted)
        if rule is not None:
            try:
                value = to_tree(rule(value))
            except RuleError:
                pass  # a value this version does not accept: it differs from any current one
        values[dotted] = value
    return values


def stamp_differences(previous: Stamp, current: Stamp) -> tuple[list[str], list[str]]:
    """``(config differences as "key: old -> new", changed input names)`` between a saved stamp and the current one."""
    old, new = normalised_flat(previous.config, current.keys), normalised_flat(current.config, current.keys)
    differences = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
                   if old.get(key) != new.get(key)]
    changed = sorted(name for name in previous.inputs.keys() | current.inputs.keys()
                     if previous.inputs.get(name) != current.inputs.get(name))
    return differences, changed


class Action(enum.Enum):
    BUILD = "build"  # no usable output: make it
    SKIP = "skip"  # up to date
    REDO = "redo"  # inputs changed, or --force


@dataclass(frozen=True)
class Decision:
    action: Action
    note: str  # one line for the log ("" when building from nothing)


def decide(what: str, previous: Stamp | None, current: Stamp, force: bool, remedy: str | None = None) -> Decision:
    """The up-to-date policy of every stage.

    Args:
        what: the output, for messages (``"seg fold 0 of demo"``, ``"models/demo/thresholds.json"``).
        previous: the stamp saved with the existing output; None when there is none.
        current: the stamp the stage would save now.
        force: ``--force``: remake it whatever the stamp says.
        remedy: what to do about a different config (default: re-run with ``--force``).

    Returns:
        The :class:`Decision`; its ``note`` is the one line to print.

    Raises:
        ConfigError: the output was made with a different config and ``force`` is not set; the
            message lists the differences and what to do.
    """
    if previous is None:
        return Decision(Action.BUILD, "")
    differences, changed = stamp_differences(previous, current)
    if force:
        return Decision(Action.REDO, f"{what}: --force: making it again")
    if differences:
        raise ConfigError(different_config_message(what, differences, remedy))
    if changed:
        return Decision(Action.REDO, f"{what}: {', '.join(changed)} changed since it was made: making it again")
    return Decision(Action.SKIP, f"{what} is up to date (same config and inputs); --force makes it again")


def different_config_message(what: str, differences: Sequence[str], remedy: str | None = None) -> str:
    """The error for an output made with another config (the differences, then what to do)."""
    remedy = remedy or "Re-run with --force to rebuild it with the current config"
    return (f"{what} was made with a different config:\n{format_problems(differences)}\n"
            f"{remedy}, or use another experiment name (--experiment NAME) to keep both.")


def read_stamp(path: Path) -> Stamp | None:
    """A stamp file (None when missing or unreadable: the output is then remade)."""
    try:
        return Stamp.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def read_sidecar(path: Path) -> dict | None:
    """A submission's ``*.meta.json`` with its ``"stamp"`` as a :class:`Stamp` (None when missing or unreadable)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    return {**saved, "stamp": Stamp.from_dict(saved.get("stamp"))}


def write_stamp(path: Path, stamp: Stamp) -> None:
    write_json(path, stamp.to_dict())


def images_fingerprint(directory: Path, names: Sequence[str]) -> str:
    """``"<folder>: <count> names sha256:<hex>"``: which images a prediction covered (names, not contents)."""
    return f"{os.path.normpath(str(directory))}: {len(names)} names sha256:{text_sha256(chr(10).join(sorted(names)))}"


def same_image_names(fingerprint: str, names: Sequence[str]) -> bool:
    """Whether an :func:`images_fingerprint` covers exactly ``names`` (wherever the folder is)."""
    return str(fingerprint).rsplit(": ", 1)[-1] == images_fingerprint(Path("."), names).rsplit(": ", 1)[-1]


def folder_fingerprint(directory: Path) -> str:
    """``sha256:<hex>`` of the names and contents of the files directly in a folder, or ``"missing"``."""
    return f"sha256:{content_sha256(directory)}" if Path(directory).is_dir() else "missing"


def file_fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of a file, or ``"missing"``."""
    return f"sha256:{file_sha256(path)}" if Path(path).is_file() else "missing"
