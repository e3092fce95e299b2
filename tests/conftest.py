"""Shared fixtures. Real competition files are read from $SEVERSTAL_SAMPLE_DIR (skipped when unset)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The shared real Severstal sample (see ../shared/severstal-sample/README.md)."""
    value = os.environ.get("SEVERSTAL_SAMPLE_DIR")
    if not value:
        pytest.skip("SEVERSTAL_SAMPLE_DIR is not set: real-data test skipped")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"SEVERSTAL_SAMPLE_DIR={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
