#!/usr/bin/env bash
# Create .venv if missing and install the pinned requirements and the package.
# The install is skipped when requirements*.txt, pyproject.toml and this script are unchanged since
# the last successful install (their sha256 is kept in .venv/.requirements.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# uv installs the requirements (a fresh install of everything but torch: 4-5 s against pip's ~40 s);
# pip installs uv and torch first, because pip takes the CPU build of torch that lies on this kind of
# machine's disk and uv does not look there (from PyPI uv would take a multi-GB CUDA build; with
# torch==2.13.0 already installed uv installs nothing more for it). EPI_BOOTSTRAP_PIP=1, or a failing
# uv, installs everything with pip as before.
UV_PIN="uv==0.13.10"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
if [ "$want" = "$have" ]; then
  echo "bootstrap: requirements unchanged since the last install; skipping pip"
  exit 0
fi
# pip here warns about local index folders that do not exist; keep the log readable.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "bootstrap: installing pinned requirements into $VENV (first time: a minute or two)"
start=$SECONDS
export PIP_DISABLE_PIP_VERSION_CHECK=1
torch_pin=$(grep -E '^torch==' requirements.txt)
with_uv() {
  [ "${EPI_BOOTSTRAP_PIP:-0}" != 1 ] || return 1
  quiet_pip install --quiet --no-compile "$UV_PIN" "$torch_pin" || return 1
  local uv=("$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python")
  "${uv[@]}" -r requirements.txt && "${uv[@]}" --no-deps -r requirements-nodeps.txt && "${uv[@]}" --no-deps -e .
}
with_pip() {
  quiet_pip install --quiet --upgrade pip
  quiet_pip install --quiet --no-compile -r requirements.txt
  quiet_pip install --quiet --no-compile --no-deps -r requirements-nodeps.txt
  quiet_pip install --quiet --no-compile --no-deps -e .
}
if ! with_uv; then
  [ "${EPI_BOOTSTRAP_PIP:-0}" = 1 ] || echo "bootstrap: uv failed (above); installing with pip instead"
  with_pip
fi
# Neither installer byte-compiled (pip compiles one file after another); one compileall over both cores
# (-j 0) writes the .pyc files afterwards. They are needed: a process that finds no .pyc compiles what it
# imports (PYTHONDONTWRITEBYTECODE keeps it from saving them). Left out: test suites shipped inside
# packages and transformers' model families this project never builds (a module without its .pyc is
# still imported, only compiled in memory). compileall's status is ignored as pip ignores files that
# do not compile (templates, Python 2 examples shipped inside some packages).
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
skip='/(tests?|testing/_internal)/|/transformers/models/(?!(auto|gpt2|llama|bert|qwen2|roberta)/)'
"$VENV/bin/python" -m compileall -q -q -j 0 -x "$skip" "$site" >/dev/null 2>&1 || true
echo "$want" > "$VENV/.requirements.sha256"
echo "bootstrap: done in $((SECONDS - start)) s"
