# Shared by run_all.sh and run_tests.sh: create or reuse .venv and install what is missing.
# A stamp file records the hash of requirements.txt, pyproject.toml, the Python version and the TensorFlow
# build, so a second call is a no-op.
PYTHON=".venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONUNBUFFERED=1

# The TensorFlow build (docs/gpu.md): tensorflow[and-cuda] (CUDA and cuDNN as pip wheels) when `nvidia-smi -L`
# lists a GPU, else the plain wheel; SEVERSTAL_TENSORFLOW=gpu|cpu forces it. The version is requirements.txt's
# pin. These functions install nothing and run no Python; a missing or failing nvidia-smi is not an error
# (safe under set -euo pipefail). They read requirements.txt from the current directory (the repository root).
NVIDIA_SMI_TIMEOUT=30

tensorflow_pin() {  # prints the version requirements.txt pins for tensorflow, e.g. 2.21.0
    local line re='^[[:space:]]*tensorflow(\[[^]]*\])?[[:space:]]*==[[:space:]]*([^[:space:];#]+)'
    while IFS= read -r line || [ -n "$line" ]; do
        if [[ "$line" =~ $re ]]; then
            echo "${BASH_REMATCH[2]}"
            return 0
        fi
    done < requirements.txt
    echo "error: requirements.txt pins no tensorflow==VERSION" >&2
    return 1
}

tensorflow_choice() {  # prints "gpu REASON" or "cpu REASON"; fails on a bad SEVERSTAL_TENSORFLOW
    case "${SEVERSTAL_TENSORFLOW:-}" in
        gpu|cpu) echo "$SEVERSTAL_TENSORFLOW forced by SEVERSTAL_TENSORFLOW=$SEVERSTAL_TENSORFLOW"; return 0 ;;
        "") ;;
        *) echo "error: SEVERSTAL_TENSORFLOW must be gpu or cpu (or unset: nvidia-smi decides)," \
                "got '$SEVERSTAL_TENSORFLOW'" >&2
           return 2 ;;
    esac
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "cpu no NVIDIA GPU: nvidia-smi not found"
        return 0
    fi
    local out status=0 first line count=0
    if command -v timeout >/dev/null 2>&1; then
        out="$(timeout -k 5 "$NVIDIA_SMI_TIMEOUT" nvidia-smi -L 2>&1)" || status=$?
    else
        out="$(nvidia-smi -L 2>&1)" || status=$?
    fi
    first="${out%%$'\n'*}"
    first="${first%$'\r'}"
    if [ "$status" -ne 0 ]; then
        if [ "$status" -eq 124 ] && [ -z "$first" ]; then
            first="no answer within $NVIDIA_SMI_TIMEOUT s"
        fi
        echo "cpu no NVIDIA GPU: nvidia-smi failed: ${first:-exit status $status}"
        return 0
    fi
    while IFS= read -r line; do
        if [[ "$line" =~ ^GPU\ [0-9]+: ]]; then
            count=$((count + 1))
        fi
    done <<< "$out"
    if [ "$count" -gt 0 ]; then
        echo "gpu nvidia-smi lists $count GPU(s)"
    else
        echo "cpu no NVIDIA GPU: nvidia-smi lists none${first:+: $first}"
    fi
}

tensorflow_build() {  # prints gpu or cpu
    local choice
    choice="$(tensorflow_choice)" || return
    echo "${choice%% *}"
}

_tensorflow_build_arg() {  # _tensorflow_build_arg [BUILD]: BUILD checked, or detected when not given
    case "${1:-}" in
        gpu|cpu) echo "$1" ;;
        "") tensorflow_build ;;
        *) echo "error: the TensorFlow build is gpu or cpu, got '$1'" >&2; return 2 ;;
    esac
}

tensorflow_requirement() {  # tensorflow_requirement [BUILD]: prints the pip requirement of the build
    local build pin
    build="$(_tensorflow_build_arg "${1:-}")" || return
    pin="$(tensorflow_pin)" || return
    if [ "$build" = gpu ]; then
        echo "tensorflow[and-cuda]==$pin"
    else
        echo "tensorflow==$pin"
    fi
}

tensorflow_summary() {  # tensorflow_summary [CHOICE]: the one line ensure_environment prints after installing
    local choice="${1:-}" build requirement
    if [ -z "$choice" ]; then
        choice="$(tensorflow_choice)" || return
    fi
    build="${choice%% *}"
    requirement="$(tensorflow_requirement "$build")" || return
    if [ "$build" = gpu ]; then
        echo "TensorFlow: GPU build $requirement (${choice#* })"
    else
        echo "TensorFlow: CPU build $requirement (${choice#* })"
    fi
}

environment_stamp() {  # environment_stamp [BUILD]: prints the hash stored in .venv/.installed
    # The CPU build hashes exactly what the stamp hashed before the GPU build existed, so existing CPU
    # environments stay valid; the GPU build adds one line, so switching either way reinstalls.
    local build
    build="$(_tensorflow_build_arg "${1:-}")" || return
    (
        cat requirements.txt pyproject.toml
        python3 --version
        if [ "$build" = gpu ]; then
            echo "tensorflow build: gpu"
        fi
    ) | sha256sum | cut -d' ' -f1
}

ensure_environment() {
    local stamp=".venv/.installed" choice build want requirement
    choice="$(tensorflow_choice)" || return 1
    build="${choice%% *}"
    want="$(environment_stamp "$build")" || return 1
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PYTHON" -c "import severstal" 2>/dev/null; then
        return 0
    fi
    echo "setting up .venv (first run only: installs the pinned requirements, a few minutes)"
    if [ ! -x "$PYTHON" ]; then
        python3 -m venv .venv || { echo "error: could not create .venv (need Python 3.10+ with venv)" >&2; return 1; }
    fi
    "$PYTHON" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$PYTHON" -m pip install --quiet -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
    if [ "$build" = gpu ]; then
        requirement="$(tensorflow_requirement gpu)" || return 1
        "$PYTHON" -m pip install --quiet "$requirement" || {
            echo "error: installing $requirement failed; see the pip output above" \
                 "(SEVERSTAL_TENSORFLOW=cpu installs the CPU build; docs/gpu.md)" >&2
            return 1
        }
    fi
    "$PYTHON" -m pip install --quiet --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
    "$PYTHON" -c "import severstal.nn.tfsetup" >/dev/null 2>&1 \
        || { echo "error: installing the requirements failed; see the pip output above" >&2; return 1; }
    tensorflow_summary "$choice" || return 1
    echo "$want" > "$stamp"
}
