"""The report stage on hand-made files: the step table, its agreement with the submission, clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from severstal.core.constants import HEIGHT, WIDTH
from severstal.core.ensemble import AblationAccumulator, add_scored_variant, rows_frame, submission_csv
from severstal.core.labels import masks_for, rle_lookup
from severstal.core.metric import score_pairs
from severstal.infra.artifacts import Paths
from severstal.infra.config import load_config
from severstal.infra.tables import read_table, write_ablation
from severstal.stages import report

REPO_ROOT = Path(__file__).resolve().parents[1]
TRUTH = "ImageId,ClassId,EncodedPixels\na.jpg,1,3 4\n"
SUBMISSION = [("a.jpg", 1, "1 4"), ("a.jpg", 2, ""), ("a.jpg", 3, ""), ("a.jpg", 4, ""),
              ("b.jpg", 1, ""), ("b.jpg", 2, ""), ("b.jpg", 3, ""), ("b.jpg", 4, "100 20")]
# pairs: a.jpg 0.5 1 1 1, b.jpg 1 1 1 0 -> 6.5 / 8; all empty: a.jpg 0 1 1 1, b.jpg 1 1 1 1 -> 7 / 8


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working directory with a config whose data dir holds test_labels.csv, and a submission."""
    monkeypatch.chdir(tmp_path)
    Path("config.yaml").write_text(f"inherit: {REPO_ROOT / 'configs' / 'demo.yaml'}\nexperiment: rep\n"
                                   "data:\n  dir: data\n")
    Path("data").mkdir()
    Path("data/test_labels.csv").write_text(TRUTH)
    config = load_config("config.yaml")
    Paths(config).submission.parent.mkdir(parents=True)
    Paths(config).submission.write_text(submission_csv(rows_frame(SUBMISSION)))
    return config


def make_ablation(config):
    """ablation.json for the workspace's submission, from masks (empty and gate) plus the scored file."""
    truth = read_table("data/test_labels.csv")
    lookup, predicted = rle_lookup(truth), rle_lookup(rows_frame(SUBMISSION))
    accumulator = AblationAccumulator(("empty", "gate"))
    for image_id in ("a.jpg", "b.jpg"):
        accumulator.add(image_id, masks_for(lookup.get(image_id, {})), {
            "empty": np.zeros((HEIGHT, WIDTH, 4), np.uint8), "gate": masks_for(predicted.get(image_id, {}))})
    pairs = add_scored_variant(accumulator.pairs(), score_pairs(rows_frame(SUBMISSION), truth))
    return write_ablation(Paths(config), pairs, Paths(config).submission)


def table_rows(text):
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| step")]


def test_report_prints_the_steps_and_ends_with_the_score(workspace, capsys):
    make_ablation(workspace)
    assert report.main(["--config", "config.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "mean_dice 0.812500"
    assert table_rows(out) == [
        ["all empty", "0.875000", "", "0.500000", "1.000000", "1.000000", "1.000000"],
        ["+ tuned classifier gate", "0.812500", "-0.062500", "0.750000", "1.000000", "1.000000", "0.500000"],
        ["final tuned (the submission)", "0.812500", "+0.000000", "0.750000", "1.000000", "1.000000", "0.500000"],
    ]
    saved = (Paths(workspace).reports / "score_table.md").read_text()
    assert table_rows(saved) == table_rows(out)
    document = json.loads((Paths(workspace).reports / "ablation.json").read_text())
    assert [v["name"] for v in document["variants"]] == ["empty", "gate", "final"]
    assert document["worst_images"] == [{"ImageId": "b.jpg", "dice": 0.75}, {"ImageId": "a.jpg", "dice": 0.875}]
    assert document["best_images"] == []  # both informative images are among the 10 worst


def test_report_without_ablation_shows_the_submission_and_all_empty_rows(workspace, capsys):
    assert report.main(["--config", "config.yaml"]) == 0
    out = capsys.readouterr().out
    assert "No ablation report" in out
    assert table_rows(out) == [
        ["all empty", "0.875000", "", "0.500000", "1.000000", "1.000000", "1.000000"],  # from the truth alone
        ["final tuned (the submission)", "0.812500", "-0.062500", "0.750000", "1.000000", "1.000000", "0.500000"]]


def test_report_refuses_an_ablation_of_another_submission(workspace, capsys):
    make_ablation(workspace)
    Paths(workspace).submission.write_text(submission_csv(rows_frame([*SUBMISSION[:7], ("b.jpg", 4, "")])))
    assert report.main(["--config", "config.yaml"]) == 1
    assert "another version" in capsys.readouterr().err


def test_report_refuses_a_final_row_that_differs(workspace, capsys):
    path = make_ablation(workspace)
    document = json.loads(path.read_text())
    document["variants"][-1]["class_dice"]["4"] = 0.75
    path.write_text(json.dumps(document))
    assert report.main(["--config", "config.yaml"]) == 1
    assert "differs from the submission's score (0.812500) in class_4" in capsys.readouterr().err


def test_report_needs_the_truth(workspace, capsys):
    Path("data/test_labels.csv").unlink()
    assert report.main(["--config", "config.yaml"]) == 1
    err = capsys.readouterr().err
    assert "no test truth" in err and "test_labels.csv" in err
    assert not (Paths(workspace).reports / "score_table.md").exists()


def test_report_needs_the_submission(workspace, capsys):
    Paths(workspace).submission.unlink()
    assert report.main(["--config", "config.yaml"]) == 1
    assert "run `severstal predict" in capsys.readouterr().err
