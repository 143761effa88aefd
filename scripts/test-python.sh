#!/usr/bin/env bash
# Runs the Python shim's tests with Debian's python3 (the dependable route in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d python/tests ]; then
  echo "python: no Python package in this tree yet (python/tests absent); nothing to run"
  exit 0
fi
PYTHON=${PYTHON:-/usr/bin/python3}
PYTHONPATH="$PWD/python/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest -q python/tests
