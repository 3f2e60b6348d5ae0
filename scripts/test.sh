#!/usr/bin/env bash
# The test suite on CPU (a few minutes). Extra arguments go to pytest, e.g. `-m slow` for the long tests.
cd "$(dirname "$0")/.."
source scripts/venv.sh
"$VENV/bin/ruff" check src tests bench scripts
"$VENV/bin/python" -m pytest "$@"
