# Shared by run_all.sh and run_tests.sh: create or reuse .venv and install what is missing.
# A stamp file records the hash of requirements.txt and pyproject.toml, so a second call is a no-op.
PYTHON=".venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONUNBUFFERED=1

ensure_environment() {
    local stamp=".venv/.installed" want
    want="$( (cat requirements.txt pyproject.toml; python3 --version) | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PYTHON" -c "import severstal" 2>/dev/null; then
        return 0
    fi
    echo "setting up .venv (first run only: installs the pinned requirements, a few minutes)"
    if [ ! -x "$PYTHON" ]; then
        python3 -m venv .venv || { echo "error: could not create .venv (need Python 3.10+ with venv)" >&2; return 1; }
    fi
    "$PYTHON" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$PYTHON" -m pip install --quiet -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
    "$PYTHON" -m pip install --quiet --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
    "$PYTHON" -c "import severstal.nn.tfsetup" >/dev/null 2>&1 \
        || { echo "error: installing the requirements failed; see the pip output above" >&2; return 1; }
    echo "$want" > "$stamp"
}
