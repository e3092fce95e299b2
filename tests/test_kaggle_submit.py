"""The kaggle-submit stage with fake clients (no network)."""

from pathlib import Path

import pandas as pd
import pytest
import requests

from severstal.core.constants import COMPETITION
from severstal.infra.errors import UserError
from severstal.kaggle import competition
from severstal.kaggle.competition import submit_file
from severstal.stages import kaggle_submit

NAMES = ["a.jpg", "b.jpg", "c.jpg"]


class Answer:
    """Like kagglesdk's ApiCreateSubmissionResponse."""

    def __init__(self, message):
        self.message = message


class FakeClient:
    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.calls = answer, error, []

    def competition_submit(self, file_name, message, competition):
        self.calls.append((file_name, message, competition))
        print("upload chatter")
        if self.error is not None:
            raise self.error
        return self.answer


def http_error(status: int) -> requests.exceptions.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.exceptions.HTTPError(f"{status} Client Error", response=response)


def test_submit_file_returns_kaggles_answer(tmp_path, capsys):
    client = FakeClient(Answer("Successfully submitted to Severstal: Steel Defect Detection"))
    path = tmp_path / "submission.csv"
    answer = submit_file(path, "fold ensemble", client)
    assert answer == "Successfully submitted to Severstal: Steel Defect Detection"
    assert client.calls == [(str(path), "fold ensemble", COMPETITION)]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("client", "message", "expected"), [
    (FakeClient(Answer("Could not submit to competition")), "m",
     "uploading .* failed .* run the same command again"),
    (FakeClient(error=http_error(403)), "m", f"HTTP 403.*https://www.kaggle.com/c/{COMPETITION}/rules"),
    (FakeClient(error=http_error(400)), "m",
     "HTTP 400: 400 Client Error. If Kaggle says this competition accepts only notebook "
     ".* `severstal bundle`"),
    (FakeClient(error=requests.exceptions.ConnectionError("no route")), "m", "Kaggle could not be reached"),
    (FakeClient(Answer("never")), "  ", "give a submission description with --message"),
])
def test_submit_file_errors(tmp_path, client, message, expected):
    with pytest.raises(UserError, match=expected):
        submit_file(tmp_path / "submission.csv", message, client)


def data_dir(root: Path, images: bool = True) -> Path:
    root.mkdir()
    if images:
        (root / "test_images").mkdir()
        for name in NAMES:
            (root / "test_images" / name).write_bytes(b"")
    else:
        pd.DataFrame({"ImageId": NAMES, "EncodedPixels": "1 409600", "ClassId": 0}).to_csv(
            root / "sample_submission.csv", index=False)
    return root


def arguments(repo_root: Path, root: Path, *extra: str) -> list[str]:
    return ["--config", str(repo_root / "configs" / "demo.yaml"), "--data", str(root), *extra]


@pytest.mark.parametrize("images", [True, False])
def test_stage_validates_then_submits(tmp_path, monkeypatch, capsys, repo_root, images):
    root = data_dir(tmp_path / "data", images)
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"ImageId": NAMES, "EncodedPixels": ["1 5", "", ""], "ClassId": [2, 1, 1]}).to_csv(
        submission, index=False)
    client = FakeClient(Answer("Successfully submitted"))
    monkeypatch.setattr(competition, "load_client", lambda action: client)
    assert kaggle_submit.main(arguments(repo_root, root, "--file", str(submission), "-m", "first try")) == 0
    out = capsys.readouterr().out
    assert out.endswith("Kaggle: Successfully submitted\n")
    assert "3 rows, 3 images, 1 non-empty masks" in out
    assert client.calls == [(str(submission), "first try", COMPETITION)]


def test_stage_refuses_an_invalid_file(tmp_path, monkeypatch, capsys, repo_root):
    root = data_dir(tmp_path / "data")
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"ImageId": NAMES[:2], "EncodedPixels": ["", ""], "ClassId": [1, 9]}).to_csv(
        submission, index=False)
    monkeypatch.setattr(competition, "load_client", pytest.fail)
    assert kaggle_submit.main(arguments(repo_root, root, "--file", str(submission), "-m", "x")) == 1
    err = capsys.readouterr().err
    assert "1 of 3 test images have no row: c.jpg" in err
    assert "line 3: ClassId '9' is not one of 0-4" in err
    assert f"error: {submission} is not a valid submission" in err and "so it was not submitted" in err


def test_stage_default_file_and_missing_test_list(tmp_path, capsys, repo_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = data_dir(tmp_path / "data")
    assert kaggle_submit.main(arguments(repo_root, root, "-m", "x")) == 1
    assert "submission submissions/demo-data/submission.csv does not exist" in capsys.readouterr().err
    assert kaggle_submit.main(arguments(repo_root, tmp_path, "-m", "x")) == 1
    assert "has neither test_images/ nor sample_submission.csv" in capsys.readouterr().err


def test_stage_without_credentials(tmp_path, monkeypatch, capsys, repo_root):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    root = data_dir(tmp_path / "data")
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"ImageId": NAMES, "EncodedPixels": "", "ClassId": 1}).to_csv(submission, index=False)
    assert kaggle_submit.main(arguments(repo_root, root, "--file", str(submission), "-m", "x")) == 1
    assert "error: cannot submit to Kaggle: no Kaggle API credentials found" in capsys.readouterr().err
