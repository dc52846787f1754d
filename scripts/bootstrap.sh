#!/usr/bin/env bash
# Creates ./.venv (once) and installs the project with the given extras, e.g. `models,dev`.
# Sourced by serve.sh and test.sh, so a fresh machine with only Python and pip needs nothing else.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-models}"
venv="${SPECSERVE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

stamp="$venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  pip install -q --upgrade pip >&2
  if ! python -c "import torch" 2>/dev/null; then
    # A pinned CPU-capable build: an unpinned `torch` may pull several GB of CUDA wheels.
    pip install -q "${SPECSERVE_TORCH:-torch==2.13.0}" >&2
  fi
  pip install -q -e "$root[$extras]" >&2
  touch "$stamp"
fi
