"""Kaggle credentials, error translation and the download stage, with fake clients (no network)."""

import json
import sys
import zipfile
from functools import partial
from pathlib import Path

import pytest
import requests

from severstal.core.constants import COMPETITION
from severstal.infra.errors import UserError
from severstal.kaggle import competition
from severstal.kaggle.api import credential_sources, kaggle_config_dir, translate_error
from severstal.kaggle.competition import MARKER, download_competition, verify_download
from severstal.stages import download

SECRET = "s3cr3t-key-0123456789"
KAGGLE_VARIABLES = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR",
                    "XDG_CONFIG_HOME", "KAGGLE_KERNEL_RUN_TYPE")


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An empty home directory and no Kaggle variables; returns the home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in KAGGLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(("environ", "files", "expected"), [
    ({}, {}, []),
    ({"KAGGLE_API_TOKEN": "KGAT_abc"}, {}, ["KAGGLE_API_TOKEN"]),
    ({"KAGGLE_API_TOKEN": "  "}, {}, []),
    ({"KAGGLE_API_TOKEN": "{home}/token"}, {"token": "KGAT_abc\n"}, ["KAGGLE_API_TOKEN"]),
    ({"KAGGLE_API_TOKEN": "{home}/token"}, {"token": "\n"}, []),
    ({}, {".kaggle/access_token": "KGAT_abc"}, ["~/.kaggle/access_token"]),
    ({}, {".kaggle/access_token.txt": "KGAT_abc"}, ["~/.kaggle/access_token.txt"]),
    ({}, {".kaggle/access_token": ""}, []),
    ({}, {".kaggle/kaggle.json": '{"username": "u", "key": "k"}'}, ["{home}/.kaggle/kaggle.json"]),
    ({}, {".kaggle/kaggle.json": '{"username": "u", "key": ""}'}, []),
    ({}, {".kaggle/kaggle.json": "not json"}, []),
    ({"KAGGLE_KEY": "k"}, {".kaggle/kaggle.json": '{"username": "u"}'}, ["{home}/.kaggle/kaggle.json"]),
    ({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, {}, ["KAGGLE_USERNAME/KAGGLE_KEY"]),
    ({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": ""}, {}, []),
    ({"KAGGLE_USERNAME": "u"}, {}, []),
    ({"KAGGLE_CONFIG_DIR": "{home}/elsewhere"}, {"elsewhere/kaggle.json": '{"username": "u", "key": "k"}'},
     ["{home}/elsewhere/kaggle.json"]),
    ({"KAGGLE_CONFIG_DIR": "{home}/elsewhere"}, {".kaggle/kaggle.json": '{"username": "u", "key": "k"}'}, []),
    ({}, {".config/kaggle/kaggle.json": '{"username": "u", "key": "k"}'},
     ["{home}/.config/kaggle/kaggle.json"]),
    ({"XDG_CONFIG_HOME": "{home}/xdg"}, {"xdg/kaggle/kaggle.json": '{"username": "u", "key": "k"}'},
     ["{home}/xdg/kaggle/kaggle.json"]),
    ({}, {".kaggle/credentials.json": '{"refresh_token": "r", "username": "u"}'},
     ["~/.kaggle/credentials.json (kaggle auth login)"]),
    ({}, {".kaggle/credentials.json": '{"username": "u"}'}, []),
    ({"KAGGLE_API_TOKEN": "t"}, {".kaggle/kaggle.json": '{"username": "u", "key": "k"}'},
     ["KAGGLE_API_TOKEN", "{home}/.kaggle/kaggle.json"]),
])
def test_credential_sources(tmp_path, environ, files, expected):
    for name, text in files.items():
        write(tmp_path / name, text)
    environ = {key: value.format(home=tmp_path) for key, value in environ.items()}
    assert credential_sources(environ, tmp_path) == [item.format(home=tmp_path) for item in expected]


def test_kaggle_config_dir_prefers_existing_dot_kaggle(tmp_path):
    assert kaggle_config_dir({}, tmp_path) == tmp_path / ".config" / "kaggle"
    (tmp_path / ".kaggle").mkdir()
    assert kaggle_config_dir({}, tmp_path) == tmp_path / ".kaggle"


def test_no_credentials_message_without_importing_kaggle(no_credentials, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # importing kaggle would now fail
    assert download.main(["--out", str(tmp_path / "data")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1  # one paragraph, no traceback
    for text in ("no Kaggle API credentials", "https://www.kaggle.com/settings", "~/.kaggle/kaggle.json",
                 "KAGGLE_API_TOKEN", "bash run_all.sh --demo", f"https://www.kaggle.com/c/{COMPETITION}/rules"):
        assert text in captured.err
    assert not (tmp_path / "data").exists() and not (tmp_path / ".data.download").exists()


def test_credentials_only(no_credentials, monkeypatch, capsys):
    assert download.main(["--credentials-only"]) == 1
    assert capsys.readouterr().out == "no\n"
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    assert download.main(["--credentials-only"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "yes\n" and SECRET not in captured.err


def competition_zip(path: Path, train=3, test=2, truncate=False, nested_csv=False) -> None:
    """A miniature competition archive in Kaggle's layout."""
    labels = "ImageId,ClassId,EncodedPixels\nt0.jpg,1,1 10\n"
    with zipfile.ZipFile(path, "w") as bundle:
        if nested_csv:
            inner = path.with_name("train.csv.zip")
            with zipfile.ZipFile(inner, "w") as nested:
                nested.writestr("train.csv", labels)
            bundle.write(inner, "train.csv.zip")
            inner.unlink()
        else:
            bundle.writestr("train.csv", labels)
        bundle.writestr("sample_submission.csv", "ImageId,EncodedPixels,ClassId\ns0.jpg,1 409600,0\n")
        for index in range(train):
            bundle.writestr(f"train_images/t{index}.jpg", f"train image {index}")
        for index in range(test):
            bundle.writestr(f"test_images/s{index}.jpg", f"test image {index}")
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


class FakeClient:
    """Stands in for KaggleApi: writes a competition zip, or raises ``error``."""

    def __init__(self, error=None, **zip_options):
        self.error, self.zip_options, self.calls = error, zip_options, []

    def competition_download_files(self, competition, path, quiet):
        self.calls.append((competition, path))
        print("kaggle chatter that must not reach the user")
        if self.error is not None:
            raise self.error
        competition_zip(Path(path) / f"{competition}.zip", **self.zip_options)


def http_error(status: int) -> requests.exceptions.HTTPError:
    """What kaggle 2.x (kagglesdk) raises: requests' HTTPError carrying the response."""
    response = requests.Response()
    response.status_code = status
    return requests.exceptions.HTTPError(f"{status} Client Error", response=response)


def test_download_unzips_verifies_and_then_is_a_no_op(tmp_path, capsys):
    target = tmp_path / "data" / "competition"
    client = FakeClient()
    assert download_competition(target, client, num_train=3, num_test=2) is True
    assert client.calls == [(COMPETITION, str(tmp_path / "data" / ".competition.download"))]
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "sample_submission.csv", "test_images",
                                                        "train.csv", "train_images"]
    assert json.loads((target / MARKER).read_text()) == {"competition": COMPETITION, "train_images": 3,
                                                         "test_images": 2}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["competition"]  # staging removed
    assert "kaggle chatter" not in capsys.readouterr().out
    assert download_competition(target, client, num_train=3, num_test=2) is False
    assert len(client.calls) == 1


def test_download_extracts_nested_zips(tmp_path):
    target = tmp_path / "competition"
    assert download_competition(target, FakeClient(nested_csv=True), num_train=3, num_test=2)
    assert (target / "train.csv").is_file() and not (target / "train.csv.zip").exists()


@pytest.mark.parametrize(("error", "expected"), [
    (http_error(403), f"Accept the competition rules first, signed in to your account in a browser: "
                      f"https://www.kaggle.com/c/{COMPETITION}/rules"),
    (http_error(401), "Kaggle rejected the API credentials (HTTP 401)"),
    (http_error(404), f"Kaggle does not know the competition '{COMPETITION}' (HTTP 404)"),
    (http_error(500), "Kaggle answered HTTP 500: 500 Client Error"),
    (requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'"),
     "Kaggle could not be reached (ConnectionError)"),
    (requests.exceptions.ReadTimeout("read timed out"), "Kaggle could not be reached (ReadTimeout)"),
    (ConnectionResetError("reset"), "Kaggle could not be reached (ConnectionResetError)"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (SystemExit(1), "the Kaggle client gave up on authentication"),
])
def test_download_errors_leave_nothing(tmp_path, error, expected):
    target = tmp_path / "competition"
    with pytest.raises(UserError) as raised:
        download_competition(target, FakeClient(error), num_train=3, num_test=2)
    assert str(raised.value).startswith("cannot download the competition: ")
    assert expected in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_zip_is_deleted(tmp_path):
    target = tmp_path / "competition"
    with pytest.raises(UserError, match="truncated or corrupt .* deleted. Run `severstal download` again"):
        download_competition(target, FakeClient(truncate=True), num_train=3, num_test=2)
    assert list(tmp_path.iterdir()) == []


def test_unexpected_archive_content(tmp_path):
    target = tmp_path / "competition"
    with pytest.raises(UserError, match="train_images/ holds 3 images, expected 12568; "
                                        "test_images/ holds 2 images, expected 5506"):
        download_competition(target, FakeClient())
    assert not target.exists()


def test_existing_target(tmp_path):
    target = tmp_path / "competition"
    (target / "train_images").mkdir(parents=True)
    with pytest.raises(UserError, match="exists but is not a complete copy of the competition"):
        download_competition(target, FakeClient(), num_train=3, num_test=2)
    archive = tmp_path / "by-hand.zip"
    competition_zip(archive)
    zipfile.ZipFile(archive).extractall(target)  # unzipped by hand: accepted without downloading
    client = FakeClient()
    assert download_competition(target, client, num_train=3, num_test=2) is False
    assert client.calls == [] and (target / MARKER).is_file()


def test_empty_target_directory_is_filled(tmp_path):
    target = tmp_path / "competition"
    target.mkdir()
    assert download_competition(target, FakeClient(), num_train=3, num_test=2) is True
    assert verify_download(target, 3, 2) == []


def test_verify_download(tmp_path):
    assert verify_download(tmp_path, 3, 2) == [
        "train.csv is missing", "train_images is missing", "test_images is missing",
        "sample_submission.csv is missing"]
    (tmp_path / "train_images").mkdir()
    (tmp_path / "train.csv").write_text("Image,Pixels\n")
    assert verify_download(tmp_path, 3, 2) == [
        "test_images is missing", "sample_submission.csv is missing",
        "train_images/ holds 0 images, expected 3",
        "train.csv cannot be read: unexpected columns ['Image', 'Pixels']: expected "
        "ImageId,ClassId,EncodedPixels (any order) or the 2019 layout ImageId_ClassId,EncodedPixels"]


def test_stage_with_rejected_credentials_prints_no_secret(no_credentials, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setattr(competition, "load_client", lambda action: FakeClient(http_error(403)))
    assert download.main(["--out", str(tmp_path / "data")]) == 1
    captured = capsys.readouterr()
    assert "HTTP 403" in captured.err and "Traceback" not in captured.err
    assert SECRET not in captured.out + captured.err
    assert not (tmp_path / "data").exists()


def test_stage_downloads_into_config_data_dir(tmp_path, monkeypatch, capsys, repo_root):
    config = tmp_path / "config.yaml"
    parent = repo_root / "configs" / "default.yaml"
    config.write_text(f"inherit: {parent}\ndata:\n  dir: {tmp_path / 'real'}\n")
    client = FakeClient()
    monkeypatch.setattr(download, "download_competition",
                        partial(download_competition, client=client, num_train=3, num_test=2))
    assert download.main(["--config", str(config)]) == 0
    assert capsys.readouterr().out.endswith(f"downloaded and verified {COMPETITION} in {tmp_path / 'real'}\n")
    assert download.main(["--config", str(config)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(client.calls) == 1


def test_translate_error_note():
    assert str(translate_error(http_error(400), "submit to Kaggle", "Try a notebook.")) == (
        "cannot submit to Kaggle: Kaggle answered HTTP 400: 400 Client Error. Try a notebook.")
