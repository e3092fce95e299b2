#!/usr/bin/env bash
# Create or reuse .venv, install the pinned requirements and the package, then run the tests.
# Usage: bash run_tests.sh [pytest arguments]   (test files run in parallel, one worker per CPU core:
#        pytest-xdist's --dist loadfile keeps each file's tests and fixtures in one worker; -n 0 runs serially)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
ensure_environment
"$PYTHON" -m ruff check src tests bench
"$PYTHON" -m pytest -q -n auto --dist loadfile "$@"
