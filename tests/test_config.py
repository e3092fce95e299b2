"""The config schema: unknown keys, wrong types and ranges refused before anything runs, with one clear message."""

import subprocess
import sys

import pytest
import yaml

from severstal.infra.config import commented_yaml, config_differences, load_config, saved_config
from severstal.infra.errors import ConfigError
from severstal.infra.schema import (
    CROP_MULTIPLE,
    SegmenterSection,
    check_against_data,
    defaults_tree,
    known_keys,
)

DEMO = "configs/demo.yaml"


@pytest.fixture(autouse=True)
def in_repository(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


def test_every_key_has_one_default_and_default_yaml_sets_nothing_else(repo_root):
    defaults = defaults_tree()
    assert defaults["data"]["height"] is None and defaults["data"]["classes"] is None  # from the data
    # no data directory here: the data keys resolve to Severstal's
    defaults["data"] |= {"height": 256, "width": 1600, "classes": ["1", "2", "3", "4"]}
    assert load_config("configs/default.yaml").raw == {**defaults, "experiment": "default"}
    assert (yaml.safe_load((repo_root / "configs" / "default.yaml").read_text()) or {}) == {}


def test_demo_config_resolves_typed_values():
    config = load_config(DEMO)
    assert config.experiment == "demo" and config.folds.k == 2
    assert config.seg.crop == (64, 128) and config.seg.decoder_filters == (64, 32, 16, 16, 8)
    assert config.inference.tta == ("none", "hflip") and config.inference.folds == "all"
    assert config.cls.balanced_sampling == "defect" and config.cls.augment.mask_dropout == 0.3
    assert config.raw["seg"]["crop"] == [64, 128]  # the saved form: plain YAML


@pytest.mark.parametrize("override, message", [
    ("seg.epochs=abc", "--set seg.epochs=abc: seg.epochs: must be an integer of at least 1, got 'abc'"),
    ("cls.batch_size=0", "--set cls.batch_size=0: cls.batch_size: must be an integer of at least 1, got 0"),
    ("seg.epoch=3", "--set seg.epoch=3: seg.epoch: unknown key; did you mean seg.epochs?"),
    ("folds.k=1", "folds.k: must be an integer of at least 2, got 1"),
    ("seg.crop=[64, 100]", "seg.crop: must be null or [height, width] with positive multiples of 32, got [64, 100]"),
    ("inference.tta=[none, rot90]", "inference.tta: must be a non-empty list, each one of none, hflip, vflip, both"),
    ("inference.tta=none,none", "each at most once"),
    ("seg.crop_non_empty=1.5", "seg.crop_non_empty: must be a number at least 0 and at most 1, got 1.5"),
    ("cls.dropout=1", "cls.dropout: must be a number at least 0 and below 1, got 1"),
    ("seg.learning_rate=0", "seg.learning_rate: must be a number above 0, got 0"),
    ("hardware.xla=yes please", "hardware.xla: must be true or false, got 'yes please'"),
    ("seg.loss=dice", "seg.loss: must be one of bce, bce_dice, focal, focal_tversky, got 'dice'"),
    ("seg.monitor=val_f1", "seg.monitor: must be val_tuned_dice, val_loss, val_dice or val_pos_dice_K"),
    ("tune.pixel_thresholds=[0.6, 0.5]", "strictly increasing"),
    ("tune.min_component_sizes=[64, 150]", "including 0"),
    ("seg.decoder_filters=[8, 8]", "seg.decoder_filters: must be a list of 5 values"),
    ("experiment=../other", "experiment: must be a name of letters, digits"),
    ("seg=3", "seg is a section: set one of its keys, e.g. seg.architecture=..."),
    ("sgm.epochs=3", "sgm.epochs: unknown key; did you mean seg.epochs?"),
    ("epochs", "--set expects section.key=value"),
])
def test_bad_overrides_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(DEMO, [override])
    assert message in str(caught.value)


def test_a_path_key_takes_the_text_as_it_is():
    config = load_config(DEMO, ["data.dir=2019", "experiment=2019", "paths.models=0.5"])
    assert config.data.dir == "2019" and config.experiment == "2019" and config.paths.models == "0.5"


@pytest.mark.parametrize("text, message", [
    ("seg:\n  epoch: 3\n", "my.yaml: seg.epoch: unknown key; did you mean seg.epochs?"),
    ("folds: 3\n", "my.yaml: folds: must be a mapping with k and seed, got 3"),
    ("data:\n  dir: 2019\n", "my.yaml: data.dir: must be a path (text), not the number 2019: quote it in YAML"),
    ("seg:\n  augment:\n    hflp: 0.5\n", "my.yaml: seg.augment.hflp: unknown key; did you mean seg.augment.hflip?"),
    ("seg:\n  augment: 0.5\n", "my.yaml: seg.augment: must be a mapping with"),
    ("sgm:\n  epochs: 3\n", "my.yaml: sgm: unknown section; did you mean seg?"),
    ("seg:\n  epochs: -2\n", "my.yaml: seg.epochs: must be an integer of at least 1, got -2"),
    ("- a\n- b\n", "must hold a mapping of sections, not list"),
    ("seg: [\n", "is not valid YAML"),
    ("inherit: nowhere.yaml\n", "nowhere.yaml does not exist"),
    ("inherit: my.yaml\n", "config inheritance loops"),
])
def test_bad_files_are_refused_naming_the_file_and_key(tmp_path, text, message):
    (tmp_path / "my.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "my.yaml")
    assert message in str(caught.value)


def test_the_message_names_the_file_that_set_the_value(tmp_path, repo_root):
    (tmp_path / "parent.yaml").write_text(f"inherit: {repo_root / 'configs' / 'demo.yaml'}\nseg:\n  epochs: 0\n")
    (tmp_path / "child.yaml").write_text("inherit: parent.yaml\ncls:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="parent.yaml: seg.epochs: must be an integer of at least 1, got 0"):
        load_config(tmp_path / "child.yaml")


def test_data_dependent_keys_are_checked_only_where_they_take_effect():
    weighted = load_config(DEMO, ["seg.loss=bce", "seg.pos_weight=[2, 2, 1]"])
    assert check_against_data(weighted, 4, "seg") == [
        "seg.pos_weight: the loss bce weighs positive pixels per class: 4 weights for this data set (or null), got 3"]
    assert check_against_data(weighted, 3, "seg") == []
    assert check_against_data(weighted, 4, "cls") == []  # the classifier does not use it
    unused = load_config(DEMO, ["seg.pos_weight=[2, 2, 1]"])  # focal_tversky: pos_weight takes no effect
    assert check_against_data(unused, 4, "seg") == []
    large = load_config(DEMO, ["seg.crop=[128, 128]"])  # 64 x 400 at the demo's scale 0.25
    assert check_against_data(large, 4, "seg") == [
        "seg.crop: 128 x 128 is larger than the scaled image 64 x 400 (data.height x data.width x seg.scale)"]
    assert check_against_data(load_config(DEMO, ["seg.monitor=val_pos_dice_5"]), 4, "seg")[0].startswith(
        "seg.monitor: val_pos_dice_5 names a class")


def test_data_and_experiment_naming():
    config = load_config(DEMO, data="/somewhere/My Steel 2024")
    assert config.experiment == "demo-My-Steel-2024" and config.data.dir == "/somewhere/My Steel 2024"
    assert config.data.folds_file == "folds/demo-My-Steel-2024_folds.csv"
    named = load_config(DEMO, experiment="trial")
    assert named.experiment == "trial" and named.data.folds_file == "folds/demo_folds.csv"
    kept = load_config(DEMO, ["data.folds_file=mine.csv"], data="elsewhere")
    assert kept.data.folds_file == "mine.csv"  # an explicit override wins over the derived name


def test_a_stage_option_is_named_in_the_message():
    with pytest.raises(ConfigError, match="^--tta rot90: inference.tta: must be"):
        load_config(DEMO, [("inference.tta=rot90", "--tta rot90: ")])


def test_saved_configs_compare_on_normal_forms_and_new_keys_take_defaults():
    config = load_config(DEMO)
    old = yaml.safe_load(config.to_yaml())
    del old["seg"]["focal_gamma"]  # a key added after the artifact was made
    old["inference"]["tta"] = "none,hflip"  # the same value in another form
    assert config_differences(old, config.raw, ["seg", "inference"]) == []
    old["seg"]["epochs"] = 3
    assert config_differences(old, config.raw, ["seg"]) == ["seg.epochs: 3 -> 18"]
    assert config_differences(old, config.raw, ["folds"]) == []  # only the keys asked for
    assert saved_config(old, "saved.yaml").seg.epochs == 3


def test_commented_yaml_lists_every_key_with_its_meaning():
    text = commented_yaml(load_config(DEMO))
    assert yaml.safe_load(text) == load_config(DEMO).raw  # valid YAML: the comments are comments
    assert "  epochs: 18  # training epochs" in text and "# the segmenter" in text
    assert all(f"  {key.rsplit('.', 1)[-1]}:" in text for key in known_keys("seg"))


def test_crop_multiple_matches_the_unet():
    assert CROP_MULTIPLE == 32 and SegmenterSection().crop == (256, 512)


def test_the_config_command_and_bad_config_exit_before_tensorflow(repo_root, tmp_path):
    code = ("import sys\nfrom severstal.cli import main\n"
            "status = main(['train', '--model', 'seg', '--fold', '0', '--config', 'configs/demo.yaml', "
            "'--set', 'seg.epochs=abc'])\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert "config file configs/demo.yaml does not exist" in result.stderr  # the cwd has no configs/
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    expected = "error: --set seg.epochs=abc: seg.epochs: must be an integer of at least 1, got 'abc'"
    assert result.stderr.strip() == expected
    shown = subprocess.run([sys.executable, "-m", "severstal", "config", "--config", "configs/demo.yaml", "--set",
                            "seg.epochs=3"], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and yaml.safe_load(shown.stdout)["seg"]["epochs"] == 3
