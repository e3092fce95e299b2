"""scripts/env.sh chooses the TensorFlow build: tensorflow[and-cuda] when `nvidia-smi -L` lists a GPU, else the plain
wheel; SEVERSTAL_TENSORFLOW=gpu|cpu forces it, and the choice is part of the .venv stamp (docs/gpu.md).

Each test sources scripts/env.sh under `set -euo pipefail` with PATH limited to a temporary directory holding a
stand-in nvidia-smi (or none), recording stand-ins for pip and python, and links to the few tools the functions use.
Nothing is installed: the stand-ins record every call and the real .venv stamp must stay as it was.
"""

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")
SH = shutil.which("sh")
TOOLS = ("cat", "cut", "sha256sum", "timeout")  # what environment_stamp and the nvidia-smi call use
FAKE_PYTHON_VERSION = "Python 3.11.9"

pytestmark = pytest.mark.skipif(BASH is None or SH is None, reason="needs bash and sh")

TWO_GPUS = """\
printf '%s\\n' 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b1f2a3c-4d5e-6f70-8192-a3b4c5d6e7f8)'
printf '%s\\n' 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6)'
"""
DRIVER_FAILURE = """\
printf '%s\\n' "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. \
Make sure that the latest NVIDIA driver is installed and running."
printf '\\n'
exit 9
"""
NO_DEVICES = """\
printf '%s\\n' 'No devices were found'
"""
HANGS = """\
exec /bin/sleep 5
"""
DRIVER_MESSAGE = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                  "Make sure that the latest NVIDIA driver is installed and running.")


def tensorflow_pin() -> str:
    """The version requirements.txt pins for tensorflow, read independently of env.sh."""
    text = (REPO_ROOT / "requirements.txt").read_text()
    match = re.search(r"^tensorflow==(\S+)", text, flags=re.MULTILINE)
    assert match, "requirements.txt pins no tensorflow==VERSION"
    return match.group(1)


class Sandbox:
    """A PATH directory with stand-ins; `call` runs env.sh functions against it."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.log"
        self.log.touch()
        for tool in TOOLS:
            real = shutil.which(tool)
            if real:
                (self.bin / tool).symlink_to(real)
        for name in ("pip", "pip3", "python"):
            self.script(name, "")
        self.script("python3", f'[ "$1" = --version ] && echo "{FAKE_PYTHON_VERSION}"\nexit 0\n')

    def script(self, name: str, body: str) -> None:
        """An executable stand-in that records `name args` in the log, then runs `body` (sh)."""
        path = self.bin / name
        path.write_text(f'#!{SH}\nprintf "%s %s\\n" "${{0##*/}}" "$*" >> "{self.log}"\n{body}')
        path.chmod(0o755)

    def nvidia_smi(self, body: str | None) -> None:
        if body is not None:
            self.script("nvidia-smi", body)

    def without(self, tool: str) -> None:
        (self.bin / tool).unlink(missing_ok=True)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def call(self, command: str, override: str | None = None) -> subprocess.CompletedProcess:
        env = {"PATH": str(self.bin), "LC_ALL": "C"}
        if override is not None:
            env["SEVERSTAL_TENSORFLOW"] = override
        return subprocess.run([BASH, "-c", f"set -euo pipefail; source scripts/env.sh; {command}"],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=20)

    def output(self, command: str, override: str | None = None) -> str:
        result = self.call(command, override)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result.stdout.rstrip("\n")


@pytest.fixture
def sandbox(tmp_path):
    stamp = REPO_ROOT / ".venv" / ".installed"
    before = (stamp.read_bytes(), stamp.stat().st_mtime_ns) if stamp.exists() else None
    box = Sandbox(tmp_path)
    yield box
    installers = [line for line in box.calls() if line.split()[0] in ("pip", "pip3", "python", "python3")]
    assert all(line == "python3 --version" for line in installers), installers
    after = (stamp.read_bytes(), stamp.stat().st_mtime_ns) if stamp.exists() else None
    assert after == before, ".venv/.installed changed"


DETECTION = [
    pytest.param(TWO_GPUS, "gpu", "nvidia-smi lists 2 GPU(s)", id="two-gpus"),
    pytest.param(DRIVER_FAILURE, "cpu", f"no NVIDIA GPU: nvidia-smi failed: {DRIVER_MESSAGE}", id="driver-failure"),
    pytest.param(None, "cpu", "no NVIDIA GPU: nvidia-smi not found", id="no-nvidia-smi"),
    pytest.param(NO_DEVICES, "cpu", "no NVIDIA GPU: nvidia-smi lists none: No devices were found", id="no-devices"),
]


@pytest.mark.parametrize(("nvidia_smi", "build", "reason"), DETECTION)
def test_build_follows_nvidia_smi(sandbox, nvidia_smi, build, reason):
    sandbox.nvidia_smi(nvidia_smi)
    requirement = ("tensorflow[and-cuda]==" if build == "gpu" else "tensorflow==") + tensorflow_pin()
    assert sandbox.output("tensorflow_build") == build
    assert sandbox.output("tensorflow_requirement") == requirement
    assert sandbox.output("tensorflow_summary") == f"TensorFlow: {build.upper()} build {requirement} ({reason})"
    assert sandbox.calls() == (["nvidia-smi -L"] * 3 if nvidia_smi is not None else [])


def test_gpu_detection_without_timeout_on_path(sandbox):
    sandbox.nvidia_smi(TWO_GPUS)
    sandbox.without("timeout")
    assert sandbox.output("tensorflow_build") == "gpu"


def test_hanging_nvidia_smi_is_cut_short(sandbox):
    sandbox.nvidia_smi(HANGS)
    reason = "no NVIDIA GPU: nvidia-smi failed: no answer within 0.2 s"
    assert sandbox.output("NVIDIA_SMI_TIMEOUT=0.2; tensorflow_summary") == (
        f"TensorFlow: CPU build tensorflow=={tensorflow_pin()} ({reason})")


def test_pin_is_read_from_requirements(sandbox):
    assert sandbox.output("tensorflow_pin") == tensorflow_pin()
    assert sandbox.output("tensorflow_requirement cpu") == f"tensorflow=={tensorflow_pin()}"
    assert sandbox.output("tensorflow_requirement gpu") == f"tensorflow[and-cuda]=={tensorflow_pin()}"


@pytest.mark.parametrize(("override", "nvidia_smi"), [
    pytest.param("cpu", TWO_GPUS, id="cpu-on-a-gpu-machine"),
    pytest.param("gpu", None, id="gpu-without-nvidia-smi"),
    pytest.param("gpu", DRIVER_FAILURE, id="gpu-despite-driver-failure"),
])
def test_override_forces_the_build(sandbox, override, nvidia_smi):
    sandbox.nvidia_smi(nvidia_smi)
    requirement = ("tensorflow[and-cuda]==" if override == "gpu" else "tensorflow==") + tensorflow_pin()
    assert sandbox.output("tensorflow_build", override) == override
    assert sandbox.output("tensorflow_requirement", override) == requirement
    assert sandbox.output("tensorflow_summary", override) == (
        f"TensorFlow: {override.upper()} build {requirement} (forced by SEVERSTAL_TENSORFLOW={override})")
    assert sandbox.calls() == [], "the override must not run nvidia-smi"


@pytest.mark.parametrize("override", ["GPU", "auto", "cuda", "1"])
@pytest.mark.parametrize("function", ["tensorflow_build", "tensorflow_requirement", "environment_stamp"])
def test_bad_override_is_an_error(sandbox, override, function):
    sandbox.nvidia_smi(TWO_GPUS)
    result = sandbox.call(f"{function}; echo reached", override)
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"SEVERSTAL_TENSORFLOW must be gpu or cpu (or unset: nvidia-smi decides), got '{override}'" in result.stderr


def test_empty_override_means_detect(sandbox):
    sandbox.nvidia_smi(TWO_GPUS)
    assert sandbox.output("tensorflow_build", "") == "gpu"


def test_stamp_depends_on_the_build(sandbox):
    sandbox.nvidia_smi(TWO_GPUS)
    detected_gpu = sandbox.output("environment_stamp")
    forced_cpu = sandbox.output("environment_stamp", "cpu")
    assert sandbox.output("environment_stamp gpu") == detected_gpu
    assert sandbox.output("environment_stamp cpu") == forced_cpu
    assert detected_gpu != forced_cpu
    assert all(re.fullmatch(r"[0-9a-f]{64}", stamp) for stamp in (detected_gpu, forced_cpu))
    # The CPU build keeps the stamp's earlier formula, so existing CPU environments are not reinstalled.
    legacy = hashlib.sha256((REPO_ROOT / "requirements.txt").read_bytes() + (REPO_ROOT / "pyproject.toml").read_bytes()
                            + f"{FAKE_PYTHON_VERSION}\n".encode()).hexdigest()
    assert forced_cpu == legacy
    sandbox.without("nvidia-smi")
    assert sandbox.output("environment_stamp") == forced_cpu
    assert sandbox.output("environment_stamp", "gpu") == detected_gpu


def test_stamp_rejects_an_unknown_build(sandbox):
    result = sandbox.call("environment_stamp cuda")
    assert result.returncode != 0
    assert "the TensorFlow build is gpu or cpu, got 'cuda'" in result.stderr


def test_sourcing_runs_nothing(sandbox):
    sandbox.nvidia_smi(TWO_GPUS)
    assert sandbox.output("true") == ""
    assert sandbox.calls() == []
