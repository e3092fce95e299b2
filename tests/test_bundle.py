"""The offline Kaggle bundle: stage checks, wheel choice, bundle discovery, and the notebook script end to end."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from severstal import __version__
from severstal.cli import main as severstal
from severstal.infra.artifacts import Paths
from severstal.infra.config import load_config
from severstal.infra.errors import UserError
from severstal.infra.files import file_sha256
from severstal.infra.stamps import file_fingerprint
from severstal.kaggle import bundle as kaggle_bundle
from severstal.kaggle import notebook as kaggle_notebook
from severstal.kaggle.notebook import BundleError
from severstal.stages import bundle

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
ENTRIES = [  # a manifest's wheel list
    {"file": "severstal-0.1.0-py3-none-any.whl", "name": "severstal", "version": "0.1.0", "module": "severstal",
     "install": "always"},
    {"file": "segmentation_models-1.0.1-py3-none-any.whl", "name": "segmentation-models", "version": "1.0.1",
     "module": "segmentation_models", "install": "always"},
    {"file": "tf_keras-2.21.0-py3-none-any.whl", "name": "tf-keras", "version": "2.21.0", "module": "tf_keras",
     "install": "if-missing"},
    {"file": "tf_keras-2.18.0-py3-none-any.whl", "name": "tf-keras", "version": "2.18.0", "module": "tf_keras",
     "install": "if-missing"},
]
GATE_FREE = {"pixel_threshold": 0.5, "min_component_size": 0, "min_area": 0, "classifier_threshold": 0.0}


# ----------------------------------------------------------------------------- Kaggle metadata

@pytest.mark.parametrize("experiment, slug", [
    ("demo", "severstal-demo-bundle"),
    ("Default_V2 run", "severstal-default-v2-run-bundle"),
    ("--", "severstal-experiment-bundle"),
    ("x" * 80, "severstal-" + "x" * 33 + "-bundle"),  # 50 characters, Kaggle's limit
])
def test_dataset_slug(experiment, slug):
    assert kaggle_bundle.dataset_slug(experiment) == slug
    assert len(slug) <= 50


def test_dataset_metadata_with_and_without_a_user_name():
    assert kaggle_bundle.dataset_metadata("demo", "ana") == {
        "title": "Severstal demo bundle", "id": "ana/severstal-demo-bundle", "licenses": [{"name": "CC0-1.0"}]}
    assert kaggle_bundle.dataset_metadata("demo", None)["id"] == "YOUR-KAGGLE-USERNAME/severstal-demo-bundle"


def test_kaggle_username_from_the_environment_then_kaggle_json(tmp_path):
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "from-file", "key": "secret"}))
    assert kaggle_bundle.kaggle_username({"KAGGLE_CONFIG_DIR": str(tmp_path)}, tmp_path) == "from-file"
    environ = {"KAGGLE_CONFIG_DIR": str(tmp_path), "KAGGLE_USERNAME": " env "}
    assert kaggle_bundle.kaggle_username(environ, tmp_path) == "env"
    assert kaggle_bundle.kaggle_username({"KAGGLE_CONFIG_DIR": str(tmp_path / "none")}, tmp_path) is None
    (tmp_path / "kaggle.json").write_text("not json")
    assert kaggle_bundle.kaggle_username({"KAGGLE_CONFIG_DIR": str(tmp_path)}, tmp_path) is None


# ----------------------------------------------------------------------------- wheels

@pytest.mark.parametrize("file_name, name, version, expected", [
    ("Keras_Applications-1.0.8-py3-none-any.whl", "keras-applications", "1.0.8", True),
    ("tf_keras-2.21.0-py3-none-any.whl", "tf-keras", "2.21.0", True),
    ("tf_keras-2.21.0-py3-none-any.whl", "tf-keras", "2.21", False),
    ("tf_keras-2.21.0-py3-none-any.whl", "keras", "2.21.0", False),
    ("tf_keras-2.21.0.tar.gz", "tf-keras", "2.21.0", False),
])
def test_wheel_file_matches(file_name, name, version, expected):
    assert kaggle_bundle.wheel_file_matches(file_name, name, version) is expected


@pytest.mark.parametrize("version, expected", [("2.21.0", (2, 21)), ("2.18.0rc1", (2, 18)), ("2.9", (2, 9)),
                                               ("nightly", None)])
def test_minor_version(version, expected):
    assert kaggle_notebook.minor_version(version) == expected


def chosen_files(importable: set[str], tensorflow: str | None) -> list[str]:
    return [entry["file"] for entry in kaggle_notebook.wheels_to_install(ENTRIES, importable.__contains__, tensorflow)]


def test_always_wheels_are_installed_even_when_the_notebook_has_the_package():
    files = chosen_files({"severstal", "segmentation_models", "tf_keras"}, "2.21.0")
    assert files == ["severstal-0.1.0-py3-none-any.whl", "segmentation_models-1.0.1-py3-none-any.whl"]


@pytest.mark.parametrize("tensorflow, tf_keras", [("2.21.0", "tf_keras-2.21.0-py3-none-any.whl"),
                                                  ("2.18.1", "tf_keras-2.18.0-py3-none-any.whl")])
def test_missing_tf_keras_is_taken_at_tensorflows_minor_version(tensorflow, tf_keras):
    assert chosen_files(set(), tensorflow)[-1] == tf_keras


def test_missing_tf_keras_without_a_matching_wheel_says_how_to_rebuild():
    with pytest.raises(BundleError, match=r"TensorFlow 2\.17\.0 but no tf_keras.*--tf-keras 2\.17\.0"):
        chosen_files(set(), "2.17.0")
    with pytest.raises(BundleError, match="no TensorFlow"):
        chosen_files(set(), None)


def test_pip_runs_without_index_config_or_questions():
    environment = kaggle_notebook.pip_environment({"PIP_INDEX_URL": "https://example.invalid", "PATH": "/bin",
                                                   "PIP_FIND_LINKS": "/opt/wheels"})
    assert environment == {"PATH": "/bin", "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
                           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1"}


def test_requirements_pin_this_environments_versions_and_extra_tf_keras():
    pinned = kaggle_bundle.requirements(["2.18.0", "2.18.0"])
    names = [entry["name"] for entry in pinned]
    assert names == ["segmentation-models", "image-classifiers", "efficientnet", "keras-applications", "tf-keras",
                     "tf-keras"]
    assert pinned[0]["version"] == "1.0.1" and pinned[-1]["version"] == "2.18.0"
    assert pinned[-1]["install"] == "if-missing" and pinned[0]["install"] == "always"
    with pytest.raises(UserError, match="--tf-keras expects a version"):
        kaggle_bundle.requirements(["latest"])


def test_wheels_come_from_local_folders_before_any_download(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("segmentation_models-1.0.1-py3-none-any.whl", "segmentation_models-1.0.0-py3-none-any.whl",
                 "tf_keras-2.18.0-py3-none-any.whl"):
        (source / name).write_bytes(name.encode())
    pinned = [{"name": "segmentation-models", "version": "1.0.1"}, {"name": "tf-keras", "version": "2.18.0"}]
    found = kaggle_bundle.fetch_wheels(pinned, tmp_path / "wheels", [tmp_path / "missing", source])
    assert found == {"segmentation-models==1.0.1": "segmentation_models-1.0.1-py3-none-any.whl",
                     "tf-keras==2.18.0": "tf_keras-2.18.0-py3-none-any.whl"}
    assert sorted(path.name for path in (tmp_path / "wheels").iterdir()) == sorted(found.values())


def test_offline_without_local_wheels_names_them_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no find-links from a pip config either
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    pinned = [{"name": "segmentation-models", "version": "1.0.1"}]
    with pytest.raises(UserError, match=r"(?s)segmentation-models==1\.0\.1: .*pip download --no-deps "
                                        r"--only-binary=:all: segmentation-models==1\.0\.1 -d DIR.*--wheels-from DIR"):
        kaggle_bundle.fetch_wheels(pinned, tmp_path / "wheels", [])


def test_project_wheel_builds_offline(tmp_path):
    wheel = kaggle_bundle.build_project_wheel(kaggle_bundle.project_root(), tmp_path)
    assert wheel.name == f"severstal-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as opened:
        names = opened.namelist()
    assert "severstal/stages/predict.py" in names and "severstal/kaggle/notebook.py" in names
    assert not [name for name in names if "__pycache__" in name]


def make_wheel(folder: Path, version_text: str) -> Path:
    """A minimal valid wheel of the module ``tinypkg`` whose ``VALUE`` is ``version_text``."""
    path = folder / "tinypkg-1.0-py3-none-any.whl"
    files = {"tinypkg/__init__.py": f"VALUE = {version_text!r}\n",
             "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                           "Tag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + "tinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {**files, "tinypkg-1.0.dist-info/RECORD": record}.items():
            archive.writestr(name, text)
    return path


def test_wheels_install_into_the_target_once_and_again_when_they_change(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = tmp_path / "packages"
    wheel = make_wheel(tmp_path, "first")
    assert kaggle_notebook.install_wheels([wheel], target) is True
    assert (target / "tinypkg" / "__init__.py").read_text() == "VALUE = 'first'\n"
    assert kaggle_notebook.install_wheels([wheel], target) is False  # same bytes: reused
    wheel = make_wheel(tmp_path, "second")
    assert kaggle_notebook.install_wheels([wheel], target) is True
    assert (target / "tinypkg" / "__init__.py").read_text() == "VALUE = 'second'\n"
    kaggle_notebook.activate(target, ["tinypkg"])
    assert sys.path[0] == str(target.resolve())
    with pytest.raises(BundleError, match="json resolves to .*not to the bundle's copy"):
        kaggle_notebook.activate(target, ["json"])


def test_a_broken_wheel_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match=r"installing the bundle's wheels failed \(exit"):
        kaggle_notebook.install_wheels([broken], tmp_path / "packages")


# ----------------------------------------------------------------------------- finding the bundle

def make_manifest(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / kaggle_notebook.MANIFEST).write_text(json.dumps({"format_version": kaggle_notebook.FORMAT_VERSION}))
    return folder


def test_the_scripts_own_folder_wins(tmp_path):
    own = make_manifest(tmp_path / "own")
    make_manifest(tmp_path / "input" / "other")
    assert kaggle_notebook.find_bundle(None, own, tmp_path / "input") == own


def test_the_bundle_is_found_under_the_input_folder(tmp_path):
    found = make_manifest(tmp_path / "input" / "datasets" / "ana" / "severstal-demo-bundle")
    assert kaggle_notebook.find_bundle(None, tmp_path, tmp_path / "input") == found


@pytest.mark.parametrize("bundles, message", [([], "no severstal bundle"), (["a", "b"], "several bundles")])
def test_no_or_several_bundles_are_an_error(tmp_path, bundles, message):
    for name in bundles:
        make_manifest(tmp_path / "input" / name)
    with pytest.raises(BundleError, match=message):
        kaggle_notebook.find_bundle(None, None, tmp_path / "input")


def test_an_explicit_folder_must_be_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a severstal bundle"):
        kaggle_notebook.find_bundle(str(tmp_path), None, tmp_path)


@pytest.mark.parametrize("inside_folder", [False, True])
def test_zipped_folders_are_unpacked_into_the_work_folder(tmp_path, inside_folder):
    bundle_dir, work = tmp_path / "bundle", tmp_path / "work"
    bundle_dir.mkdir()
    work.mkdir()
    with zipfile.ZipFile(bundle_dir / "models.zip", "w") as archive:
        archive.writestr(("models/" if inside_folder else "") + "demo/thresholds.json", "{}")
    folder = kaggle_notebook.bundle_folder(bundle_dir, "models", work)
    assert folder == work / "models"
    assert (folder / "demo" / "thresholds.json").read_text() == "{}"
    assert kaggle_notebook.bundle_folder(bundle_dir, "models", work) == folder  # unpacked once
    with pytest.raises(BundleError, match="neither wheels/ nor wheels.zip"):
        kaggle_notebook.bundle_folder(bundle_dir, "wheels", work)


def test_the_test_images_are_found_where_kaggle_mounts_them(tmp_path):
    images = tmp_path / "input" / "competitions" / "severstal-steel-defect-detection" / "test_images"
    images.mkdir(parents=True)
    assert kaggle_notebook.find_test_images(None, tmp_path / "input") == images
    assert kaggle_notebook.find_test_images("elsewhere", tmp_path / "input") == Path("elsewhere")
    with pytest.raises(BundleError, match="no test images"):
        kaggle_notebook.find_test_images(None, tmp_path / "empty")


# ----------------------------------------------------------------------------- the stage's checks

def write_config(root: Path) -> Path:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    path = root / "configs" / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def write_thresholds(path: Path, gate: float = 0.0) -> None:
    """Thresholds as tune writes them, "tuned" on the OOF statistics of the weights of every fold folder there is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = {str(c): {**GATE_FREE, "min_area": 100 * c, "classifier_threshold": gate} for c in (1, 2, 3, 4)}
    weights = {kind: {folder.name[4:]: file_fingerprint(folder / "best.weights.h5")
                      for folder in sorted((path.parent / kind).glob("fold[0-9]*"))} for kind in ("seg", "cls")}
    tuned_on = {"tta": ["none", "hflip"], "precision": "float32"}  # the tiny configs' flips, on this CPU
    path.write_text(json.dumps({"format_version": 2, "classes": classes, "weights": weights, "tuned_on": tuned_on}))


def fake_fold(root: Path, kind: str, fold: int) -> None:
    """A fold folder with every file predict reads (their content does not matter to the bundle's choice)."""
    folder = root / "models" / "tiny" / kind / f"fold{fold}"
    folder.mkdir(parents=True)
    for name in kaggle_bundle.FOLD_FILES:
        (folder / name).write_text(f"{kind}{fold}/{name}")


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path)
    return tmp_path


def test_no_thresholds_means_run_all_or_tune_first(project, capsys):
    assert severstal(["bundle", "--config", "configs/tiny.yaml"]) == 1
    error = capsys.readouterr().err
    assert "models/tiny/thresholds.json does not exist" in error and "bash run_all.sh" in error
    assert "severstal tune" in error
    assert not (project / "dist").exists()


def test_no_trained_fold_is_an_error(project, capsys):
    write_thresholds(project / "models" / "tiny" / "thresholds.json")
    (project / "models" / "tiny" / "seg" / "fold0").mkdir(parents=True)  # unfinished: no files
    assert severstal(["bundle", "--config", "configs/tiny.yaml"]) == 1
    assert "no trained segmenter fold" in capsys.readouterr().err
    assert not (project / "dist").exists()


def test_a_classifier_gate_brings_the_classifier_folds(project):
    for fold in (0, 1):
        fake_fold(project, "seg", fold)
    fake_fold(project, "cls", 1)
    write_thresholds(project / "models" / "tiny" / "thresholds.json", gate=0.4)
    config = load_config("configs/tiny.yaml")
    with pytest.raises(UserError, match=r"classifier fold\(s\) \[0\] are not trained"):
        kaggle_bundle.plan_models(Paths(config), "all")
    folds, gated, copies = kaggle_bundle.plan_models(Paths(config), "1")
    assert folds == [1] and gated
    assert [destination for _, destination in copies] == [
        "models/tiny/thresholds.json",
        "models/tiny/seg/fold1/best.weights.h5", "models/tiny/seg/fold1/config.yaml",
        "models/tiny/seg/fold1/training.json",
        "models/tiny/cls/fold1/best.weights.h5", "models/tiny/cls/fold1/config.yaml",
        "models/tiny/cls/fold1/training.json",
    ]
    with pytest.raises(UserError, match=r"fold\(s\) \[2\] are not available; available: \[0, 1\]"):
        kaggle_bundle.plan_models(Paths(config), "1,2")


def test_without_a_gate_the_classifier_stays_out(project):
    fake_fold(project, "seg", 0)
    fake_fold(project, "cls", 0)
    write_thresholds(project / "models" / "tiny" / "thresholds.json")
    folds, gated, copies = kaggle_bundle.plan_models(Paths(load_config("configs/tiny.yaml")), "all")
    assert folds == [0] and not gated
    assert not [destination for _, destination in copies if "/cls/" in destination]


@pytest.mark.parametrize("options, message", [
    (["--tta", "none,rotate"], "--tta none,rotate: inference.tta: must be a non-empty list"),
    (["--batch-size", "0"], "--batch-size 0: inference.batch_size: must be an integer of at least 1"),
])
def test_bad_time_budget_options(project, capsys, options, message):
    fake_fold(project, "seg", 0)
    write_thresholds(project / "models" / "tiny" / "thresholds.json")
    assert severstal(["bundle", "--config", "configs/tiny.yaml", *options]) == 1
    assert message in capsys.readouterr().err


def test_an_existing_folder_that_is_not_a_bundle_is_left_alone(project, capsys, monkeypatch):
    fake_fold(project, "seg", 0)
    write_thresholds(project / "models" / "tiny" / "thresholds.json")
    (project / "mine").mkdir()
    (project / "mine" / "notes.txt").write_text("keep me")
    monkeypatch.setattr(bundle, "assemble", lambda *args: pytest.fail("nothing may be written"))
    assert severstal(["bundle", "--config", "configs/tiny.yaml", "--out", "mine"]) == 1
    assert "is not a bundle made by severstal bundle" in capsys.readouterr().err
    assert [path.name for path in (project / "mine").iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------------------- end to end

TINY_CONFIG = f"""
inherit: {DEMO_CONFIG}
demo: {{train: 16, test: 5, seed: 3}}
folds: {{k: 2}}
seg: {{scale: 0.125, crop: [32, 96], batch_size: 8, epochs: 1, decoder_filters: [16, 8, 8, 4, 4]}}
inference: {{batch_size: 2, tta: [none, hflip]}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny project: demo data, a trained segmenter fold 0, thresholds and its `severstal predict` submission."""
    root = tmp_path_factory.mktemp("project")
    write_config(root)
    with contextlib.chdir(root):
        for stage in (["demo-data"], ["folds"], ["train", "--model", "seg", "--fold", "0"]):
            assert severstal([*stage, "--config", "configs/tiny.yaml"]) == 0, stage
        thresholds = root / "models" / "tiny" / "thresholds.json"
        write_thresholds(thresholds)  # fold 0 only: tune needs every fold
        document = json.loads(thresholds.read_text())
        document["classes"]["3"]["pixel_threshold"] = 0.45
        thresholds.write_text(json.dumps(document))
        assert severstal(["predict", "--config", "configs/tiny.yaml"]) == 0
    return root


@pytest.mark.slow
def test_the_notebook_script_offline_writes_the_same_submission_as_predict(trained, tmp_path, monkeypatch):
    kaggle = tmp_path / "kaggle"
    bundle_dir = kaggle / "input" / "severstal-tiny-bundle"
    monkeypatch.chdir(trained)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    code = bundle.main(["--config", "configs/tiny.yaml", "--out", str(bundle_dir)])
    if code != 0 and not (bundle_dir / kaggle_notebook.MANIFEST).exists():
        pytest.skip("the dependency wheels could not be downloaded (no package registry reachable)")
    assert code == 0
    assert bundle.main(["--config", "configs/tiny.yaml", "--out", str(bundle_dir)]) == 0  # up to date: no change

    manifest = json.loads((bundle_dir / kaggle_notebook.MANIFEST).read_text())
    assert manifest["folds"] == [0] and manifest["tta"] == ["none", "hflip"] and manifest["batch_size"] == 2
    assert not manifest["gated"]
    assert json.loads((bundle_dir / "dataset-metadata.json").read_text())["id"] == "tester/severstal-tiny-bundle"
    assert (bundle_dir / "inference.py").read_text() == Path(kaggle_notebook.__file__).read_text()
    assert sorted(path.name for path in (bundle_dir / "models" / "tiny" / "seg" / "fold0").iterdir()) == sorted(
        kaggle_bundle.FOLD_FILES)
    assert not (bundle_dir / "models" / "tiny" / "cls").exists()
    for entry in manifest["wheels"]:
        assert file_sha256(bundle_dir / "wheels" / entry["file"]) == entry["sha256"]

    images = kaggle / "input" / "severstal-steel-defect-detection" / "test_images"
    shutil.copytree(trained / "data" / "demo" / "test_images", images)
    working = kaggle / "working"
    working.mkdir()
    offline = {**{key: value for key, value in os.environ.items() if not key.startswith("PIP_")},
               "PIP_NO_INDEX": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "SEVERSTAL_WORK": str(tmp_path / "work"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "../input/severstal-tiny-bundle/inference.py"], cwd=working,
                            env=offline, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"severstal {__version__} from {tmp_path / 'work' / 'packages' / 'severstal'}" in output
    expected = (trained / "submissions" / "tiny" / "submission.csv").read_bytes()
    assert (working / "submission.csv").read_bytes() == expected
