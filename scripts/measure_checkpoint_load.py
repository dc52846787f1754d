"""Measure cold and warm load times and peak memory of the packaged models.

Run from the repository root:

    python -m scripts.measure_checkpoint_load --cache-dir /tmp/specserve-measure

Each load runs in a fresh Python process, so its peak resident memory is its own. "Cold" starts
from an empty cache directory (assemble the GGUF from its pip parts, dequantize, write the
safetensors cache); "warm" loads the cache that the cold run left. The operating system's page
cache is not dropped, so a warm load here reads from memory, not from disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

KIB_PER_GIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]


def load_once(name: str, cache_dir: Path, dtype_name: str) -> dict[str, object]:
    from models.checkpoint import load_checkpoint

    start_s = time.perf_counter()
    checkpoint = load_checkpoint(name, getattr(torch, dtype_name), cache_dir=cache_dir)
    load_s = time.perf_counter() - start_s
    embedding_rows = checkpoint.state_dict["model.embed_tokens.weight"].shape[0]
    return {
        "name": name,
        "load_s": round(load_s, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB, 2),
        "embedding_rows": embedding_rows,
        "tokenizer_size": len(checkpoint.tokenizer),
        "num_tensors": len(checkpoint.state_dict),
    }


def measure(name: str, cache_dir: Path, dtype_name: str, phase: str) -> None:
    command = [sys.executable, "-m", "scripts.measure_checkpoint_load", "--child", name]
    command += ["--cache-dir", str(cache_dir), "--dtype", dtype_name]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{phase:5s} {json.dumps(report)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        print(json.dumps(load_once(args.child, args.cache_dir, args.dtype)))
        return

    from models.packaged import DEFAULT_DRAFT, DEFAULT_TARGET

    shutil.rmtree(args.cache_dir, ignore_errors=True)
    for name in args.models or [DEFAULT_DRAFT, DEFAULT_TARGET]:
        measure(name, args.cache_dir, args.dtype, "cold")
        measure(name, args.cache_dir, args.dtype, "warm")


if __name__ == "__main__":
    main()
