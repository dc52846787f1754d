"""Time to first token with and without the prefix cache, on requests sharing a long system prompt.

Loads the packaged target/draft pair once and builds two engines over the same weights: one with
the prefix cache, one without. Each request (the shared system prompt, then a short question of its
own, rendered by the chat template) runs on both engines, alternating which goes first, so that
load from other work on the machine falls on both alike. Requests run one wave at a time
(`--concurrency` requests together), and each engine sees the same waves in the same order.

    python -m scripts.bench_prefix_cache                  # 16 requests, ~1,000-token system
    python -m scripts.bench_prefix_cache --concurrency 4 --json results.json

Prints TTFT p50/p90, total wall time per mode and the tokens the target actually prefilled.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from models.packaged import DEFAULT_DRAFT, DEFAULT_TARGET
from server.bench.stats import percentile
from server.cli import BYTES_PER_GIB, TORCH_DTYPES
from server.engine.engine import LLMEngine
from server.engine.loading import LoadedPair, build_engine, load_pair
from server.engine.params import DrafterKind, EngineConfig, SamplingParams
from server.engine.sequence import Sequence

# Enough for one uncached wave of 16 requests of ~1,100 tokens in both pools, in bf16.
DEFAULT_KV_CACHE_GIB = 0.75
DEFAULT_NUM_REQUESTS = 16
DEFAULT_SYSTEM_TOKENS = 1000
DEFAULT_MAX_TOKENS = 16
TARGET_RATIO = 0.25  # what the cache should reach: TTFT p50 at most this fraction of uncached

SYSTEM_INTRO = (
    "You are a senior software engineer reviewing code for a team that ships a Python web "
    "service. Follow every guideline below when you answer.\n"
)
# Cycled and numbered to build a system prompt of the wanted length.
GUIDELINES = (
    "Prefer clear names over comments that explain unclear names.",
    "Keep functions short; split them at the steps of the work they do.",
    "Type every public function, and keep the types in the signature only.",
    "Validate inputs at the edges of the system and trust them inside it.",
    "Log with lazy arguments, never with string formatting done up front.",
    "Write a test for every bug before fixing it, and keep the test after.",
    "Do not catch broad exceptions unless the loop must survive a failing item.",
    "Name constants and give the reason for their value beside them.",
    "Make configuration objects immutable and validate them when created.",
    "Explain the why in comments; the code already says what it does.",
    "Prefer the standard library when it does the job well enough.",
    "Keep I/O out of pure functions so they stay easy to test.",
)
QUESTIONS = (
    "How do I reverse a list in place?",
    "What does `yield from` do?",
    "Write a function that checks whether a string is a palindrome.",
    "When should I use a dataclass instead of a dict?",
    "How can I read a large file line by line?",
    "Explain the difference between `is` and `==`.",
    "Write a function that flattens a nested list.",
    "How do I time a block of code precisely?",
    "What is a context manager for?",
    "How do I sort a list of dicts by one key?",
    "Write a function that counts words in a text.",
    "What does `functools.lru_cache` do?",
    "How do I merge two dicts?",
    "Write a generator of Fibonacci numbers.",
    "How can I make a class iterable?",
    "What is the difference between a tuple and a list?",
)


@dataclass(frozen=True)
class Timing:
    mode: str
    request: int
    ttft_s: float
    latency_s: float
    num_cached_tokens: int
    output_ids: list[int]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--draft", default=DEFAULT_DRAFT)
    parser.add_argument("--no-draft", action="store_true", help="target only, no speculation")
    parser.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="bf16")
    parser.add_argument("--num-requests", type=int, default=DEFAULT_NUM_REQUESTS)
    parser.add_argument("--system-tokens", type=int, default=DEFAULT_SYSTEM_TOKENS)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--concurrency", type=int, default=1, help="requests per wave")
    parser.add_argument("--kv-cache-gb", type=float, default=DEFAULT_KV_CACHE_GIB)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the timings here")
    return parser.parse_args()


def system_prompt(tokenizer, num_tokens: int) -> str:
    """Numbered guidelines appended until the system message alone reaches `num_tokens`."""
    text, index = SYSTEM_INTRO, 0
    while len(tokenizer.encode(text, add_special_tokens=False)) < num_tokens:
        text += f"{index + 1}. {GUIDELINES[index % len(GUIDELINES)]}\n"
        index += 1
    return text


def render(tokenizer, system: str, question: str) -> list[int]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return [int(token) for token in ids]


def run_wave(engine: LLMEngine, mode: str, wave: list[tuple[int, list[int]]], sampling) -> list:
    """Submit a wave together and step until it finishes; time each request."""
    seqs: list[tuple[int, Sequence]] = [
        (index, engine.add_request(f"{mode}-{index}", prompt, sampling)) for index, prompt in wave
    ]
    finished_s: dict[str, float] = {}
    while engine.has_unfinished():
        for output in engine.step():
            if output.finished:
                finished_s[output.request_id] = time.perf_counter()
    timings = []
    for index, seq in seqs:
        assert seq.first_token_s is not None
        timings.append(
            Timing(
                mode=mode,
                request=index,
                ttft_s=seq.first_token_s - seq.arrival_s,
                latency_s=finished_s[seq.request_id] - seq.arrival_s,
                num_cached_tokens=seq.num_cached_prompt_tokens,
                output_ids=seq.output_ids,
            )
        )
    return timings


def warm_up(engines: dict[str, LLMEngine], tokenizer, sampling: SamplingParams) -> None:
    """One short unrelated request per engine, so first-call costs land outside the timings."""
    prompt = render(tokenizer, "You are terse.", "Say hello.")
    for mode, engine in engines.items():
        run_wave(engine, f"warmup-{mode}", [(0, prompt)], sampling)


def summarize(timings: list[Timing], modes: list[str], wall_s: dict[str, float]) -> dict:
    summary = {}
    for mode in modes:
        mine = [t for t in timings if t.mode == mode]
        ttfts = [t.ttft_s for t in mine]
        summary[mode] = {
            "ttft_p50_s": percentile(ttfts, 50),
            "ttft_p90_s": percentile(ttfts, 90),
            "total_s": wall_s[mode],
            "mean_cached_tokens": sum(t.num_cached_tokens for t in mine) / len(mine),
        }
    return summary


def print_table(summary: dict, prefilled: dict[str, int], num_prompt_tokens: int) -> None:
    header = f"{'mode':<10}{'TTFT p50 s':>12}{'TTFT p90 s':>12}{'total s':>10}"
    header += f"{'cached tok':>12}{'prefilled tok':>15}"
    print(header)
    print("-" * len(header))
    for mode, row in summary.items():
        print(
            f"{mode:<10}{row['ttft_p50_s']:>12.3f}{row['ttft_p90_s']:>12.3f}"
            f"{row['total_s']:>10.1f}{row['mean_cached_tokens']:>12.0f}{prefilled[mode]:>15d}"
        )
    ratio = summary["cache"]["ttft_p50_s"] / summary["no-cache"]["ttft_p50_s"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"\nTTFT p50 ratio cache / no-cache: {ratio:.3f} ({verdict} the {TARGET_RATIO} target)")
    print(f"prompt tokens over all requests: {num_prompt_tokens}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    draft = None if args.no_draft else args.draft
    device = torch.device("cpu")
    print(f"loading {args.target} + {draft or 'no draft'} ({args.dtype}, cpu) ...")
    pair: LoadedPair = load_pair(args.target, draft, TORCH_DTYPES[args.dtype], device)
    base = EngineConfig(
        kv_cache_bytes=int(args.kv_cache_gb * BYTES_PER_GIB),
        drafter=DrafterKind.MODEL if draft else DrafterKind.NONE,
    )
    engines = {
        "cache": build_engine(pair, base),
        "no-cache": build_engine(pair, replace(base, enable_prefix_cache=False)),
    }
    tokenizer = pair.tokenizer
    system = system_prompt(tokenizer, args.system_tokens)
    prompts = [
        render(tokenizer, system, QUESTIONS[i % len(QUESTIONS)]) for i in range(args.num_requests)
    ]
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    lengths = [len(prompt) for prompt in prompts]
    print(
        f"{args.num_requests} requests of {min(lengths)}-{max(lengths)} prompt tokens, "
        f"waves of {args.concurrency}, max_tokens {args.max_tokens}"
    )
    warm_up(engines, tokenizer, sampling)

    timings: list[Timing] = []
    wall_s = dict.fromkeys(engines, 0.0)
    prefilled_before = {mode: e.totals.num_prompt_tokens for mode, e in engines.items()}
    waves = [
        list(enumerate(prompts))[start : start + args.concurrency]
        for start in range(0, len(prompts), args.concurrency)
    ]
    for number, wave in enumerate(waves):
        order = list(engines) if number % 2 == 0 else list(reversed(engines))
        for mode in order:
            started = time.perf_counter()
            timings += run_wave(engines[mode], mode, wave, sampling)
            wall_s[mode] += time.perf_counter() - started
        print(f"wave {number + 1}/{len(waves)} done", flush=True)

    # Prompt tokens the target computed (cached ones are not).
    prefilled = {m: e.totals.num_prompt_tokens - prefilled_before[m] for m, e in engines.items()}
    summary = summarize(timings, list(engines), wall_s)
    print()
    print_table(summary, prefilled, sum(map(len, prompts)))
    mismatches = _mismatches(timings)
    print(f"greedy outputs differing between modes: {mismatches} of {args.num_requests}")
    if args.json is not None:
        record = {"args": vars(args) | {"json": str(args.json)}, "summary": summary}
        record["timings"] = [asdict(t) for t in timings]
        args.json.write_text(json.dumps(record, indent=2))


def _mismatches(timings: list[Timing]) -> int:
    by_request: dict[int, dict[str, list[int]]] = {}
    for timing in timings:
        by_request.setdefault(timing.request, {})[timing.mode] = timing.output_ids
    return sum(outputs["cache"] != outputs["no-cache"] for outputs in by_request.values())


if __name__ == "__main__":
    main()
