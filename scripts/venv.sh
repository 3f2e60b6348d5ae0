# Sourced by the other scripts: create .venv once and install the pinned CPU set plus this package.
# Set MINIDIFFUSION_VENV to use another location. pip runs only when the pins, pyproject.toml or the checkout the
# package is installed from changed since the last install (a stamp in the venv says which).
set -euo pipefail
VENV=${MINIDIFFUSION_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
_stamp="$(cat requirements-cpu.txt pyproject.toml | sha256sum | cut -d' ' -f1) $(cd src && pwd -P)"
if [ "$(cat "$VENV/.minidiffusion-installed" 2>/dev/null)" != "$_stamp" ]; then
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-cpu.txt -e ".[test]" \
            > "$VENV/.pip.log" 2>&1; then
        grep -v "^WARNING: Location" "$VENV/.pip.log" >&2
        echo "scripts/venv.sh: pip install failed (log above, also in $VENV/.pip.log)" >&2
        exit 1
    fi
    echo "$_stamp" > "$VENV/.minidiffusion-installed"
fi
unset _stamp
