"""Bad files and failing disks end in one clear message, a non-zero exit and nothing half-written."""

import errno
import json
import shutil

import numpy as np
import pytest
from training_fixtures import tiny_run  # noqa: F401

from severstal.infra.artifacts import Paths, read_thresholds
from severstal.infra.commands import os_error_message, run_main
from severstal.infra.config import load_config
from severstal.infra.errors import UserError
from severstal.stages import folds as folds_stage

MESSAGE_END = "re-run severstal train --model seg --fold 0 --force"


def copy_run(tiny_run, tmp_path):  # noqa: F811
    """The tiny run's models in a scratch folder, and its config pointing there."""
    shutil.copytree(tiny_run.models_dir, tmp_path / "models")
    arguments = tiny_run.arguments(tmp_path / "models")
    return arguments, load_config(arguments[1], arguments[3::2])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "another model", "not hdf5"])
def test_broken_weights_name_the_fold_and_the_fix(tiny_run, tmp_path, damage):  # noqa: F811
    from severstal.nn.inference import load_fold_model

    _, config = copy_run(tiny_run, tmp_path)
    paths = Paths(config)
    weights = paths.fold_dir("seg", 0) / "best.weights.h5"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:5000])
    elif damage == "another model":
        shutil.copy(paths.fold_dir("cls", 0) / "best.weights.h5", weights)
    else:
        weights.write_text("not a weights file")
    with pytest.raises(UserError) as caught:
        load_fold_model(paths, "seg", 0)
    message = str(caught.value)
    assert message.startswith(f"seg fold 0: {weights} is truncated or not a weights file of this model (")
    assert message.endswith(MESSAGE_END)


@pytest.mark.slow
def test_non_finite_probabilities_stop_oof_naming_the_fold_and_write_nothing(tiny_run, tmp_path, capsys):  # noqa: F811
    from severstal.nn.callbacks import save_weights_atomically
    from severstal.nn.inference import load_fold_model
    from severstal.stages import oof

    arguments, config = copy_run(tiny_run, tmp_path)
    paths = Paths(config)
    fold_model = load_fold_model(paths, "seg", 0)
    fold_model.model.set_weights([np.full_like(w, np.nan) for w in fold_model.model.get_weights()])
    save_weights_atomically(fold_model.model, paths.fold_dir("seg", 0) / "best.weights.h5")
    before = (paths.fold_dir("seg", 0) / "oof.npz").read_bytes()
    assert oof.main(["--model", "seg", "--fold", "0", *arguments]) == 1
    error = capsys.readouterr().err
    assert "error: seg fold 0 predicts non-finite probabilities (NaN or infinity) for images 0.." in error
    assert "severstal train --model seg --fold 0 --force" in error
    assert (paths.fold_dir("seg", 0) / "oof.npz").read_bytes() == before


@pytest.mark.parametrize("value, message", [
    ("1e400", "classes.3.min_area must be a whole number of pixels >= 0, got inf"),
    ("-5", "classes.3.min_area must be a whole number of pixels >= 0, got -5"),
    ("NaN", "classes.3.min_area must be a whole number of pixels >= 0, got nan"),
])
def test_thresholds_out_of_range_name_the_key(tmp_path, monkeypatch, repo_root, value, message):
    monkeypatch.chdir(tmp_path)
    paths = Paths(load_config(repo_root / "configs" / "demo.yaml"))
    classes = {str(c): {"pixel_threshold": 0.5, "min_component_size": 0, "min_area": 600, "classifier_threshold": 0}
               for c in (1, 2, 3, 4)}
    text = json.dumps({"classes": classes}).replace('"3": {"pixel_threshold": 0.5, "min_component_size": 0, '
                                                    '"min_area": 600', f'"3": {{"pixel_threshold": 0.5, '
                                                    f'"min_component_size": 0, "min_area": {value}')
    paths.thresholds.parent.mkdir(parents=True)
    paths.thresholds.write_text(text)
    with pytest.raises(UserError) as caught:
        read_thresholds(paths)
    assert str(caught.value) == f"{paths.thresholds}: {message}; run severstal tune --force to tune it again"


def test_a_file_error_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, capsys, repo_root):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "train_images").mkdir(parents=True)
    (tmp_path / "data" / "train_images" / "a.jpg").write_bytes(b"x")
    (tmp_path / "data" / "train_images" / "b.jpg").write_bytes(b"x")
    (tmp_path / "data" / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.jpg,3,1 5\n")
    (tmp_path / "taken").mkdir()  # a folder where the folds file should go
    code = folds_stage.main(["--config", str(repo_root / "configs" / "demo.yaml"), "--data", "data", "--out", "taken"])
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "taken: Is a directory" in error and "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "taken"]  # no temporary, no lock
    assert list((tmp_path / "taken").iterdir()) == []


@pytest.mark.parametrize("number, advice", [
    (errno.ENOSPC, "free some disk space"), (errno.EACCES, "check the permissions"), (errno.EROFS, "read-only"),
])
def test_os_errors_become_one_paragraph(number, advice, capsys):
    import argparse

    def run(_):
        raise OSError(number, "the reason", "models/demo/seg/fold0/history.csv")

    assert run_main(argparse.ArgumentParser(), run, []) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: models/demo/seg/fold0/history.csv: the reason. Nothing was half-written")
    assert advice in error and error.count("\n") == 1
    assert advice in os_error_message(OSError(number, "x", "f"))


def test_a_bad_config_writes_nothing(tmp_path, monkeypatch, capsys, repo_root):
    from severstal.stages import train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text(f"inherit: {repo_root / 'configs' / 'demo.yaml'}\nfolds: 3\n")
    assert train.main(["--model", "seg", "--fold", "0", "--config", "my.yaml"]) == 1
    assert "my.yaml: folds: must be a mapping with k and seed, got 3" in capsys.readouterr().err
    for override in ("cls.batch_size=0", "data.dir=2019", "seg.epoch=3"):
        assert train.main(["--model", "cls", "--fold", "0", "--config", str(repo_root / "configs" / "demo.yaml"),
                           "--set", override]) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["my.yaml"]
