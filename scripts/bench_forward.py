"""Forward latency of our decoder beside transformers', with load time, RSS and read bandwidth.

For each packaged model in bf16: one forward of 1, 2, 4, 8 and 16 new tokens over 512 cached
tokens, ours and transformers' on the same weights, interleaved in one run (median of repeats);
the load time from the cache; the process's peak RSS; and this machine's streaming-read bandwidth,
which bounds a decode step (every weight is read once per step).

    python -m scripts.bench_forward [--repeats 5] [--context 512]
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time

import torch
import transformers

from models.checkpoint import DEFAULT_DRAFT, DEFAULT_TARGET, load_checkpoint
from models.packaged import PACKAGED_MODELS, converted_directory, default_cache_dir
from models.transformer import Transformer, build_model
from server.engine.model_runner import ForwardItem, ModelRunner

NEW_TOKENS = (1, 2, 4, 8, 16)
BANDWIDTH_BYTES = 1 << 30  # large enough to defeat the caches
BLOCK_SIZE = 16
KV_BYTES = 256 << 20
FIRST_TOKEN_ID = 1000  # ordinary text tokens in the Qwen2.5 vocabulary


def read_bandwidth_gbs(repeats: int) -> float:
    """Streaming read bandwidth in GB/s: summing a 1 GiB float32 tensor on all torch threads.

    A plain float32 sum is vectorized and bound by memory; a bf16 sum with a float32 accumulator
    takes a slow path here (1.2 GB/s measured), which would understate the machine.
    """
    data = torch.ones(BANDWIDTH_BYTES // 4, dtype=torch.float32)
    data.sum()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - started)
    return BANDWIDTH_BYTES / statistics.median(times) / 1e9


def weight_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.nbytes
    return total


def time_ours(model: Transformer, context: int, new: int, repeats: int) -> float:
    runner = ModelRunner(model, KV_BYTES, BLOCK_SIZE, torch.device("cpu"))
    table = runner.new_table()
    runner.forward([ForwardItem(table, list(range(FIRST_TOKEN_ID, FIRST_TOKEN_ID + context)), 1)])
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        runner.forward([ForwardItem(table, list(range(FIRST_TOKEN_ID, FIRST_TOKEN_ID + new)), new)])
        times.append(time.perf_counter() - started)
        table.truncate(context, runner.allocator)
    return statistics.median(times[1:])


def time_transformers(model, context: int, new: int, repeats: int) -> float:
    prompt = torch.arange(FIRST_TOKEN_ID, FIRST_TOKEN_ID + context)[None]
    with torch.no_grad():
        cache = model(prompt, use_cache=True).past_key_values
        times = []
        for _ in range(repeats + 1):
            step = torch.arange(FIRST_TOKEN_ID, FIRST_TOKEN_ID + new)[None]
            started = time.perf_counter()
            model(step, past_key_values=cache, use_cache=True, logits_to_keep=new)
            times.append(time.perf_counter() - started)
            cache.crop(context)
    return statistics.median(times[1:])


def bench_model(name: str, context: int, repeats: int) -> None:
    started = time.perf_counter()
    checkpoint = load_checkpoint(name, torch.bfloat16)
    cpu = torch.device("cpu")
    ours = build_model(checkpoint.config, checkpoint.state_dict, torch.bfloat16, cpu)
    del checkpoint
    load_s = time.perf_counter() - started
    directory = converted_directory(PACKAGED_MODELS[name], default_cache_dir(), torch.bfloat16)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    theirs.eval()
    bytes_read = weight_bytes(ours)

    print(f"\n{name}: load {load_s:.1f} s, weights {bytes_read / 1e9:.2f} GB")
    print(f"{'new tokens':>10} {'ours ms':>9} {'hf ms':>9} {'ours/hf':>8} {'ours GB/s':>10}")
    one_token_ms = None
    for new in NEW_TOKENS:
        ours_s = time_ours(ours, context, new, repeats)
        theirs_s = time_transformers(theirs, context, new, repeats)
        one_token_ms = one_token_ms or ours_s * 1e3
        print(
            f"{new:>10} {ours_s * 1e3:>9.1f} {theirs_s * 1e3:>9.1f} {ours_s / theirs_s:>8.2f} "
            f"{bytes_read / ours_s / 1e9:>10.1f}   ({ours_s * 1e3 / one_token_ms:.2f}x one token)"
        )
    del ours, theirs
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--context", type=int, default=512)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"streaming read bandwidth: {read_bandwidth_gbs(args.repeats):.1f} GB/s")
    for name in (DEFAULT_DRAFT, DEFAULT_TARGET):
        bench_model(name, args.context, args.repeats)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\npeak RSS of this process: {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
