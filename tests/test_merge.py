"""The merge stage on hand-made shard parts: exact joining, its ablation, and every refusal."""

import json
from pathlib import Path

import pandas as pd
import pytest

from severstal.core.ensemble import empty_rows, rows_frame, shard_ids, submission_csv
from severstal.infra.artifacts import Paths, sidecar_path
from severstal.infra.config import load_config
from severstal.infra.stamps import Stamp, images_fingerprint
from severstal.stages import merge

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
MASKS = {("b.jpg", 2): "5 10", ("e.jpg", 4): "1 3 100 2"}


def rows(image_ids):
    return [(i, c, MASKS.get((i, c), "")) for image_id in image_ids for i, c, _ in empty_rows(image_id)]


def fingerprint(names=IMAGES, thresholds="t1"):
    """A predict stamp as the shards' sidecars record it."""
    return Stamp(("inference.tta",), {"inference.tta": ["none"]},
                 {"thresholds": thresholds, "images": images_fingerprint(Path("data/test_images"), names)}).to_dict()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("config.yaml").write_text(f"inherit: {REPO_ROOT / 'configs' / 'demo.yaml'}\nexperiment: m\n"
                                   "data:\n  dir: data\n")
    Path("data/test_images").mkdir(parents=True)
    for name in IMAGES:
        Path("data/test_images", name).write_bytes(b"")  # merge reads only the names
    return load_config("config.yaml")


def write_part(config, index, count, image_ids, layout="long", print_=None, shard=None):
    path = Paths(config).shard(index, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(submission_csv(rows_frame(rows(image_ids)), layout))
    sidecar_path(path).write_text(json.dumps({"stamp": print_ or fingerprint(),
                                              "shard": shard or f"{index}/{count}"}))
    return path


def write_parts(config, count, layout="long"):
    for index in range(1, count + 1):
        write_part(config, index, count, shard_ids(IMAGES, index, count), layout)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("layout", ["long", "legacy"])
def test_merge_equals_the_single_file(workspace, capsys, count, layout):
    write_parts(workspace, count, layout)
    assert merge.main(["--config", "config.yaml"]) == 0
    assert Paths(workspace).submission.read_text() == submission_csv(rows_frame(rows(IMAGES)), layout)
    saved = json.loads(sidecar_path(Paths(workspace).submission).read_text())
    assert saved["stamp"] == fingerprint() and saved["shard"] is None
    assert f"merged {count} part(s)" in capsys.readouterr().out
    assert not (Paths(workspace).reports / "ablation.json").exists()  # the parts scored no truth


def test_merge_joins_the_ablation_pairs(workspace):
    write_parts(workspace, 2)
    for index in (1, 2):
        ids = shard_ids(IMAGES, index, 2)
        pairs = pd.DataFrame({"ImageId": [i for i in ids for _ in range(4)], "ClassId": [1, 2, 3, 4] * len(ids),
                              "true_area": 0, "empty_area": 0, "empty_dice": 1.0})
        pairs["final_area"] = [10 if (i, c) in MASKS else 0 for i, c in zip(pairs.ImageId, pairs.ClassId, strict=True)]
        pairs["final_dice"] = (pairs["final_area"] == 0).astype(float)
        path = Paths(workspace).shard_ablation(index, 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        pairs.to_csv(path, index=False)
    assert merge.main(["--config", "config.yaml"]) == 0
    document = json.loads((Paths(workspace).reports / "ablation.json").read_text())
    assert [(v["name"], v["mean_dice"]) for v in document["variants"]] == [("empty", 1.0), ("final", 0.9)]
    assert [entry["ImageId"] for entry in document["worst_images"]] == ["b.jpg", "e.jpg"]
    merged = pd.read_csv(Paths(workspace).reports / "ablation_pairs.csv")
    assert merged["ImageId"].tolist() == [i for i in IMAGES for _ in range(4)]


def test_missing_part(workspace, capsys):
    write_part(workspace, 1, 3, shard_ids(IMAGES, 1, 3))
    write_part(workspace, 3, 3, shard_ids(IMAGES, 3, 3))
    assert merge.main(["--config", "config.yaml"]) == 1
    assert "part(s) [2] of 3 are missing" in capsys.readouterr().err
    assert not Paths(workspace).submission.exists()


@pytest.mark.parametrize("case, message", [
    ("overlap", "c.jpg is in shard 1 and shard 2"),
    ("splits", "parts of different splits"),
    ("fingerprint", "shard(s) [2] were made from another config"),
    ("layouts", "mix the long and legacy layouts"),
    ("sidecar", "part-2-of-2.meta.json is missing"),
    ("shard", "was made as shard 1/2, not 2/2"),
    ("images", "data/test_images: 5 names), which differ from the 6 images"),
])
def test_refusals(workspace, capsys, case, message):
    write_part(workspace, 1, 2, ["a.jpg", "b.jpg", "c.jpg"])
    second = ["d.jpg", "e.jpg"]
    if case == "overlap":
        write_part(workspace, 2, 2, ["c.jpg", *second])
    elif case == "splits":
        write_part(workspace, 2, 2, second)
        write_part(workspace, 1, 3, ["a.jpg"])
    elif case == "fingerprint":
        write_part(workspace, 2, 2, second, print_=fingerprint(thresholds="t2"))
    elif case == "layouts":
        write_part(workspace, 2, 2, second, layout="legacy")
    elif case == "sidecar":
        sidecar_path(write_part(workspace, 2, 2, second)).unlink()
    elif case == "shard":
        write_part(workspace, 2, 2, second, shard="1/2")
    elif case == "images":
        write_part(workspace, 2, 2, second)
        Path("data/test_images/f.jpg").write_bytes(b"")
    assert merge.main(["--config", "config.yaml"]) == 1
    assert message in capsys.readouterr().err
    assert not Paths(workspace).submission.exists()


def test_no_parts(workspace, capsys):
    assert merge.main(["--config", "config.yaml"]) == 1
    assert "no shard parts" in capsys.readouterr().err
