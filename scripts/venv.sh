# Sourced by the other scripts: create .venv once and install the pinned CPU set plus this package.
# Set MINIDIFFUSION_VENV to use another location. Re-running is cheap: pip finds everything installed.
set -euo pipefail
VENV=${MINIDIFFUSION_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-cpu.txt -e ".[test]" 2>&1 \
    | grep -v "^WARNING: Location" || true
