"""Offline Kaggle-notebook inference for a ``severstal bundle``: install its wheels, run ``severstal predict``.

``severstal bundle`` copies this file's source into the bundle as ``inference.py``. In a Kaggle notebook
with internet off and two inputs added (the competition's data and the bundle dataset), run

    !python ../input/severstal-<experiment>-bundle/inference.py

or paste the file into a cell. It

1. finds the bundle: the folder of this file, else the folder under the input directory that holds
   ``severstal-bundle.json`` (folders uploaded by ``kaggle datasets create --dir-mode zip`` may arrive
   as ``models.zip`` / ``wheels.zip``: they are unpacked into the work folder);
2. installs the bundle's wheels with ``pip install --no-index --no-deps --target`` into a fresh folder
   that is put first on ``sys.path`` (the notebook's own packages are never changed). The project and
   segmentation-models' packages are always taken from the bundle, so the code is the one that made
   the local submission; tf-keras only when the notebook lacks it, and only a wheel of the notebook's
   TensorFlow minor version;
3. runs the project's own ``severstal predict`` (same fold ensemble, flip TTA, tuned thresholds and
   checks) over the test images and copies its validated file to ``submission.csv``.

Only the standard library is used before the wheels are installed. Every option can also be given as
an environment variable (for a pasted cell): SEVERSTAL_INPUT, SEVERSTAL_BUNDLE, SEVERSTAL_TEST_IMAGES,
SEVERSTAL_OUTPUT, SEVERSTAL_WORK, SEVERSTAL_FOLDS, SEVERSTAL_TTA, SEVERSTAL_BATCH_SIZE.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

MANIFEST = "severstal-bundle.json"
FORMAT_VERSION = 1
COMPETITION = "severstal-steel-defect-detection"
MIN_PYTHON = (3, 11)  # the project's code uses Python 3.11 features (datetime.UTC)
SEARCH_DEPTH = 4  # folder levels under the input directory searched for the bundle and the test images
ENVIRONMENT = {  # option -> environment variable used when the option is not given
    "input": "SEVERSTAL_INPUT", "bundle": "SEVERSTAL_BUNDLE", "test_images": "SEVERSTAL_TEST_IMAGES",
    "output": "SEVERSTAL_OUTPUT", "work": "SEVERSTAL_WORK", "folds": "SEVERSTAL_FOLDS", "tta": "SEVERSTAL_TTA",
    "batch_size": "SEVERSTAL_BATCH_SIZE",
}


class BundleError(Exception):
    """A problem with the bundle or the notebook: printed as one message, exit code 1."""


# ----------------------------------------------------------------------------- finding things

def default_input_dir(cwd: Path) -> Path:
    """``../input`` (Kaggle's working directory is ``/kaggle/working``), else ``/kaggle/input``."""
    relative = cwd.parent / "input"
    return relative if relative.is_dir() else Path("/kaggle/input")


def search(root: Path, pattern: str, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Paths matching ``*/.../pattern`` with 0..depth-1 folder levels in front, sorted."""
    found: list[Path] = []
    for level in range(depth):
        found += root.glob("/".join(["*"] * level + [pattern]))
    return sorted(set(found))


def find_bundle(explicit: str | None, script_dir: Path | None, input_dir: Path) -> Path:
    """The bundle folder: ``explicit``, else this script's folder, else the one input folder holding a manifest.

    Raises:
        BundleError: no bundle, or several (pass --bundle).
    """
    if explicit:
        bundle = Path(explicit)
        if not (bundle / MANIFEST).is_file():
            raise BundleError(f"{bundle} is not a severstal bundle (no {MANIFEST}); make one with `severstal bundle`")
        return bundle
    if script_dir is not None and (script_dir / MANIFEST).is_file():
        return script_dir
    bundles = [path.parent for path in search(input_dir, MANIFEST)]
    if not bundles:
        raise BundleError(f"no severstal bundle ({MANIFEST}) under {input_dir}: add the dataset made by "
                          "`severstal bundle` to the notebook (Add Input), or pass --bundle DIR")
    if len(bundles) > 1:
        raise BundleError(f"several bundles under {input_dir}: {', '.join(map(str, bundles))}; choose one "
                          "with --bundle DIR")
    return bundles[0]


def find_test_images(explicit: str | None, input_dir: Path) -> Path:
    """``explicit``, else ``<input>/severstal-steel-defect-detection/test_images`` or one found deeper."""
    if explicit:
        return Path(explicit)
    default = input_dir / COMPETITION / "test_images"
    if default.is_dir():
        return default
    found = [path for path in search(input_dir, f"{COMPETITION}/test_images", SEARCH_DEPTH + 1) if path.is_dir()]
    if len(found) == 1:
        return found[0]
    raise BundleError(f"no test images at {default}: add the competition's data to the notebook, or pass "
                      "--test-images DIR")


def read_manifest(bundle: Path) -> dict:
    """The bundle's manifest (``severstal-bundle.json``), checked for its format version."""
    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise BundleError(f"cannot read {bundle / MANIFEST}: {error}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{bundle / MANIFEST} has format version {manifest.get('format_version')!r}; this script "
                          f"reads version {FORMAT_VERSION}: use the inference.py shipped in the same bundle")
    return manifest


def bundle_folder(bundle: Path, name: str, work_dir: Path) -> Path:
    """``bundle/name``; or ``bundle/name.zip`` unpacked into ``work_dir/name`` (uploads made with --dir-mode zip).

    Raises:
        BundleError: neither exists.
    """
    folder = bundle / name
    if folder.is_dir():
        return folder
    archive = bundle / f"{name}.zip"
    if archive.is_file():
        target = work_dir / name
        if not target.is_dir():
            partial = work_dir / f".{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(partial)
            # a zip made from the folder may hold its content directly or inside one folder of that name
            inner = partial / name
            os.replace(inner if inner.is_dir() and len(list(partial.iterdir())) == 1 else partial, target)
            shutil.rmtree(partial, ignore_errors=True)
        return target
    raise BundleError(f"the bundle {bundle} has neither {name}/ nor {name}.zip: upload the whole folder made by "
                      "`severstal bundle` (kaggle datasets create -p DIR --dir-mode zip)")


# ----------------------------------------------------------------------------- installing

def minor_version(version: str) -> tuple[int, int] | None:
    """``"2.21.0"`` -> ``(2, 21)``; ``"2.18.0rc1"`` -> ``(2, 18)``; None when it does not start with two numbers."""
    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match[1]), int(match[2])) if match else None


def installed_version(names: Sequence[str]) -> str | None:
    """The version of the first installed distribution of ``names`` (None when none is)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def wheels_to_install(entries: Sequence[Mapping], is_importable: Callable[[str], bool],
                      tensorflow_version: str | None) -> list[Mapping]:
    """Choose the manifest's wheels to install in this environment.

    Args:
        entries: the manifest's ``wheels``: ``{"file", "name", "version", "module", "install"}`` with
            ``install`` ``"always"`` (taken from the bundle even when the notebook has the module) or
            ``"if-missing"`` (tf-keras: used only when the notebook lacks it; the bundle may hold
            several versions, and the one of TensorFlow's minor version is chosen).
        is_importable: whether a top-level module can be imported in this environment.
        tensorflow_version: the notebook's TensorFlow version (None when it has none).

    Returns:
        The entries to install, in manifest order.

    Raises:
        BundleError: a missing module has no usable wheel in the bundle.
    """
    chosen: list[Mapping] = []
    by_name: dict[str, list[Mapping]] = {}
    for entry in entries:
        if entry["install"] not in ("always", "if-missing"):
            raise BundleError(f"unknown install policy {entry['install']!r} for {entry['file']} in the manifest")
        by_name.setdefault(entry["name"], []).append(entry)
    for name, group in by_name.items():
        policy, module = group[0]["install"], group[0]["module"]
        if policy == "always":
            chosen += group
            continue
        if is_importable(module):
            continue
        if name == "tf-keras":
            if tensorflow_version is None:
                raise BundleError("this notebook has no TensorFlow: choose Kaggle's default Python environment")
            wanted = minor_version(tensorflow_version)
            if wanted is None:
                raise BundleError(f"cannot tell TensorFlow's minor version from {tensorflow_version!r}")
            matching = [entry for entry in group if minor_version(entry["version"]) == wanted]
            if not matching:
                versions = ", ".join(entry["version"] for entry in group)
                raise BundleError(
                    f"this notebook has TensorFlow {tensorflow_version} but no tf_keras, and the bundle's tf-keras "
                    f"wheels ({versions}) do not match it (tf-keras must have TensorFlow's minor version). Rebuild "
                    f"the bundle with `severstal bundle --tf-keras {wanted[0]}.{wanted[1]}.0` "
                    "(or pin the notebook's environment to the bundle's TensorFlow version).")
            chosen.append(matching[-1])
        else:
            chosen.append(group[-1])
    return chosen


def pip_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a pip that reads no config file, reaches no index and asks nothing."""
    clean = {key: value for key, value in environ.items() if not key.startswith("PIP_")}
    clean.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
                 PIP_NO_INPUT="1", PIP_NO_CACHE_DIR="1")
    return clean


def install_wheels(wheels: Sequence[Path], target: Path) -> bool:
    """``pip install --no-index --no-deps --target target`` the wheel files (skipped when already there).

    Returns:
        True when pip ran, False when ``target`` already held exactly these wheels (same names and bytes).

    Raises:
        BundleError: pip failed (its output is in the message).
    """
    stamp = target / ".severstal-wheels.json"
    installed = sorted([Path(wheel).name, hashlib.sha256(Path(wheel).read_bytes()).hexdigest()] for wheel in wheels)
    if stamp.is_file() and json.loads(stamp.read_text()) == installed:
        return False
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--target", str(target), *map(str, wheels)]
    result = subprocess.run(command, env=pip_environment(os.environ), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise BundleError(f"installing the bundle's wheels failed (exit {result.returncode}):\n{output}")
    stamp.write_text(json.dumps(installed))
    return True


def activate(target: Path, modules: Sequence[str]) -> None:
    """Put ``target`` first on ``sys.path`` and check that ``modules`` now come from it.

    Raises:
        BundleError: a module was already imported from elsewhere (a notebook kernel that imported it
            before: restart it) or still resolves elsewhere.
    """
    target = target.resolve()
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    for module in modules:
        loaded = sys.modules.get(module)
        origin = getattr(loaded, "__file__", None) if loaded is not None else None
        if origin is None:
            spec = importlib.util.find_spec(module)
            origin = spec.origin if spec is not None else None
        if origin is None or not Path(origin).resolve().is_relative_to(target):
            raise BundleError(f"{module} resolves to {origin}, not to the bundle's copy in {target}: restart the "
                              "notebook's kernel (or run this script with !python) so the bundle's version is used")


# ----------------------------------------------------------------------------- running predict

def predict_arguments(manifest: Mapping, bundle: Path, models_root: Path, work_dir: Path, data_dir: Path,
                      test_images: Path, options: argparse.Namespace) -> list[str]:
    """The ``severstal predict`` command line that reads the bundle and writes under ``work_dir``."""
    arguments = [
        "--config", str(bundle / "config.yaml"), "--experiment", manifest["experiment"],
        "--set", f"paths.models={models_root}",
        "--set", f"paths.submissions={work_dir / 'submissions'}",
        "--set", f"paths.reports={work_dir / 'reports'}",
        "--set", f"data.dir={data_dir}",
        "--images", str(test_images), "--format", options.format, "--force",
    ]
    for flag, value in (("--folds", options.folds), ("--tta", options.tta), ("--batch-size", options.batch_size)):
        if value not in (None, ""):
            arguments += [flag, str(value)]
    if options.skip_bad:
        arguments.append("--skip-bad")
    return arguments


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` to a temporary file beside ``target``, then rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inference.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)

    def default(name: str):
        return environ.get(ENVIRONMENT[name]) or None

    parser.add_argument("--input", default=default("input"),
                        help="Kaggle's input folder (default: ../input, else /kaggle/input)")
    parser.add_argument("--bundle", default=default("bundle"),
                        help="the bundle folder (default: this script's folder, else searched under --input)")
    parser.add_argument("--test-images", default=default("test_images"),
                        help=f"images to predict (default: <input>/{COMPETITION}/test_images)")
    parser.add_argument("--output", default=default("output") or "submission.csv",
                        help="submission file to write (default: submission.csv in the working directory)")
    parser.add_argument("--work", default=default("work"),
                        help="folder for installed packages and intermediate files (default: a new temporary one)")
    parser.add_argument("--folds", default=default("folds"), help="folds to ensemble, e.g. 0,1 (default: the bundle's)")
    parser.add_argument("--tta", default=default("tta"),
                        help="flips to average, e.g. none,hflip (default: the bundle's)")
    parser.add_argument("--batch-size", type=int, default=default("batch_size"),
                        help="images per batch (default: the bundle's)")
    parser.add_argument("--format", choices=("long", "legacy"), default="long",
                        help="long: ImageId,EncodedPixels,ClassId (default); legacy: ImageId_ClassId,EncodedPixels")
    parser.add_argument("--skip-bad", action="store_true", help="predict unreadable images as empty")
    return parser


def run(options: argparse.Namespace, script_dir: Path | None) -> int:
    started = time.perf_counter()
    if sys.version_info < MIN_PYTHON:
        raise BundleError(f"Python {sys.version.split()[0]} is too old: the project needs Python "
                          f"{'.'.join(map(str, MIN_PYTHON))} or newer (Kaggle's current notebook image has it)")
    input_dir = Path(options.input) if options.input else default_input_dir(Path.cwd())
    bundle = find_bundle(options.bundle, script_dir, input_dir)
    manifest = read_manifest(bundle)
    test_images = find_test_images(options.test_images, input_dir)
    work_dir = Path(options.work) if options.work else Path(tempfile.mkdtemp(prefix="severstal-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"bundle {bundle}: experiment {manifest['experiment']}, severstal {manifest['severstal_version']}, "
          f"folds {manifest['folds']}, flips {','.join(manifest['tta'])}", flush=True)

    wheel_dir = bundle_folder(bundle, "wheels", work_dir)
    models_root = bundle_folder(bundle, "models", work_dir)
    tensorflow_version = installed_version(("tensorflow", "tensorflow-cpu", "tensorflow-gpu"))
    if tensorflow_version is None:
        raise BundleError("this notebook has no TensorFlow: choose Kaggle's default Python environment")
    chosen = wheels_to_install(manifest["wheels"], lambda module: importlib.util.find_spec(module) is not None,
                               tensorflow_version)
    missing = [entry["file"] for entry in chosen if not (wheel_dir / entry["file"]).is_file()]
    if missing:
        raise BundleError(f"the bundle's wheels folder {wheel_dir} lacks {', '.join(missing)}: "
                          "rebuild and re-upload the bundle")
    target = work_dir / "packages"
    ran = install_wheels([wheel_dir / entry["file"] for entry in chosen], target)
    activate(target, [entry["module"] for entry in chosen])
    print(f"{'installed' if ran else 'reusing'} {', '.join(entry['file'] for entry in chosen)} in {target} "
          f"(TensorFlow {tensorflow_version})", flush=True)

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the (absent) internet
    import severstal  # the bundle's copy, installed just above
    from severstal.cli import main as severstal_command  # stages run through the command's entry point

    print(f"severstal {severstal.__version__} from {Path(severstal.__file__).parent}", flush=True)
    data_dir = test_images.parent
    arguments = predict_arguments(manifest, bundle, models_root, work_dir, data_dir, test_images, options)
    code = severstal_command(["predict", *arguments])
    if code:
        return code
    made = work_dir / "submissions" / manifest["experiment"] / "submission.csv"
    output = Path(options.output)
    copy_atomically(made, output)
    print(f"wrote {output.resolve()} in {time.perf_counter() - started:.1f} s (installing, loading and predicting)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bundle's inference; returns the exit code."""
    options = build_parser(os.environ).parse_args(argv)
    script = globals().get("__file__")
    script_dir = Path(script).resolve().parent if script else None
    try:
        return run(options, script_dir)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if "ipykernel" in sys.modules:  # pasted into a notebook cell: configure with the SEVERSTAL_* variables
        if main([]) != 0:
            raise RuntimeError("inference failed: see the message above")
    else:
        sys.exit(main())
