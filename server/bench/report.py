"""From measurements to the numbers the report shows, per method, sampling mode and group.

Terms:
- tokens/s: output tokens over wall time, both summed over the group's runs (prefill included);
- speedup: that throughput over the `target` method's on the same prompts, with a paired bootstrap
  95% interval over prompts (`stats.bootstrap_ratio_ci`; repeats of a prompt are summed first);
- acceptance rate: accepted over drafted tokens; tau (mean acceptance length): tokens emitted per
  drafting step, the target's own token included; k-bar: tokens drafted per drafting step;
- draft / verify share: the engine's time in drafting and in verify forwards over the wall time;
- latency: a whole request, submission to last token; TTFT: submission to first token.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from server.bench.methods import BASELINE
from server.bench.runner import Measurement, SamplingMode
from server.bench.stats import DEFAULT_RESAMPLES, bootstrap_ratio_ci, percentile

# The group that pools every prompt.
ALL_GROUPS = "all"
LATENCY_PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float


@dataclass(frozen=True)
class Summary:
    """One method in one sampling mode over one group of prompts."""

    method: str
    mode: SamplingMode
    group: str
    num_prompts: int
    num_runs: int
    num_output_tokens: int
    wall_s: float
    speedup: Interval | None  # None for the baseline itself, or without baseline runs
    acceptance_rate: float | None  # None: the method reports no drafts
    mean_acceptance_length: float | None
    drafted_per_step: float | None
    # Target forwards (prefill included) and drafted tokens, summed; None outside our engine.
    num_target_forwards: int | None
    num_drafted_tokens: int | None
    first_token_p50_s: float
    latency_s: tuple[float, ...]  # p50, p90, p99
    draft_share: float | None
    verify_share: float | None
    peak_rss_bytes: int

    @property
    def tokens_per_s(self) -> float:
        return self.num_output_tokens / self.wall_s


@dataclass(frozen=True)
class PromptTotals:
    """One method's runs of one prompt, summed over repeats."""

    num_output_tokens: int
    wall_s: float


def prompt_totals(runs: Iterable[Measurement]) -> dict[str, PromptTotals]:
    tokens: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for run in runs:
        tokens[run.prompt_id] += run.num_output_tokens
        seconds[run.prompt_id] += run.generation.wall_s
    return {prompt_id: PromptTotals(tokens[prompt_id], seconds[prompt_id]) for prompt_id in tokens}


def paired_speedup(
    runs: Sequence[Measurement], baseline_runs: Sequence[Measurement], n_resamples: int
) -> Interval | None:
    """Throughput of `runs` over `baseline_runs` on the prompts both have, with its interval."""
    mine, theirs = prompt_totals(runs), prompt_totals(baseline_runs)
    shared = [prompt_id for prompt_id in mine if prompt_id in theirs]
    if not shared:
        return None
    point, low, high = bootstrap_ratio_ci(
        [mine[p].num_output_tokens for p in shared],
        [mine[p].wall_s for p in shared],
        [theirs[p].num_output_tokens for p in shared],
        [theirs[p].wall_s for p in shared],
        n_resamples=n_resamples,
    )
    return Interval(point, low, high)


def summarize(
    measurements: Sequence[Measurement], n_resamples: int = DEFAULT_RESAMPLES
) -> list[Summary]:
    """Summaries of every (mode, method, group), groups in prompt order and then `all`."""
    cells = _cells(measurements)
    summaries = []
    for (mode, method, group), runs in cells.items():
        baseline = cells.get((mode, BASELINE, group), [])
        speedup = None
        if method != BASELINE and baseline:
            speedup = paired_speedup(runs, baseline, n_resamples)
        summaries.append(_summary(method, mode, group, runs, speedup))
    return summaries


def _cells(
    measurements: Sequence[Measurement],
) -> dict[tuple[SamplingMode, str, str], list[Measurement]]:
    cells: dict[tuple[SamplingMode, str, str], list[Measurement]] = defaultdict(list)
    for run in measurements:
        cells[(run.mode, run.method, run.group)].append(run)
    for run in measurements:
        cells[(run.mode, run.method, ALL_GROUPS)].append(run)
    return dict(cells)


def _summary(
    method: str,
    mode: SamplingMode,
    group: str,
    runs: Sequence[Measurement],
    speedup: Interval | None,
) -> Summary:
    wall_s = sum(run.generation.wall_s for run in runs)
    latencies = [run.generation.wall_s for run in runs]
    drafts = [run.generation.draft for run in runs if run.generation.draft is not None]
    num_drafted = sum(draft.num_draft_tokens for draft in drafts)
    num_accepted = sum(draft.num_accepted_tokens for draft in drafts)
    num_steps = sum(draft.num_drafts for draft in drafts)
    speculative = bool(drafts) and num_steps > 0
    return Summary(
        method=method,
        mode=mode,
        group=group,
        num_prompts=len({run.prompt_id for run in runs}),
        num_runs=len(runs),
        num_output_tokens=sum(run.num_output_tokens for run in runs),
        wall_s=wall_s,
        speedup=speedup,
        acceptance_rate=num_accepted / num_drafted if speculative else None,
        mean_acceptance_length=1 + num_accepted / num_steps if speculative else None,
        drafted_per_step=num_drafted / num_steps if speculative else None,
        num_target_forwards=sum(draft.num_steps for draft in drafts) if drafts else None,
        num_drafted_tokens=num_drafted if drafts else None,
        first_token_p50_s=percentile([run.generation.first_token_s for run in runs], 50.0),
        latency_s=tuple(percentile(latencies, q) for q in LATENCY_PERCENTILES),
        draft_share=sum(d.draft_time_s for d in drafts) / wall_s if drafts else None,
        verify_share=sum(d.verify_time_s for d in drafts) / wall_s if drafts else None,
        peak_rss_bytes=max(run.peak_rss_bytes for run in runs),
    )


def acceptance_by_position(
    measurements: Sequence[Measurement],
) -> dict[tuple[SamplingMode, str], list[float]]:
    """Per (mode, method): the fraction of draft tokens at position i that the target accepted."""
    accepted: dict[tuple[SamplingMode, str], list[int]] = {}
    drafted: dict[tuple[SamplingMode, str], list[int]] = {}
    for run in measurements:
        draft = run.generation.draft
        if draft is None or not draft.drafted_per_position:
            continue
        key = (run.mode, run.method)
        _add_into(accepted.setdefault(key, []), draft.accepted_per_position)
        _add_into(drafted.setdefault(key, []), draft.drafted_per_position)
    return {
        key: [a / d if d else 0.0 for a, d in zip(accepted[key], drafted[key], strict=True)]
        for key in drafted
    }


def _add_into(totals: list[int], counts: Sequence[int]) -> None:
    totals += [0] * (len(counts) - len(totals))
    for position, count in enumerate(counts):
        totals[position] += count


def target_step_in_run_s(measurements: Sequence[Measurement], mode: SamplingMode) -> float | None:
    """The baseline's mean decode step during the run: verify time over its decode steps.

    The engine counts the prefill as a step too, hence one step less per request.
    """
    runs = [run for run in measurements if run.method == BASELINE and run.mode == mode]
    drafts = [run.generation.draft for run in runs if run.generation.draft is not None]
    num_decode_steps = sum(max(draft.num_steps - 1, 0) for draft in drafts)
    if not num_decode_steps:
        return None
    return sum(draft.verify_time_s for draft in drafts) / num_decode_steps


def draft_token_in_run_s(
    measurements: Sequence[Measurement], method: str, mode: SamplingMode
) -> float | None:
    """A method's drafting time per drafted token during the run (forwards plus their sampling)."""
    drafts = [
        run.generation.draft
        for run in measurements
        if run.method == method and run.mode == mode and run.generation.draft is not None
    ]
    num_drafted = sum(draft.num_draft_tokens for draft in drafts)
    if not num_drafted:
        return None
    return sum(draft.draft_time_s for draft in drafts) / num_drafted
