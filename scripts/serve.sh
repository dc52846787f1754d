#!/usr/bin/env bash
# Main job: serve the packaged Qwen2.5-Coder pair over an OpenAI-compatible API on 127.0.0.1:8000.
# Extra arguments go to `python -m server` (see `--help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
. "$root/scripts/bootstrap.sh" models
cd "$root"
exec python -m server "$@"
