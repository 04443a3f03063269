#!/usr/bin/env bash
# Create .venv if missing and install the pinned requirements and the package.
# The install is skipped when requirements*.txt and pyproject.toml are unchanged since the
# last successful install (their sha256 is kept in .venv/.requirements.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
if [ "$want" = "$have" ]; then
  echo "bootstrap: requirements unchanged since the last install; skipping pip"
  exit 0
fi
# pip here warns about local index folders that do not exist; keep the log readable.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "bootstrap: installing pinned requirements into $VENV (first time: a few minutes)"
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -r requirements.txt
quiet_pip install --quiet --no-deps -r requirements-nodeps.txt
quiet_pip install --quiet --no-deps -e .
echo "$want" > "$VENV/.requirements.sha256"
echo "bootstrap: done"
