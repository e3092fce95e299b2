"""Every benchmark script still runs: its imports and options resolve (``--help``, nothing measured)."""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SCRIPTS = sorted(path.name for path in (REPO_ROOT / "bench").glob("bench_*.py"))


def test_the_benchmarks_are_found():
    assert {"bench_pipeline.py", "bench_rle.py", "bench_score.py", "bench_tune.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_the_threshold_benchmark_runs_at_a_small_scale():
    result = subprocess.run([sys.executable, "bench/bench_tune.py", "--images", "300", "--folds", "2", "--repeat", "1",
                             "--map-images", "1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "300 images, 2 folds" in result.stdout and "held-out" in result.stdout
