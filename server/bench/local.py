"""A local run, start to end: prompts, methods, warm-up, cost ratio, timed runs, analysis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.bench.context import BenchContext
from server.bench.cost import CostMeasurement, context_ids, measure_cost
from server.bench.greedy import GreedyCheck, check_greedy
from server.bench.methods import Method, SkippedMethod, build_methods, parse_methods
from server.bench.options import BenchOptions
from server.bench.prompts import EncodedPrompt, encode, groups_in_order, load_prompts
from server.bench.report import Summary, acceptance_by_position, summarize
from server.bench.runner import Measurement, RunPlan, SamplingMode, run_all, sampling_params
from server.bench.theory import TheoryRow, theory_rows

# The engine's own bound on adaptive k; the theory table covers at least that far.
MIN_THEORY_K = 6
# Warm-up answers are short: a prefill and a few draft-and-verify steps touch every code path
# (first-call allocations, kernel selection) without spending minutes on a slow machine.
WARMUP_MAX_TOKENS = 8


@dataclass(frozen=True)
class LocalResult:
    options: BenchOptions
    context: dict[str, Any]
    prompts: tuple[EncodedPrompt, ...]
    dropped_prompts: tuple[str, ...]  # ids of prompts too long for the context
    methods: tuple[str, ...]
    skipped: tuple[SkippedMethod, ...]
    cost: CostMeasurement | None
    measurements: tuple[Measurement, ...]
    summaries: tuple[Summary, ...]
    theory: tuple[TheoryRow, ...]
    acceptance: dict[tuple[SamplingMode, str], list[float]]
    greedy: GreedyCheck

    @property
    def groups(self) -> list[str]:
        return groups_in_order(self.prompts)


def prepare_prompts(
    context: BenchContext, options: BenchOptions
) -> tuple[list[EncodedPrompt], list[str]]:
    """Encoded prompts that fit the engine's context with the output budget, and those dropped."""
    encoded = [
        encode(prompt, context.tokenizer)
        for prompt in load_prompts(options.datasets, options.categories, options.limits)
    ]
    room = context.engine.max_context - options.plan.max_tokens
    kept = [prompt for prompt in encoded if len(prompt.token_ids) <= room]
    dropped = [prompt.id for prompt in encoded if len(prompt.token_ids) > room]
    if not kept:
        raise ValueError("no prompt fits the context with --max-tokens; lower it or pick others")
    return kept, dropped


def warm_up(
    methods: Sequence[Method],
    prompts: Sequence[EncodedPrompt],
    plan: RunPlan,
    on_run: Callable[[str], None],
) -> None:
    """Run the first `plan.warmup` prompts through every method once, untimed, briefly."""
    max_tokens = min(plan.max_tokens, WARMUP_MAX_TOKENS)
    for prompt in prompts[: plan.warmup]:
        for mode in plan.modes:
            for method in methods:
                method.generate(list(prompt.token_ids), sampling_params(mode, prompt, max_tokens))
                on_run(f"warm-up {method.spec.name}")


def cost_context_length(prompts: Sequence[EncodedPrompt], max_tokens: int) -> int:
    """A typical mid-answer context: the median prompt plus half the output budget."""
    lengths = sorted(len(prompt.token_ids) for prompt in prompts)
    return lengths[len(lengths) // 2] + max_tokens // 2


def run_local(
    context: BenchContext,
    options: BenchOptions,
    on_run: Callable[[str], None] = lambda _: None,
    on_methods: Callable[[int], None] = lambda _: None,
) -> LocalResult:
    """Measure every method on every prompt; `on_methods` learns the total number of runs."""
    prompts, dropped = prepare_prompts(context, options)
    specs = parse_methods(options.methods, options.fixed_ks)
    longest = max(len(prompt.token_ids) for prompt in prompts)
    methods, skipped = build_methods(specs, context, longest + options.plan.max_tokens)
    on_methods(options.plan.num_runs(len(prompts), len(methods)))

    warm_up(methods, prompts, options.plan, on_run)
    cost = _measure_cost(context, prompts, options)
    measurements = run_all(methods, prompts, options.plan, on_run)
    summaries = summarize(measurements)
    max_k = max([MIN_THEORY_K, *options.fixed_ks])
    return LocalResult(
        options=options,
        context=context.describe(),
        prompts=tuple(prompts),
        dropped_prompts=tuple(dropped),
        methods=tuple(method.spec.name for method in methods),
        skipped=tuple(skipped),
        cost=cost,
        measurements=tuple(measurements),
        summaries=tuple(summaries),
        theory=tuple(theory_rows(summaries, measurements, cost, max_k)),
        acceptance=acceptance_by_position(measurements),
        greedy=check_greedy(measurements),
    )


def _measure_cost(
    context: BenchContext, prompts: Sequence[EncodedPrompt], options: BenchOptions
) -> CostMeasurement | None:
    if context.engine.draft is None:
        return None
    length = min(
        cost_context_length(prompts, options.plan.max_tokens),
        context.engine.max_context - max(options.fixed_ks, default=1) - 1,
    )
    max_verify = max([MIN_THEORY_K, *options.fixed_ks]) + 1
    tokens = context_ids(prompts[0].token_ids, length)
    return measure_cost(context.engine, tokens, max_verify, options.cost_forwards)
