"""The export's pieces without training: the resize an ONNX converter keeps, export.json, and the Predictor on a
hand-made SavedModel whose probabilities are known (the red channel / 255, the classifier's a fixed vector)."""

from types import SimpleNamespace

import numpy as np
import pytest

from severstal.core.exports import check_manifest, export_manifest
from severstal.nn.export import exported_resize, onnx_problem, pooling_factors
from severstal.nn.pipeline import area_resize
from severstal.nn.tfsetup import tf

NAMES = ["scratch", "dent"]
SETTINGS = [{"pixel_threshold": 0.5, "min_component_size": 0, "min_area": 2, "classifier_threshold": 0.0},
            {"pixel_threshold": 0.25, "min_component_size": 3, "min_area": 0, "classifier_threshold": 0.6}]


@pytest.mark.parametrize("shape, size, factors", [
    ((256, 1600), (64, 400), (4, 4)), ((256, 1600), (32, 200), (8, 8)), ((64, 96), (32, 96), (2, 1)),
    ((192, 320), (124, 207), None), ((90, 90), (30, 30), None), ((64, 96), (64, 96), (1, 1))])
def test_pooling_factors_are_whole_powers_of_two(shape, size, factors):
    assert pooling_factors(shape, size) == factors


@pytest.mark.parametrize("size", [(32, 48), (16, 24), (8, 12), (32, 96)])
def test_the_exported_resize_is_the_area_resize_to_the_bit(size):
    assert pooling_factors((64, 96), size) is not None  # an average pool, not the area resize itself
    images = np.random.default_rng(size[0]).integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(exported_resize(tf.constant(images), (64, 96), size).numpy(),
                                  area_resize(tf.constant(images), size).numpy())


def test_onnx_is_refused_where_the_area_resize_would_be_lost():
    ensemble = SimpleNamespace(spec=SimpleNamespace(size=(124, 207)))
    assert "not by a power of two" in onnx_problem({"cls": ensemble}, (192, 320))
    assert onnx_problem({"cls": SimpleNamespace(spec=SimpleNamespace(size=(96, 160)))}, (192, 320)) is None


def manifest(**changes) -> dict:
    values = dict(experiment="e", layout="masks", class_ids=[1, 2], class_names=NAMES, shape=(8, 12),
                  outputs=["segmentation", "classification"], postprocessing=SETTINGS, decision=None,
                  tile_overlap=4, tta=["none"], folds=[0], precision="float32", made_from={}, created="now",
                  tensorflow=tf.__version__)
    return export_manifest(**{**values, **changes})


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "not a severstal export manifest"), ({"version": 9}, "has version 9"),
    ({"input": {"shape": [None, 8]}}, "input.shape must be"), ({"classes": None}, "'classes' is missing"),
    ({"postprocessing": None}, "needs its 'postprocessing'"), ({"postprocessing": SETTINGS[:1]}, "one per class"),
    ({"postprocessing": [SETTINGS[0], {"pixel_threshold": 2}]}, "postprocessing.2.pixel_threshold"),
    ({"signature": None}, "'signature'"),
    ({"outputs": {"classification": {}}, "decision": {"rule": "thresholded", "thresholds": {"scratch": 0.2}}},
     "decision.thresholds needs a number in \\[0, 1\\] for dent"),
    ({"outputs": {"classification": {}}, "decision": {"rule": "vote"}}, "'decision' rule")])
def test_a_broken_manifest_is_refused_with_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        check_manifest({**manifest(), **change})


def test_a_segmentation_manifest_needs_its_thresholds():
    with pytest.raises(ValueError, match="segmentation export needs its post-processing"):
        manifest(postprocessing=None)


def test_export_does_not_replace_a_folder_that_is_not_an_export(tmp_path, capsys):
    from severstal import cli

    (tmp_path / "notes.txt").write_text("keep me")
    assert cli.main(["export", "--out", str(tmp_path)]) == 1
    assert "is not an export" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "keep me"


def known_module() -> tf.Module:
    """The export's signature with known outputs: segmentation = (red, green) / 255, classification = (0.9, 0.5)."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec((None, 8, 12, 3), tf.uint8, name="images")])
    def serve(images):
        probabilities = tf.cast(images[..., :2], tf.float32) / 255.0  # (batch, 8, 12, 2)
        gate = tf.tile(tf.constant([[0.9, 0.5]]), [tf.shape(images)[0], 1])  # (batch, 2)
        return {"segmentation": probabilities, "classification": gate}

    module.serve = serve
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """:func:`known_module` saved with its export.json."""
    import json

    from severstal.nn.export import save_serving_model

    folder = tmp_path_factory.mktemp("export")
    save_serving_model(known_module(), folder)
    (folder / "export.json").write_text(json.dumps(manifest()))
    return folder


def test_the_onnx_copy_is_checked_against_the_saved_model(tmp_path):
    from severstal.stages.export import convert_to_onnx

    images = np.random.default_rng(0).integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
    entry = convert_to_onnx(known_module(), (8, 12), tmp_path / "model.onnx", images)
    assert entry["file"] == "model.onnx" and entry["opset"] == 17 and entry["max_abs_difference"] <= 1e-6
    assert entry["converter"].startswith("tf2onnx ") and (tmp_path / "model.onnx").stat().st_size > 0


def test_predictor_post_processes_and_lists_the_defects(exported):
    from severstal import Predictor

    predictor = Predictor.load(exported)
    image = np.zeros((8, 12, 3), np.uint8)
    image[1:3, 1:4, 0] = 200  # scratch: 6 pixels > 0.5
    image[5, 9, 0] = 255  # one pixel: kept (min_area 2 counts the whole mask, 7 pixels)
    image[4:8, 0:2, 1] = 100  # dent at 0.39 > 0.25, 8 pixels, but the classifier's 0.5 < 0.6: gated away
    result = predictor.predict(image)
    assert result.masks.shape == (8, 12, 2) and result.masks[..., 1].sum() == 0
    assert result.masks[..., 0].sum() == 7 and result.defective is True and result.latency_ms > 0
    assert [(d["name"], d["area"], d["bbox"]) for d in result.defects] == [("scratch", 6, [1, 1, 3, 2]),
                                                                          ("scratch", 1, [9, 5, 1, 1])]
    assert result.defects[0]["classifier_probability"] == 0.9
    np.testing.assert_array_equal(result.label_map, result.masks[..., 0])  # class 1 where the scratch is
    assert [c["defective"] for c in result.record["classes"]] == [True, False]
    assert result.record["image"] == "image_0"


def test_predictor_takes_batches_grey_images_and_files(exported, tmp_path):
    import cv2

    from severstal import Predictor

    predictor = Predictor.load(exported)
    grey = np.full((8, 12), 255, np.uint8)  # every channel 255: scratch everywhere, dent gated
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.dstack([grey, grey * 0, grey * 0]), cv2.COLOR_RGB2BGR))
    batch = predictor.predict(np.stack([np.dstack([grey] * 3)] * 2), names=["a", "b"])
    assert [r.record["image"] for r in batch] == ["a", "b"] and all(r.masks[..., 0].all() for r in batch)
    assert predictor.predict(grey).masks[..., 0].all()
    from_file = predictor.predict(path)  # read as RGB: red only
    assert from_file.record["image"] == "frame.png" and from_file.masks[..., 0].all()


def test_larger_images_are_tiled_and_others_refused(exported, tmp_path):
    import cv2

    from severstal import Predictor

    predictor = Predictor.load(exported)
    large = np.zeros((20, 30, 3), np.uint8)
    large[10:14, 15:25, 0] = 250  # a pointwise model: the blended tiles give each pixel its own value
    result = predictor.predict(large)
    assert result.probabilities.shape == (20, 30, 2)
    np.testing.assert_allclose(result.probabilities[..., 0], large[..., 0] / 255.0, atol=1e-6)
    assert [d["bbox"] for d in result.defects] == [[15, 10, 10, 4]]
    for bad, message in [(np.zeros((6, 12, 3), np.uint8), "takes images of 8 x 12"),
                         (np.zeros((8, 12, 3), np.float32), "must be uint8"),
                         (np.zeros((8, 12, 4), np.uint8), r"\(height, width, 3\)")]:
        with pytest.raises(ValueError, match=message):
            predictor.predict(bad)
    with pytest.raises(FileNotFoundError, match="severstal export"):
        Predictor.load(exported / "missing")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((6, 12, 3), np.uint8))
    with pytest.raises(ValueError, match="takes images of 8 x 12"):  # a file is checked as an array is
        predictor.predict(tmp_path / "small.png")


def test_an_onnx_copy_that_differs_is_refused(tmp_path, monkeypatch):
    import severstal.nn.export as export
    from severstal.infra.errors import UserError
    from severstal.stages.export import convert_to_onnx

    monkeypatch.setattr(export, "onnx_difference", lambda *args: 0.5)
    images = np.zeros((1, 8, 12, 3), np.uint8)
    with pytest.raises(UserError, match="differs from the SavedModel by up to 0.5 .* it is not written"):
        convert_to_onnx(known_module(), (8, 12), tmp_path / "model.onnx", images)


def test_a_classification_export_labels_by_its_decision_thresholds(tmp_path):
    """The folders layout: classification only, "defective" flagged from 0.2, "healthy" from 0.9 (tuned for
    recall); the label is the most probable flagged class."""
    import json

    from severstal import Predictor
    from severstal.nn.export import save_serving_model

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec((None, 4, 4, 3), tf.uint8, name="images")])
    def serve(images):  # p(defective) = the mean red / 255
        defective = tf.reduce_mean(tf.cast(images[..., 0], tf.float32), axis=[1, 2]) / 255.0  # (batch,)
        return {"classification": tf.stack([defective, 1.0 - defective], axis=1)}

    module.serve = serve
    save_serving_model(module, tmp_path)
    decision = {"rule": "thresholded", "thresholds": {"defective": 0.2, "healthy": 0.9}}
    (tmp_path / "export.json").write_text(json.dumps(manifest(
        layout="folders", class_names=["defective", "healthy"], shape=(4, 4), outputs=["classification"],
        postprocessing=None, decision=decision, tile_overlap=None)))
    predictor = Predictor.load(tmp_path)
    images = np.zeros((3, 4, 4, 3), np.uint8)
    images[0, ..., 0], images[1, ..., 0], images[2, ..., 0] = 51, 153, 0  # p(defective) 0.2, 0.6, 0
    results = predictor.predict(images)
    assert [r.label for r in results] == ["defective", "defective", "healthy"]  # argmax would say healthy first
    assert [r.record["flagged"] for r in results] == [["defective"], ["defective"], ["healthy"]]
    assert results[0].masks is None and results[0].defective is None
    np.testing.assert_allclose(results[1].classifier_probabilities, [0.6, 0.4], atol=1e-6)
