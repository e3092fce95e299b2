"""The offline Kaggle-notebook bundle: fold weights, thresholds, config, wheels, metadata and inference.py.

Severstal is a notebooks-only competition (internet off, one hour, one GPU). The bundle is a folder of
plain files (default ``dist/kaggle/``) that ``kaggle datasets create -p DIR --dir-mode zip`` uploads:

    dataset-metadata.json     id <username>/severstal-<experiment>-bundle (the upload reads it, never uploads it)
    README.md                 what is inside, how to upload it and run it in a notebook
    inference.py              the notebook script (the source of severstal.kaggle.notebook)
    severstal-bundle.json     manifest: experiment, folds, flips, wheels and their install policy, fingerprint
    config.yaml               the resolved config; its inference section holds the bundle's folds, flips, batch
    models/<experiment>/thresholds.json
    models/<experiment>/<seg|cls>/fold<K>/best.weights.h5, config.yaml, training.json
    wheels/*.whl              the project and the packages a Kaggle image lacks (pure-Python, pinned)

The classifier folds are included only when the tuned thresholds gate on the classifier (otherwise
``predict`` never loads them). The folder is built beside the output and renamed into place, so a
failed run leaves the previous bundle as it was; an up-to-date bundle is not made twice (--force).
No TensorFlow is imported: weights are copied as files.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from .. import __version__
from ..infra.artifacts import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    FINISHED,
    THRESHOLDS,
    Paths,
    ensemble_folds,
    read_thresholds,
)
from ..infra.config import Config
from ..infra.errors import UserError
from ..infra.files import file_sha256, text_sha256, write_json
from ..infra.stamps import Stamp, file_fingerprint
from . import notebook as kaggle_notebook
from .api import kaggle_config_dir
from .notebook import FORMAT_VERSION, MANIFEST

BUNDLE_KEYS = ("inference.tta", "inference.batch_size")

DEFAULT_OUT = "dist/kaggle"
FOLD_FILES = (BEST_WEIGHTS, CONFIG_FILE, FINISHED)  # what predict reads from a fold folder
USERNAME_PLACEHOLDER = "YOUR-KAGGLE-USERNAME"
LICENSE = "CC0-1.0"
SLUG_LIMIT = 50  # Kaggle's longest dataset slug and title


@dataclass(frozen=True)
class Dependency:
    """A package the inference path imports that a Kaggle notebook image may lack."""

    name: str  # distribution name on PyPI
    module: str  # top-level module it provides
    install: str  # "always": the bundle's copy is used; "if-missing": only when the notebook lacks the module


# segmentation-models and the packages it imports; pure Python, version-independent of TensorFlow.
# tf-keras must match TensorFlow's minor version, so the notebook's own copy wins when it has one.
DEPENDENCIES = (
    Dependency("segmentation-models", "segmentation_models", "always"),
    Dependency("image-classifiers", "classification_models", "always"),
    Dependency("efficientnet", "efficientnet", "always"),
    Dependency("keras-applications", "keras_applications", "always"),
    Dependency("tf-keras", "tf_keras", "if-missing"),
)


# ----------------------------------------------------------------------------- what goes in

def plan_models(paths: Paths, folds_spec) -> tuple[list[int], bool, list[tuple[Path, str]]]:
    """Choose the folds and the model files to copy.

    Args:
        paths: the experiment's paths.
        folds_spec: ``"all"`` or fold numbers (the config's ``inference.folds``).

    Returns:
        ``(folds, gated, copies)``: the segmenter folds, whether the thresholds gate on the classifier
        (then its folds are included), and ``(source, path inside the bundle)`` pairs.

    Raises:
        UserError: no thresholds.json, no trained fold, or a requested fold or gate classifier missing.
    """
    config = paths.config
    if not paths.thresholds.is_file():
        raise UserError(f"{paths.thresholds} does not exist: the bundle needs trained folds and tuned "
                        "thresholds. Run `bash run_all.sh` (or `severstal train` for every fold, then "
                        f"`severstal tune`) with --config {config.source} first.")
    ensemble = ensemble_folds(paths, read_thresholds(paths), folds_spec)
    folds, kinds = ensemble.folds, ensemble.kinds
    root = Path("models") / config.experiment_name
    copies = [(paths.thresholds, str(root / THRESHOLDS))]
    for kind in kinds:
        for fold in folds:
            for name in FOLD_FILES:
                copies.append((paths.fold_dir(kind, fold) / name, str(root / kind / f"fold{fold}" / name)))
    return folds, "cls" in kinds, copies


def bundle_settings(config: Config, folds: Sequence[int]) -> dict:
    """The inference settings written into the bundle's config (flips and batch size checked with the config)."""
    return {"folds": list(folds), "tta": list(config.inference.tta), "batch_size": config.inference.batch_size}


# ----------------------------------------------------------------------------- Kaggle metadata

def dataset_slug(experiment: str) -> str:
    """``severstal-<experiment>-bundle`` in Kaggle's slug alphabet (lower-case letters, digits, hyphens)."""
    name = re.sub(r"[^a-z0-9]+", "-", experiment.lower()).strip("-") or "experiment"
    room = SLUG_LIMIT - len("severstal--bundle")
    return f"severstal-{name[:room].strip('-')}-bundle"


def kaggle_username(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """``KAGGLE_USERNAME``, else the ``username`` of kaggle.json (where the kaggle package looks); None if neither."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_USERNAME", "").strip():
        return environ["KAGGLE_USERNAME"].strip()
    try:
        stored = json.loads((kaggle_config_dir(environ, home) / "kaggle.json").read_text())
    except (OSError, ValueError):
        return None
    username = str(stored.get("username") or "").strip() if isinstance(stored, dict) else ""
    return username or None


def dataset_metadata(experiment: str, username: str | None) -> dict:
    """The ``dataset-metadata.json`` content (a placeholder user name when ``username`` is None)."""
    return {
        "title": f"Severstal {experiment} bundle"[:SLUG_LIMIT],
        "id": f"{username or USERNAME_PLACEHOLDER}/{dataset_slug(experiment)}",
        "licenses": [{"name": LICENSE}],
    }


# ----------------------------------------------------------------------------- wheels

def normalise_name(name: str) -> str:
    """PEP 503 name as it appears in wheel file names: ``Keras-Applications`` -> ``keras_applications``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_file_matches(file_name: str, name: str, version: str) -> bool:
    """Whether ``file_name`` is a wheel of distribution ``name`` at ``version``."""
    parts = file_name[:-len(".whl")].split("-") if file_name.endswith(".whl") else []
    return len(parts) >= 5 and normalise_name(parts[0]) == normalise_name(name) and parts[1] == version


def requirements(tf_keras_versions: Sequence[str] = ()) -> list[dict]:
    """The pinned dependency wheels: this environment's versions of :data:`DEPENDENCIES` plus extra tf-keras ones.

    Returns:
        ``[{"name", "version", "module", "install"}]``.

    Raises:
        UserError: a dependency is not installed here (its version cannot be pinned).
    """
    pinned = []
    for dependency in DEPENDENCIES:
        try:
            version = importlib.metadata.version(dependency.name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"{dependency.name} is not installed in this environment, so its version cannot be "
                            "pinned: run scripts/env.sh's setup (bash run_all.sh does) first") from None
        pinned.append({**asdict(dependency), "version": version})
    tf_keras = next(entry for entry in pinned if entry["name"] == "tf-keras")
    for version in tf_keras_versions:
        if kaggle_notebook.minor_version(version) is None or not re.fullmatch(r"[0-9][0-9A-Za-z.]*", version):
            raise UserError(f"--tf-keras expects a version such as 2.18.0, got {version!r}")
        if version not in [entry["version"] for entry in pinned if entry["name"] == "tf-keras"]:
            pinned.append({**tf_keras, "version": version})
    return pinned


def project_root() -> Path:
    """The source checkout this package runs from (the folder with pyproject.toml above ``src/severstal``)."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or not re.search(r'^name\s*=\s*"severstal"', pyproject.read_text(), re.MULTILINE):
        raise UserError("severstal bundle builds the project's wheel from its source checkout, but this package "
                        f"was not installed from one ({Path(__file__).parent}): run it from a clone installed with "
                        "`pip install -e .`")
    return root


def source_files(root: Path) -> list[Path]:
    """The files the project wheel is built from, sorted: packaging files and ``src/severstal/**``."""
    files = [root / name for name in ("pyproject.toml", "README.md", "LICENSE") if (root / name).is_file()]
    files += [path for path in (root / "src" / "severstal").rglob("*")
              if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")]
    return sorted(files)


def build_project_wheel(root: Path, wheel_dir: Path) -> Path:
    """``pip wheel --no-deps --no-build-isolation --no-index`` of a clean copy of the project (works offline).

    Returns:
        The wheel's path in ``wheel_dir``.
    """
    with tempfile.TemporaryDirectory(prefix="severstal-wheel-") as scratch:
        copy = Path(scratch) / "project"
        for path in source_files(root):
            destination = copy / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
        built = Path(scratch) / "built"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--disable-pip-version-check", "--quiet", "--wheel-dir", str(built), str(copy)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(built.glob("severstal-*.whl")) if built.is_dir() else []
        if result.returncode != 0 or len(wheels) != 1:
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise UserError(f"building the project wheel failed (exit {result.returncode}); it needs setuptools "
                            f"in this environment:\n{output}")
        wheel_dir.mkdir(parents=True, exist_ok=True)
        target = wheel_dir / wheels[0].name
        shutil.copyfile(wheels[0], target)
    return target


def fetch_wheels(pinned: Sequence[dict], wheel_dir: Path, sources: Sequence[Path]) -> dict[str, str]:
    """Put a wheel of every pinned dependency into ``wheel_dir``.

    Each comes from the first of ``sources`` (folders: --wheels-from, the previous bundle's wheels)
    that has it, else from ``pip download --no-deps --only-binary=:all:`` (the configured package
    index, or pip's cache).

    Returns:
        ``{"name==version": wheel file name}``.

    Raises:
        UserError: some could not be found or downloaded (offline), naming them and the fix.
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    wanted = []
    for entry in pinned:
        key = f"{entry['name']}=={entry['version']}"
        local = next((path for source in sources if source.is_dir() for path in sorted(source.glob("*.whl"))
                      if wheel_file_matches(path.name, entry["name"], entry["version"])), None)
        if local is not None:
            shutil.copyfile(local, wheel_dir / local.name)
            found[key] = local.name
        else:
            wanted.append(entry)
    failed = []
    # one pip call for all (fast); when it fails, one call per wheel to name the ones that cannot be had
    batches = [wanted] if len(wanted) < 2 else [wanted, *([entry] for entry in wanted)]
    for batch in batches:
        batch = [entry for entry in batch if f"{entry['name']}=={entry['version']}" not in found]
        if not batch:
            continue
        keys = [f"{entry['name']}=={entry['version']}" for entry in batch]
        with tempfile.TemporaryDirectory(prefix="severstal-download-") as scratch:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--disable-pip-version-check", "--quiet", "--dest", scratch, *keys]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            for key, entry in zip(keys, batch, strict=True):
                files = [path for path in Path(scratch).glob("*.whl")
                         if wheel_file_matches(path.name, entry["name"], entry["version"])]
                if result.returncode == 0 and files:
                    shutil.copyfile(files[0], wheel_dir / files[0].name)
                    found[key] = files[0].name
                elif len(batch) == 1:
                    failed.append((key, (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no wheel"]))
    if failed:
        listing = "\n  ".join(f"{key}: {reason[0]}" for key, reason in failed)
        specs = " ".join(key for key, _ in failed)
        raise UserError(f"could not get the wheel(s) of {len(failed)} dependency(ies) (offline?):\n  {listing}\n"
                        f"On a machine with internet run `pip download --no-deps --only-binary=:all: {specs} -d DIR`, "
                        "bring DIR here and run severstal bundle --wheels-from DIR.")
    return found


# ----------------------------------------------------------------------------- writing

def bundle_stamp(config: Config, settings: dict, copies: Sequence[tuple[Path, str]], root: Path,
                 pinned: Sequence[dict], metadata: dict) -> Stamp:
    """What a bundle is made from: its inference settings and dataset id, the model files, source and wheel pins."""
    source = text_sha256("\n".join(f"{path.relative_to(root)} {file_sha256(path)}" for path in source_files(root)))
    own = {"bundle.folds": list(settings["folds"]), "bundle.dataset": metadata["id"],
           "bundle.wheels": sorted(f"{entry['name']}=={entry['version']}" for entry in pinned)}
    inputs = {destination: file_fingerprint(path) for path, destination in copies}
    inputs["project source"] = f"sha256:{source}"
    return Stamp.of(config, BUNDLE_KEYS, inputs, own)


def previous_stamp(out: Path) -> Stamp | None:
    """The stamp in an existing bundle's manifest (None when there is none)."""
    try:
        return Stamp.from_dict(json.loads((out / MANIFEST).read_text()).get("stamp"))
    except (OSError, ValueError, AttributeError):
        return None


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"


def readme_text(manifest: dict, metadata: dict, out: Path, sizes: Mapping[str, int]) -> str:
    """The bundle's README.md: contents, upload commands, notebook steps."""
    slug = metadata["id"].split("/", 1)[1]
    placeholder = metadata["id"].startswith(USERNAME_PLACEHOLDER + "/")
    edit = (f"\n**Edit `dataset-metadata.json` first**: replace `{USERNAME_PLACEHOLDER}` with your Kaggle user "
            "name (no kaggle.json or KAGGLE_USERNAME was found when the bundle was made).\n" if placeholder else "")
    total = human_size(sum(sizes.values()))
    gate = " (with the classifier folds: the thresholds gate on them)" if manifest["gated"] else ""
    listing = "\n".join(f"| `{name}` | {human_size(size)} |" for name, size in sorted(sizes.items()))
    wheels = "\n".join(f"| `{entry['file']}` | {entry['install']} |" for entry in manifest["wheels"])
    return f"""# Severstal offline bundle: experiment `{manifest['experiment']}`

Made by `severstal bundle` on {manifest['created']} with severstal {manifest['severstal_version']}
(Python {manifest['python']}, TensorFlow {manifest['tensorflow'] or 'not installed'}); {total} in all.

- segmenter folds: {', '.join(map(str, manifest['folds']))}{gate}
- flips averaged: {', '.join(manifest['tta'])}
- batch size: {manifest['batch_size']}

## Upload it as a Kaggle dataset
{edit}
    kaggle datasets create -p {out} --dir-mode zip            # the first time (a private dataset)
    kaggle datasets version -p {out} --dir-mode zip -m "..."  # after retraining

## Use it in the competition's notebook (internet off)

1. Open a notebook on the competition's page (its data is mounted at `../input/severstal-steel-defect-detection/`),
   add this dataset (Add Input -> Your Datasets -> `{slug}`), choose a GPU accelerator and turn Internet off.
2. Run one cell:

       !python ../input/{slug}/inference.py

   It installs the wheels below into a temporary folder (nothing in the notebook's environment changes),
   runs `severstal predict` with the bundled folds, flips and thresholds and writes `submission.csv`
   in the working directory. Options trade accuracy for time: `--folds 0,1,2`, `--batch-size 16`
   (`python inference.py --help` lists all; `--tta` must name the flips the thresholds were tuned on).
   If the dataset is mounted elsewhere, pass `--bundle DIR` and `--test-images DIR`.
3. Save Version -> Save & Run All, then submit the notebook's `submission.csv`.

## Wheels

| file | installed |
|---|---|
{wheels}

`always`: used even when the notebook has the package (the same code as the local submission);
`if-missing`: only when the notebook lacks it (tf-keras must have TensorFlow's minor version:
rebuild with `severstal bundle --tf-keras X.Y.0` for another one).

## Files

| file | size |
|---|---|
{listing}
"""


def bundled_config_text(config: Config, settings: dict) -> str:
    """The resolved config as YAML, its inference section replaced by the bundle's ``settings``."""
    raw = copy.deepcopy(config.raw)
    raw["inference"] = {**raw["inference"], **settings}
    return yaml.safe_dump(raw, sort_keys=False)


def assemble(staging: Path, config_text: str, experiment: str, settings: dict, gated: bool,
             copies: Sequence[tuple[Path, str]], pinned: Sequence[dict], metadata: dict, stamp: Stamp,
             sources: Sequence[Path], out: Path) -> dict:
    """Write every file of the bundle into ``staging``.

    Returns:
        The manifest (also written as ``severstal-bundle.json``).
    """
    for source, destination in copies:
        target = staging / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (staging / CONFIG_FILE).write_text(config_text)
    wheel_dir = staging / "wheels"
    project_wheel = build_project_wheel(project_root(), wheel_dir)
    fetched = fetch_wheels(pinned, wheel_dir, sources)
    entries = [{"file": project_wheel.name, "name": "severstal", "version": __version__, "module": "severstal",
                "install": "always"}]
    entries += [{"file": fetched[f"{entry['name']}=={entry['version']}"], **entry} for entry in pinned]
    for entry in entries:
        entry["sha256"] = file_sha256(wheel_dir / entry["file"])
    (staging / "inference.py").write_text(Path(kaggle_notebook.__file__).read_text())
    manifest = {
        "format_version": FORMAT_VERSION,
        "experiment": experiment,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "severstal_version": __version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "tensorflow": kaggle_notebook.installed_version(("tensorflow", "tensorflow-cpu")),
        **settings,
        "gated": gated,
        "dataset": metadata["id"],
        "wheels": entries,
        "stamp": stamp.to_dict(),
    }
    write_json(staging / MANIFEST, manifest)
    write_json(staging / "dataset-metadata.json", metadata)
    sizes = {str(path.relative_to(staging)): path.stat().st_size for path in staging.rglob("*") if path.is_file()}
    (staging / "README.md").write_text(readme_text(manifest, metadata, out, sizes))
    return manifest
