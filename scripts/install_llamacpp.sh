#!/usr/bin/env bash
# Builds llama-cpp-python (the bench's `llamacpp` peer) from source into ./.venv.
# Its AMX code path crashed on multi-token batches on the reference CPU, so AMX is compiled out;
# the AVX-512 paths stay. Takes several minutes on two cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
. "$root/scripts/bootstrap.sh" models,dev
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
# The version range is the `llamacpp` extra's, in pyproject.toml.
pip install --no-cache-dir "llama-cpp-python>=0.3"
