#!/usr/bin/env bash
# The test command: installs the project into .venv if needed, lints, then runs every test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow" -x`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
ruff check captioning pipelines tests benchmarks deploy scripts
ruff format --check captioning pipelines tests benchmarks deploy scripts
# One worker per core, each taking whole files (module fixtures stay in one process): most
# tests wait on real subprocesses, so this halves the run on 2 cores.
python -m pytest -p no:cacheprovider --durations=15 -n auto --dist loadfile "$@"
