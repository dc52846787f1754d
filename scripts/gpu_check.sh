#!/usr/bin/env bash
# On a CUDA machine (under 8 minutes on one H200): the kernel tests compiled for real, greedy
# equality on random-weight models, and target-only versus speculative timing at real sizes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
unset TRITON_INTERPRET
python -m pytest -q tests/kernels tests/models/test_transformer.py
python -m scripts.gpu_check --alphas 0.5,0.8,0.95 --k 4 --tokens 128
