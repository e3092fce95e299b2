"""predict, merge, report and export end to end on tiny trained models (1 epoch, 12 quarter-resolution demo images).

One session fixture runs demo-data, folds, train (cls and seg, 2 folds), tune and one full predict (with
defects.json); the tests read its outputs or run predict again with few images, folds or flips to stay fast.
The export tests run the exported SavedModel and ``severstal.Predictor`` in fresh processes where the
training stack (and, for the bare SavedModel, this package) cannot be imported.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from severstal import cli
from severstal.core.labels import masks_for, normalise, rle_lookup
from severstal.core.submission import check_submission
from severstal.infra.artifacts import Paths, sidecar_path
from severstal.infra.config import load_config
from severstal.infra.tables import read_csv_text as read_submission
from severstal.infra.tables import read_table
from severstal.nn import inference
from severstal.stages import merge, predict, report

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = f"""inherit: {REPO_ROOT / 'configs' / 'demo.yaml'}
experiment: tiny
data:
  dir: data
  folds_file: folds/tiny.csv
cls:
  epochs: 1
  batch_size: 4
seg:
  epochs: 1
  batch_size: 4
inference:
  batch_size: 4
  tta: [none, hflip]
"""
TEST_IMAGES = 8


@contextmanager
def working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def severstal(*argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A workspace with 2 trained folds of each model, thresholds and a full submission with its ablation."""
    root = tmp_path_factory.mktemp("trained")
    with working_directory(root):
        Path("config.yaml").write_text(CONFIG)
        steps = [("demo-data", "--out", "data", "--train", 12, "--test", TEST_IMAGES), ("folds",),
                 ("train", "--model", "cls", "--fold", "all"), ("train", "--model", "seg", "--fold", "all"),
                 ("tune",), ("predict", "--defects")]
        for step in steps:
            assert severstal(step[0], "--config", "config.yaml", *step[1:]) == 0, step
    return root


@pytest.fixture
def workspace(trained, monkeypatch):
    monkeypatch.chdir(trained)
    return load_config("config.yaml")


@pytest.fixture
def no_model_work(monkeypatch):
    """Fail the test if a fold model is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(inference, "load_fold_model", refuse)


def test_submission_is_valid_with_every_image_and_class(workspace):
    raw = read_submission(Paths(workspace).submission)
    assert list(raw.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    names = sorted(os.listdir("data/test_images"))
    assert check_submission(raw, names) == []
    assert len(raw) == 4 * TEST_IMAGES
    assert raw["ImageId"].tolist() == [name for name in names for _ in range(4)]
    assert raw["ClassId"].tolist() == ["1", "2", "3", "4"] * TEST_IMAGES
    saved = json.loads(sidecar_path(Paths(workspace).submission).read_text())
    assert saved["shard"] is None and saved["images"] == TEST_IMAGES


def test_ablation_final_row_equals_report_score(workspace, capsys):
    document = json.loads((Paths(workspace).reports / "ablation.json").read_text())
    variants = {v["name"]: v for v in document["variants"]}
    assert list(variants) == ["empty", "raw", "pixel_area", "gate", "final"]
    assert variants["final"]["mean_dice"] == variants["gate"]["mean_dice"]
    truth = read_table("data/test_labels.csv")
    empty_pairs = 4 * TEST_IMAGES - len(truth)  # test_labels.csv lists the non-empty masks only
    assert variants["empty"]["mean_dice"] == pytest.approx(empty_pairs / (4 * TEST_IMAGES))
    pairs = pd.read_csv(Paths(workspace).reports / "ablation_pairs.csv")
    assert len(pairs) == 4 * TEST_IMAGES
    assert report.main(["--config", "config.yaml"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"mean_dice {variants['final']['mean_dice']:.6f}"


# ----------------------------------------------------------------------------- defects.json, export, Predictor
# (first: the later tests predict again without --defects, which removes defects.json)

@pytest.fixture
def defects(workspace) -> dict:
    """``defects.json`` of the submission (predicted again if a test's predict without --defects removed it)."""
    assert predict.main(["--config", "config.yaml", "--defects"]) == 0
    return json.loads(Paths(workspace).defects.read_text())


def test_defects_json_lists_the_submission_masks_as_objects(workspace, defects):
    paths = Paths(workspace)
    document = defects
    assert document["format"] == "severstal-defects" and document["layout"] == "kaggle"
    assert document["thresholds"]["sha256"].startswith("sha256:") and len(document["models"]) >= 2
    submission = rle_lookup(normalise(read_submission(paths.submission)), [1, 2, 3, 4])
    records = {record["image"]: record for record in document["images"]}
    assert sorted(records) == sorted(os.listdir("data/test_images"))
    for image_id, record in records.items():
        masks = masks_for(submission.get(image_id, {}), (256, 1600), 4)
        areas = masks.sum(axis=(0, 1))
        assert [c["area"] for c in record["classes"]] == areas.tolist()
        assert record["defective"] == bool(areas.any())
        for defect in record["defects"]:
            x, y, width, height = defect["bbox"]
            channel = masks[y:y + height, x:x + width, defect["class"] - 1]
            assert channel.sum() >= defect["area"] > 0  # the component lies in its box
            assert all(x <= px < x + width and y <= py < y + height for px, py in defect["polygon"])
        assert sum(d["area"] for d in record["defects"]) == areas.sum()


def test_show_outlines_the_defects(workspace, defects, capsys, tmp_path):
    image_id = next(record["image"] for record in defects["images"] if record["defects"])
    assert severstal("show", "--config", "config.yaml", "--ids", image_id, "--out", tmp_path) == 0
    assert "with the defects of" in capsys.readouterr().out
    assert (tmp_path / f"{Path(image_id).stem}.png").is_file()


@pytest.fixture(scope="session")
def exported(trained):
    """``severstal export`` of the trained workspace: its folder."""
    with working_directory(trained):
        assert severstal("export", "--config", "config.yaml") == 0
    return trained / "exports" / "tiny"


def run_python(code: str, *args) -> str:
    """Run ``code`` in a fresh interpreter (arguments in ``sys.argv[1:]``); its standard output."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_export_runs_without_severstal_and_the_predictor_reproduces_predict(workspace, defects, exported,
                                                                                tmp_path):
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["input"] == {"name": "images", "dtype": "uint8", "shape": [None, 256, 1600, 3],
                                 "channel_order": "RGB"}
    assert set(manifest["outputs"]) <= {"segmentation", "classification"} and "segmentation" in manifest["outputs"]
    assert manifest["tta"] == ["none", "hflip"] and manifest["folds"] == [0, 1]
    names = sorted(os.listdir("data/test_images"))
    stdout = run_python("""
        import json, sys
        training = ("segmentation_models", "albumentations", "tf_keras", "pandas", "yaml", "sklearn", "matplotlib")
        for name in ("severstal", *training):
            sys.modules[name] = None  # none of them can be imported
        import cv2, numpy as np, tensorflow as tf
        paths = [f"data/test_images/{name}" for name in sys.argv[3:]]
        model = tf.saved_model.load(sys.argv[1])  # plain TensorFlow: severstal cannot be imported
        images = np.stack([cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in paths[:3]])
        plain = model.signatures["serving_default"](images=tf.constant(images))
        del sys.modules["severstal"]  # the Predictor: severstal, still without the training stack
        from severstal import Predictor
        manifest = json.loads(open(f"{sys.argv[1]}/export.json").read())
        results = Predictor(model, manifest, sys.argv[1]).predict(paths)  # the SavedModel loaded above
        np.savez(sys.argv[2], masks=np.stack([r.masks for r in results]),
                 probabilities=np.stack([r.probabilities for r in results]),
                 **{f"plain_{name}": value.numpy() for name, value in plain.items()})
        print(json.dumps({"records": [r.record for r in results], "latency": [r.latency_ms for r in results]}))
    """, exported, tmp_path / "outputs.npz", *names)
    arrays = np.load(tmp_path / "outputs.npz")

    # the bare SavedModel's outputs, and the Predictor's from the same graph in another batch: float32 rounding apart
    assert arrays["plain_segmentation"].shape == (3, 256, 1600, 4) and arrays["plain_segmentation"].dtype == np.float32
    np.testing.assert_allclose(arrays["plain_segmentation"], arrays["probabilities"][:3], rtol=0, atol=2e-5)
    assert ("plain_classification" in arrays) == ("classification" in manifest["outputs"])

    # the Predictor's masks against the submission: equal but where rounding meets a threshold
    result = json.loads(stdout.strip().splitlines()[-1])
    assert all(latency > 0 for latency in result["latency"])
    submission = rle_lookup(normalise(read_submission(Paths(workspace).submission)), [1, 2, 3, 4])
    thresholds = np.array([s["pixel_threshold"] for s in manifest["postprocessing"]], np.float32)
    truth = np.stack([masks_for(submission.get(name, {}), (256, 1600), 4) for name in names])
    differ = truth != arrays["masks"]
    near = np.abs(arrays["probabilities"] - thresholds) < 1e-4  # float32 rounding may decide these either way
    assert not (differ & ~near).any() and differ.mean() < 1e-4
    predicted = {record["image"]: record for record in defects["images"]}
    for name, record, image_differs in zip(names, result["records"], differ.any(axis=(1, 2, 3)), strict=True):
        assert record["image"] == name
        if not image_differs:  # the same masks: the same decisions and defects
            for mine, theirs in zip(record["classes"], predicted[name]["classes"], strict=True):
                assert (mine["defective"], mine["area"]) == (theirs["defective"], theirs["area"])
                if mine["classifier_probability"] is not None:  # 6 decimals of the same float32 rounding
                    assert mine["classifier_probability"] == pytest.approx(theirs["classifier_probability"], abs=2e-6)
            assert [d["bbox"] for d in record["defects"]] == [d["bbox"] for d in predicted[name]["defects"]]


def test_a_trained_unet_converts_to_onnx(workspace, tmp_path):
    from severstal.nn.export import onnx_difference, save_onnx, serving_module

    fold = inference.load_fold_model(Paths(workspace), "seg", 0)
    module = serving_module({"seg": inference.FoldEnsemble([fold], ["none"])}, (256, 1600))  # scale 1/4: a pool
    save_onnx(module, (256, 1600), tmp_path / "model.onnx")
    images = np.stack([cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
                       for path in sorted(Path("data/test_images").iterdir())[:1]])
    assert onnx_difference(module, tmp_path / "model.onnx", images) < 1e-4  # onnxruntime vs TensorFlow


def test_export_is_not_made_twice_and_refuses_untuned_models(workspace, exported, capsys, no_model_work):
    before = (exported / "export.json").read_bytes()
    assert severstal("export", "--config", "config.yaml") == 0
    assert "is up to date" in capsys.readouterr().out and (exported / "export.json").read_bytes() == before
    assert severstal("export", "--config", "config.yaml", "--experiment", "untuned", "--force") == 1
    assert "run severstal tune first" in capsys.readouterr().err


# ----------------------------------------------------------------------------- predict's options and checks

def test_up_to_date_submission_is_not_remade(workspace, capsys, no_model_work):
    before = Paths(workspace).submission.stat().st_mtime_ns
    assert predict.main(["--config", "config.yaml"]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert Paths(workspace).submission.stat().st_mtime_ns == before


@pytest.mark.parametrize("argv, difference", [
    (["--tta", "none"], "inference.tta: ['none', 'hflip'] -> ['none']"),
    (["--format", "legacy"], "predict.format: 'long' -> 'legacy'"),
    (["--folds", "0"], "predict.folds: [0, 1] -> [0]"),
])
def test_other_settings_stop_unless_forced(workspace, capsys, no_model_work, argv, difference):
    before = Paths(workspace).submission.read_bytes()
    assert predict.main(["--config", "config.yaml", *argv]) == 1
    error = capsys.readouterr().err
    assert "was made with a different config" in error and difference in error and "--force" in error
    assert Paths(workspace).submission.read_bytes() == before
    assert predict.main(["--config", "config.yaml", "--batch-size", "3"]) == 0  # batches do not change predictions
    assert "is up to date" in capsys.readouterr().out


@pytest.mark.parametrize("argv, would_use", [
    (["--tta", "none"], "flips none in float32"),
    (["--set", "hardware.mixed_precision=true"], "flips none,hflip in mixed_float16"),
])
def test_predictions_made_otherwise_than_tuned_are_refused(workspace, capsys, tmp_path, argv, would_use):
    elsewhere = tmp_path / "submissions"
    assert predict.main(["--config", "config.yaml", "--force", "--set", f"paths.submissions={elsewhere}", *argv]) == 1
    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert lines[0].startswith("data: ") and lines[1].startswith("TensorFlow ") and "float32" in lines[1]
    assert "was tuned on out-of-fold predictions with flips none,hflip in float32; this predict would use " \
           f"{would_use}" in output.err and "severstal tune" in output.err
    assert not elsewhere.exists()


def test_a_missing_required_gpu_stops_predict_before_it_writes(workspace, capsys, tmp_path):
    elsewhere = tmp_path / "submissions"
    assert predict.main(["--config", "config.yaml", "--force", "--set", f"paths.submissions={elsewhere}",
                         "--set", "hardware.require_gpu=true"]) == 1
    error = capsys.readouterr().err
    assert "no GPU is visible to TensorFlow" in error and "--set hardware.require_gpu=false" in error
    assert not elsewhere.exists()


def test_retrained_weights_are_refused_until_tuned_again(workspace, capsys, tmp_path):
    weights = Paths(workspace).fold_dir("seg", 1) / "best.weights.h5"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original + b"\0")  # as if fold 1 had been trained again
        assert predict.main(["--config", "config.yaml", "--force"]) == 1
        error = capsys.readouterr().err
        assert "seg fold 1's weights" in error and "are not those" in error and "was tuned on" in error
        assert "severstal oof --model seg --fold 1" in error and "severstal tune" in error
        assert predict.main(["--config", "config.yaml", "--folds", "0", "--set", f"paths.submissions={tmp_path}",
                             "--set", f"paths.reports={tmp_path}"]) == 0  # a subset of the tuned folds is fine
    finally:
        weights.write_bytes(original)


def test_shards_and_merge_reproduce_the_submission_exactly(workspace, capsys):
    whole = Paths(workspace).submission.read_bytes()
    whole_ablation = json.loads((Paths(workspace).reports / "ablation.json").read_text())
    # The full run's batches of 4 are the shards of 4 images: the same computations, so the same bytes. (Other
    # batch sizes give other float32 kernels: probabilities within about 1e-5, which may move a pixel that lies
    # that close to its threshold; the shards' batch size is free, see predict_stamp.)
    for index in (1, 2):
        assert predict.main(["--config", "config.yaml", "--shard", f"{index}/2", "--batch-size", "4"]) == 0
    parts = [read_submission(Paths(workspace).shard(i, 2)) for i in (1, 2)]
    assert [part["ImageId"].nunique() for part in parts] == [TEST_IMAGES // 2] * 2
    assert merge.main(["--config", "config.yaml"]) == 0
    assert Paths(workspace).submission.read_bytes() == whole
    merged_ablation = json.loads((Paths(workspace).reports / "ablation.json").read_text())
    for merged, single in zip(merged_ablation["variants"], whole_ablation["variants"], strict=True):
        assert merged["mean_dice"] == pytest.approx(single["mean_dice"], abs=1e-8)
    assert predict.main(["--config", "config.yaml"]) == 0  # the merged sidecar counts as the full run's
    assert "is up to date" in capsys.readouterr().out


@pytest.fixture
def images_with_a_bad_one(workspace, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in sorted(os.listdir("data/test_images"))[:2]:
        shutil.copy(Path("data/test_images") / name, folder / name)
    data = (folder / name).read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    return folder


def test_unreadable_image_stops_before_model_work(workspace, images_with_a_bad_one, tmp_path, capsys,
                                                  no_model_work):
    elsewhere = tmp_path / "submissions"
    code = predict.main(["--config", "config.yaml", "--images", str(images_with_a_bad_one),
                         "--set", f"paths.submissions={elsewhere}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.jpg: truncated" in err and "--skip-bad" in err
    assert not elsewhere.exists()


def test_skip_bad_predicts_the_bad_image_empty(workspace, images_with_a_bad_one, tmp_path, capsys):
    elsewhere = tmp_path / "submissions"
    assert predict.main(["--config", "config.yaml", "--images", str(images_with_a_bad_one), "--skip-bad",
                         "--set", f"paths.submissions={elsewhere}", "--set", f"paths.reports={tmp_path / 'reports'}",
                         "--folds", "0", "--format", "legacy"]) == 0
    assert "broken.jpg cannot be used" in capsys.readouterr().err
    raw = read_submission(elsewhere / "tiny" / "submission.csv")
    assert list(raw.columns) == ["ImageId_ClassId", "EncodedPixels"]
    assert check_submission(raw, sorted(os.listdir(images_with_a_bad_one))) == []
    broken = raw[raw["ImageId_ClassId"].str.startswith("broken.jpg_")]
    assert broken["EncodedPixels"].tolist() == ["", "", "", ""]
    assert json.loads((elsewhere / "tiny" / "submission.meta.json").read_text())["skipped_bad"] == ["broken.jpg"]
    assert not (tmp_path / "reports").exists()  # no truth for another image folder: no ablation


def test_ensembled_batches_are_the_mean_of_the_folds(workspace):
    paths = [Path("data/test_images") / name for name in sorted(os.listdir("data/test_images"))[:3]]
    models = [inference.load_fold_model(Paths(workspace), "seg", fold) for fold in (0, 1)]
    single = [np.concatenate([p["seg"] for _, p in inference.ensembled_batches({"seg": [m]}, paths, ["none"], 2)])
              for m in models]
    batches = list(inference.ensembled_batches({"seg": models}, paths, ["none"], 2))
    assert [start for start, _ in batches] == [0, 2]
    assert all(set(outputs) == {"seg"} for _, outputs in batches)
    ensembled = np.concatenate([outputs["seg"] for _, outputs in batches])  # (3, 256, 1600, 4)
    assert ensembled.shape == (3, 256, 1600, 4)
    np.testing.assert_allclose(ensembled, (single[0] + single[1]) / 2, rtol=0, atol=1e-4)  # see test_inference
    assert not np.allclose(single[0], single[1])  # the folds differ, so the mean is a real average


def test_missing_thresholds_ask_for_tune(workspace, capsys, no_model_work):
    assert predict.main(["--config", "config.yaml", "--experiment", "untuned", "--force"]) == 1
    assert "run severstal tune first" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--shard", "3/2"], "1 <= i <= n"),
    (["--tta", "rot90"], "--tta rot90: inference.tta: must be a non-empty list, each one of none, hflip"),
    (["--folds", "7"], "fold(s) [7] are not available; available: [0, 1]"),
    (["--batch-size", "0"], "--batch-size 0: inference.batch_size: must be an integer of at least 1, got 0"),
])
def test_bad_options(workspace, capsys, no_model_work, argv, message):
    assert predict.main(["--config", "config.yaml", "--force", *argv]) == 1
    assert message in capsys.readouterr().err
