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
start=$SECONDS
export PIP_DISABLE_PIP_VERSION_CHECK=1
quiet_pip install --quiet --upgrade pip
# pip byte-compiles every file it installs one after another (about half of the install's CPU);
# the same .pyc files are written afterwards by one compileall over both cores (-j 0). They are
# needed: a process that finds no .pyc compiles what it imports (PYTHONDONTWRITEBYTECODE keeps it
# from saving them). compileall's status is ignored as pip ignores files that do not compile
# (templates, Python 2 examples shipped inside some packages).
quiet_pip install --quiet --no-compile -r requirements.txt
quiet_pip install --quiet --no-compile --no-deps -r requirements-nodeps.txt
quiet_pip install --quiet --no-compile --no-deps -e .
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$VENV/bin/python" -m compileall -q -q -j 0 "$site" >/dev/null 2>&1 || true
echo "$want" > "$VENV/.requirements.sha256"
echo "bootstrap: done in $((SECONDS - start)) s"
