"""Scale-out: scripts/train_parallel.sh (one fold per GPU at a time) and MirroredStrategy on two CPU devices."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from severstal.cli import main as severstal

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_parallel.sh"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

# Stands in for `severstal train` in the scheduling tests: records its GPU, arguments and start/end
# times, sleeps, and fails for the fold named in FAIL_FOLD.
FAKE_TRAIN = """#!/usr/bin/env bash
fold="$5"
echo "gpu=$CUDA_VISIBLE_DEVICES fold=$fold args=$*"
echo "$CUDA_VISIBLE_DEVICES $fold start $(date +%s.%N)" >> "$RECORD"
sleep 0.6
echo "$CUDA_VISIBLE_DEVICES $fold end $(date +%s.%N)" >> "$RECORD"
if [ "$fold" = "${FAIL_FOLD:-none}" ]; then echo "fold $fold: out of memory" >&2; exit 3; fi
"""


def run_parallel(tmp_path: Path, *arguments: str, fail_fold: str = "none") -> subprocess.CompletedProcess:
    fake = tmp_path / "fake-train.sh"
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    environment = {**os.environ, "PYTHON": sys.executable, "SEVERSTAL_COMMAND": str(fake), "POLL_SECONDS": "0.05",
                   "RECORD": str(tmp_path / "record.txt"), "FAIL_FOLD": fail_fold}
    return subprocess.run(["bash", str(SCRIPT), *arguments], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=60)


def intervals(record: Path) -> dict[str, list[tuple[float, float, str]]]:
    """``{gpu: [(start, end, fold)]}`` from the fake trainer's record."""
    events: dict[tuple[str, str], dict[str, float]] = {}
    for line in record.read_text().splitlines():
        gpu, fold, what, when = line.split()
        events.setdefault((gpu, fold), {})[what] = float(when)
    result: dict[str, list[tuple[float, float, str]]] = {}
    for (gpu, fold), times in events.items():
        result.setdefault(gpu, []).append((times["start"], times["end"], fold))
    return {gpu: sorted(spans) for gpu, spans in result.items()}


def test_every_fold_runs_once_with_one_fold_per_gpu_at_a_time(tmp_path):
    result = run_parallel(tmp_path, "0,1", "seg", "--config", str(DEMO_CONFIG), "--set", "folds.k=3", "--force")
    assert result.returncode == 0, result.stderr
    spans = intervals(tmp_path / "record.txt")
    assert set(spans) == {"0", "1"}  # both GPUs were used
    assert sorted(fold for gpu in spans.values() for _, _, fold in gpu) == ["0", "1", "2"]
    for gpu_spans in spans.values():  # never two folds on one GPU at once
        for (_, end, _), (start, _, _) in zip(gpu_spans, gpu_spans[1:], strict=False):
            assert start >= end
    for fold in range(3):
        log = (tmp_path / "logs" / "demo" / f"seg-fold{fold}.log").read_text()
        assert f"fold={fold} args=train --model seg --fold {fold} --config {DEMO_CONFIG} --set folds.k=3 --force" in log
    assert "all 3 seg folds finished" in result.stdout


def test_a_failing_fold_is_named_with_its_log_and_the_others_still_run(tmp_path):
    result = run_parallel(tmp_path, "0", "cls", "--config", str(DEMO_CONFIG), "--set", "folds.k=3", fail_fold="1")
    assert result.returncode == 1
    assert "1 of 3 cls fold(s) failed: 1" in result.stderr
    assert "fold 1: logs/demo/cls-fold1.log" in result.stderr
    assert "fold 1: out of memory" in result.stderr  # the log's last lines are shown
    spans = intervals(tmp_path / "record.txt")
    assert [fold for _, _, fold in spans["0"]] == ["0", "1", "2"]  # one GPU: strictly one after another


def test_experiment_name_follows_the_options(tmp_path):
    result = run_parallel(tmp_path, "3", "seg", "--config", str(DEMO_CONFIG), "--set", "folds.k=2",
                          "--experiment", "trial")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "logs" / "trial").iterdir()) == ["seg-fold0.log", "seg-fold1.log"]
    assert "gpu=3 fold=0" in (tmp_path / "logs" / "trial" / "seg-fold0.log").read_text()


def test_termination_stops_the_running_folds(tmp_path):
    fake = tmp_path / "fake-train.sh"
    fake.write_text('#!/usr/bin/env bash\necho $$ >> "$RECORD"\nexec sleep 60\n')
    fake.chmod(0o755)
    record = tmp_path / "pids.txt"
    environment = {**os.environ, "PYTHON": sys.executable, "SEVERSTAL_COMMAND": str(fake), "POLL_SECONDS": "0.05",
                   "RECORD": str(record)}
    process = subprocess.Popen(["bash", str(SCRIPT), "0,1", "seg", "--config", str(DEMO_CONFIG)], cwd=tmp_path,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while (not record.exists() or len(record.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(pid) for pid in record.read_text().split()]
    assert len(pids) == 2  # both GPUs busy
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted; running folds were stopped" in error
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("arguments, message", [
    (("0,x", "seg"), "GPUS must be a comma-separated list"),
    (("0,0", "seg"), "lists a GPU twice"),
    (("0", "unet"), "MODEL must be cls or seg"),
    (("0", "seg", "--fold", "1"), "--fold is set by train_parallel.sh"),
    (("0",), "scripts/train_parallel.sh GPUS MODEL [stage options...]"),
])
def test_bad_arguments_exit_2(tmp_path, arguments, message):
    result = run_parallel(tmp_path, *arguments)
    assert result.returncode == 2
    assert message in (result.stderr + result.stdout)
    assert not (tmp_path / "record.txt").exists()


def test_a_bad_config_stops_before_any_fold(tmp_path):
    result = run_parallel(tmp_path, "0", "seg", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "missing.yaml does not exist" in result.stderr
    assert not (tmp_path / "record.txt").exists()


# ----------------------------------------------------------------------------- MirroredStrategy

TINY_CONFIG = f"""
inherit: {DEMO_CONFIG}
demo: {{train: 16, test: 2, seed: 0}}
folds: {{k: 2}}
hardware: {{distribute: true}}
seg: {{scale: 0.125, crop: [32, 96], batch_size: 8, epochs: 1, decoder_filters: [16, 8, 8, 4, 4]}}
"""

# Two logical CPU devices must be configured before TensorFlow initialises, so this runs in its own process.
TWO_DEVICE_TRAINING = textwrap.dedent("""
    import sys
    from severstal.nn.tfsetup import tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from severstal.cli import main

    sys.exit(main(["train", "--model", "seg", "--fold", "0", "--config", "configs/tiny.yaml"]))
""")


@pytest.mark.slow
def test_distribute_trains_under_a_mirrored_strategy_with_two_replicas(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text(TINY_CONFIG)
    assert severstal(["demo-data", "--config", "configs/tiny.yaml"]) == 0
    assert severstal(["folds", "--config", "configs/tiny.yaml"]) == 0
    result = subprocess.run([sys.executable, "-c", TWO_DEVICE_TRAINING], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "MirroredStrategy over 2" in output
    fold_dir = tmp_path / "models" / "tiny" / "seg" / "fold0"
    assert (fold_dir / "best.weights.h5").is_file() and (fold_dir / "training.json").is_file()
