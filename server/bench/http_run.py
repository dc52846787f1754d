"""Measuring a running server over HTTP: bounded concurrent streaming clients on loopback.

For each concurrency level, every prompt (in every sampling mode) is sent by that many clients at
once; the level's phase ends when the last answer has arrived. With `--compare-speculation` each
level runs two phases, speculation on and off, alternating which goes first from repeat to
repeat; the batch a request shares then matches its setting, as it would on a server configured
that way. Speedup is the paired per-prompt throughput ratio of on over off.

The greedy check holds at concurrency 1 only: there each request runs alone, so speculation on and
off must give the same text; in a batch, rounding may differ with batch composition, so
differences at higher levels are reported as information.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from server.bench.datasets import Prompt
from server.bench.http_client import HttpResponse, request_for, stream
from server.bench.options import BenchOptions
from server.bench.prompts import EncodedPrompt, load_prompts
from server.bench.report import Interval
from server.bench.runner import SAMPLING_TEMPERATURE, SamplingMode
from server.bench.stats import DEFAULT_RESAMPLES, bootstrap_ratio_ci, percentile
from server.bench.tables import MISSING, Table, interval, number, percent

EXIT_OK = 0
EXIT_FAILED = 1
# Greedy on/off must agree where requests run alone.
EXACT_CONCURRENCY = 1
LATENCY_PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class HttpRecord:
    prompt_id: str
    group: str
    mode: SamplingMode
    concurrency: int
    speculation: bool | None  # None: the server's default
    repeat: int
    response: HttpResponse


@dataclass(frozen=True)
class Phase:
    """Every prompt sent once, in one mode and speculation setting, by `concurrency` clients."""

    concurrency: int
    speculation: bool | None
    mode: SamplingMode
    repeat: int
    wall_s: float


@dataclass(frozen=True)
class HttpSummary:
    concurrency: int
    speculation: bool | None
    mode: SamplingMode
    num_requests: int
    num_errors: int
    throughput_tokens_per_s: float  # all output tokens of the phases over their wall time
    request_tokens_per_s_p50: float | None
    first_token_s: tuple[float, ...] | None  # p50, p90, p99
    latency_s: tuple[float, ...] | None
    acceptance_rate: float | None
    speedup: Interval | None  # on over off, same prompts


def _unencoded(prompt: Prompt) -> EncodedPrompt:
    """The prompt as the runner's type; over HTTP the server tokenizes, so no ids are needed."""
    return EncodedPrompt(prompt, ())


def run_phases(
    base_url: str,
    prompts: Sequence[EncodedPrompt],
    options: BenchOptions,
    on_request: Callable[[], None] = lambda: None,
) -> tuple[list[HttpRecord], list[Phase]]:
    """Every concurrency level, repeat, mode and speculation setting, one phase each."""
    records: list[HttpRecord] = []
    phases: list[Phase] = []
    for level in options.concurrency:
        for repeat in range(options.plan.repeats):
            settings: list[bool | None] = [None]
            if options.compare_speculation:
                settings = [True, False] if repeat % 2 == 0 else [False, True]
            for mode in options.plan.modes:
                for speculation in settings:
                    phase = Phase(level, speculation, mode, repeat, wall_s=0.0)
                    found, wall_s = _run_phase(base_url, prompts, options, phase, on_request)
                    records += found
                    phases.append(replace(phase, wall_s=wall_s))
    return records, phases


def _run_phase(
    base_url: str,
    prompts: Sequence[EncodedPrompt],
    options: BenchOptions,
    phase: Phase,
    on_request: Callable[[], None],
) -> tuple[list[HttpRecord], float]:
    """Send every prompt through `phase.concurrency` clients; returns the records and wall time."""

    def send(prompt: EncodedPrompt) -> HttpRecord:
        response = stream(base_url, *_request(prompt, phase.mode, options, phase.speculation))
        on_request()
        return HttpRecord(
            prompt.id,
            prompt.group,
            phase.mode,
            phase.concurrency,
            phase.speculation,
            phase.repeat,
            response,
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=phase.concurrency) as pool:
        records = list(pool.map(send, prompts))
    return records, time.perf_counter() - started


def _request(
    prompt: EncodedPrompt, mode: SamplingMode, options: BenchOptions, speculation: bool | None
) -> tuple[str, dict[str, Any]]:
    greedy = mode is SamplingMode.GREEDY
    return request_for(
        prompt.prompt,
        options.plan.max_tokens,
        0.0 if greedy else SAMPLING_TEMPERATURE,
        None if greedy else prompt.seed,
        speculation,
    )


SettingKey = tuple[int, bool | None, SamplingMode]


def summarize_http(records: Sequence[HttpRecord], phases: Sequence[Phase]) -> list[HttpSummary]:
    """One summary per (concurrency, speculation, mode), in the order they ran."""
    grouped: dict[SettingKey, list[HttpRecord]] = {}
    for record in records:
        key = (record.concurrency, record.speculation, record.mode)
        grouped.setdefault(key, []).append(record)
    wall_s: dict[SettingKey, float] = {}
    for phase in phases:
        key = (phase.concurrency, phase.speculation, phase.mode)
        wall_s[key] = wall_s.get(key, 0.0) + phase.wall_s

    summaries = []
    for key, runs in grouped.items():
        level, speculation, mode = key
        off = grouped.get((level, False, mode), [])
        summaries.append(_summary(key, runs, wall_s[key], off if speculation is True else []))
    return summaries


def _summary(
    key: SettingKey, runs: Sequence[HttpRecord], wall_s: float, off: Sequence[HttpRecord]
) -> HttpSummary:
    level, speculation, mode = key
    ok = [r.response for r in runs if r.response.ok]
    return HttpSummary(
        concurrency=level,
        speculation=speculation,
        mode=mode,
        num_requests=len(runs),
        num_errors=len(runs) - len(ok),
        throughput_tokens_per_s=sum(r.num_output_tokens for r in ok) / wall_s,
        request_tokens_per_s_p50=_p50([r.num_output_tokens / r.latency_s for r in ok]),
        first_token_s=_percentiles([r.first_token_s for r in ok if r.first_token_s is not None]),
        latency_s=_percentiles([r.latency_s for r in ok]),
        acceptance_rate=_acceptance(ok),
        speedup=_speedup(runs, off) if off else None,
    )


def _p50(values: list[float]) -> float | None:
    return percentile(values, 50.0) if values else None


def _percentiles(values: list[float]) -> tuple[float, ...] | None:
    return tuple(percentile(values, q) for q in LATENCY_PERCENTILES) if values else None


def _acceptance(responses: Sequence[HttpResponse]) -> float | None:
    blocks = [r.speculative for r in responses if r.speculative]
    drafted = sum(int(block.get("drafted_tokens", 0)) for block in blocks)
    accepted = sum(int(block.get("accepted_tokens", 0)) for block in blocks)
    return accepted / drafted if drafted else None


def _speedup(on: Sequence[HttpRecord], off: Sequence[HttpRecord]) -> Interval | None:
    """Per-prompt throughput (tokens over latency, repeats summed) of on over off, paired."""

    def totals(records: Sequence[HttpRecord]) -> dict[str, tuple[int, float]]:
        sums: dict[str, tuple[int, float]] = {}
        for r in records:
            if r.response.ok and r.response.num_output_tokens:
                tokens, seconds = sums.get(r.prompt_id, (0, 0.0))
                sums[r.prompt_id] = (
                    tokens + r.response.num_output_tokens,
                    seconds + r.response.latency_s,
                )
        return sums

    mine, theirs = totals(on), totals(off)
    shared = [p for p in mine if p in theirs]
    if not shared:
        return None
    point, low, high = bootstrap_ratio_ci(
        [mine[p][0] for p in shared],
        [mine[p][1] for p in shared],
        [theirs[p][0] for p in shared],
        [theirs[p][1] for p in shared],
        n_resamples=DEFAULT_RESAMPLES,
    )
    return Interval(point, low, high)


@dataclass(frozen=True)
class TextDifference:
    prompt_id: str
    concurrency: int
    repeat: int
    exact: bool  # at concurrency 1 a difference fails the run


def greedy_differences(records: Sequence[HttpRecord]) -> list[TextDifference]:
    """Greedy requests whose text differs between speculation on and off."""
    texts: dict[tuple[str, int, int, bool | None], str] = {}
    for r in records:
        if r.mode is SamplingMode.GREEDY and r.response.ok:
            texts[(r.prompt_id, r.concurrency, r.repeat, r.speculation)] = r.response.text
    found = []
    for (prompt_id, level, repeat, speculation), text in texts.items():
        other = texts.get((prompt_id, level, repeat, False))
        if speculation is True and other is not None and other != text:
            found.append(TextDifference(prompt_id, level, repeat, level == EXACT_CONCURRENCY))
    return found


def http_table(summaries: Sequence[HttpSummary]) -> Table:
    headers = (
        "concurrency",
        "speculation",
        "mode",
        "requests",
        "errors",
        "throughput tok/s",
        "request tok/s p50",
        "TTFT p50/p90/p99 s",
        "latency p50/p90/p99 s",
        "accept",
        "speedup on/off [95% CI]",
    )
    rows = tuple(
        (
            str(s.concurrency),
            {True: "on", False: "off", None: "default"}[s.speculation],
            s.mode.value,
            str(s.num_requests),
            str(s.num_errors),
            number(s.throughput_tokens_per_s),
            number(s.request_tokens_per_s_p50),
            _slashed(s.first_token_s),
            _slashed(s.latency_s),
            percent(s.acceptance_rate),
            interval(s.speedup),
        )
        for s in summaries
    )
    return Table("server over HTTP", headers, rows)


def _slashed(values: tuple[float, ...] | None) -> str:
    return MISSING if values is None else "/".join(f"{v:.2f}" for v in values)


def run_server_bench(options: BenchOptions, out_dir: Path, command: list[str]) -> int:
    """The `--server` mode of the command line: measure, print, write, check."""
    from tqdm import tqdm

    from server.bench.http_output import write_http

    assert options.server is not None
    prompts = [
        _unencoded(p) for p in load_prompts(options.datasets, options.categories, options.limits)
    ]
    settings = 2 if options.compare_speculation else 1
    total = len(prompts) * len(options.plan.modes) * options.plan.repeats * settings
    total *= len(options.concurrency)
    with tqdm(total=total, desc="requests", file=sys.stderr, dynamic_ncols=True) as bar:
        records, phases = run_phases(options.server, prompts, options, lambda: bar.update())
    summaries = summarize_http(records, phases)
    differences = greedy_differences(records)
    print(http_table(summaries).text())
    for path in write_http(out_dir, options, command, records, phases, summaries, differences):
        print(f"wrote {path}")
    errors = sum(s.num_errors for s in summaries)
    failed = [d for d in differences if d.exact]
    for difference in differences:
        kind = "MISMATCH" if difference.exact else "differs (batched, information)"
        print(f"greedy text {kind}: {difference.prompt_id} at concurrency {difference.concurrency}")
    if errors:
        print(f"{errors} requests failed; see results.json")
    return EXIT_FAILED if failed or errors else EXIT_OK


def record_document(record: HttpRecord) -> dict[str, Any]:
    from server.bench.output import jsonable

    return jsonable(record)
