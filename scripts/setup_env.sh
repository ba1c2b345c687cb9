#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras into it.
# Sourced by the demo and test scripts, so a fresh machine needs nothing else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CAPTIONING_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import captioning, pytest" 2>/dev/null; then
  echo "setting up $VENV (tensorflow, apache-beam, keras, ...; about 1-2 minutes)" >&2
  python3 -m venv "$VENV"
  log="$(mktemp)"
  if ! { "$VENV/bin/pip" install --upgrade pip && "$VENV/bin/pip" install -e "$ROOT[dev]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "installation failed (full log: $log)" >&2
    exit 1
  fi
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
