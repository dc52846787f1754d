"""What the measured acceptance allows in theory, and how much of it the engine achieved.

Leviathan et al. 2023 (theorem 3.8): a step that drafts k tokens costs k c + 1 target steps (c the
draft/target cost ratio) and emits tau tokens, so the speedup over plain decoding is
tau / (k c + 1). The "theory" column applies that accounting to the run's own counts: T output
tokens cost plain decoding T target forwards, and cost speculation its S target forwards plus
D drafted tokens at c each, so theory = T / (S + c D). Steps that drafted nothing (prompt lookup
without a match) count as plain steps. It is the speedup this acceptance would give if drafting
cost exactly c per token, verifying k + 1 tokens cost one decode step, and nothing else took
time. Measured over theory is the achieved fraction; what is missing went to verify forwards
wider than one token, sampling and Python overhead.

The same acceptance, read as an i.i.d. per-token rate alpha (`stats.implied_acceptance_rate`),
gives the theoretical speedup of every fixed k (`stats.theoretical_speedup`), whose best k is where
the adaptive rule should settle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.bench.cost import CostMeasurement
from server.bench.methods import Runtime, method_spec
from server.bench.report import (
    ALL_GROUPS,
    Interval,
    Summary,
    draft_token_in_run_s,
    target_step_in_run_s,
)
from server.bench.runner import Measurement, SamplingMode
from server.bench.stats import implied_acceptance_rate, theoretical_speedup

# Prompt lookup drafts by searching the text: no forward, cost ratio zero.
LOOKUP_COST_RATIO = 0.0


@dataclass(frozen=True)
class TheoryRow:
    method: str
    mode: SamplingMode
    cost_ratio: float  # c used for the theory
    cost_ratio_in_run: float | None  # drafting time per token in the run over a target step
    drafted_per_step: float  # k-bar
    tokens_per_step: float  # tau
    acceptance_per_token: float  # alpha implied by tau and k-bar
    theory: float
    # The same with the in-run drafting cost (draft sampling and catch-up forwards included).
    theory_in_run: float | None
    measured: Interval | None
    theory_by_k: tuple[float, ...]  # theory_by_k[k - 1]: fixed k at alpha and c

    @property
    def achieved_fraction(self) -> float | None:
        return self.measured.point / self.theory if self.measured is not None else None

    @property
    def best_k(self) -> int:
        return max(range(len(self.theory_by_k)), key=self.theory_by_k.__getitem__) + 1


def theory_rows(
    summaries: Sequence[Summary],
    measurements: Sequence[Measurement],
    cost: CostMeasurement | None,
    max_k: int,
) -> list[TheoryRow]:
    """A row for each engine method and mode that drafted, over all prompts."""
    rows = []
    for summary in summaries:
        if summary.group != ALL_GROUPS or summary.drafted_per_step is None:
            continue
        cost_ratio = _cost_ratio(summary.method, cost)
        if cost_ratio is None:
            continue
        rows.append(_row(summary, measurements, cost_ratio, max_k))
    return rows


def _cost_ratio(method: str, cost: CostMeasurement | None) -> float | None:
    """c for a method: measured for the draft model, zero for lookup, None for mixtures."""
    spec = method_spec(method)
    if spec.runtime is not Runtime.ENGINE:
        return None
    if spec.drafter == "ngram":
        return LOOKUP_COST_RATIO
    if spec.drafter == "model" and cost is not None:
        return cost.cost_ratio
    return None  # "combined" mixes free lookup steps and model steps in unknown proportion


def _row(
    summary: Summary, measurements: Sequence[Measurement], cost_ratio: float, max_k: int
) -> TheoryRow:
    assert summary.drafted_per_step is not None and summary.mean_acceptance_length is not None
    drafted, tau = summary.drafted_per_step, summary.mean_acceptance_length
    in_run_ratio = _in_run_ratio(measurements, summary) if cost_ratio else LOOKUP_COST_RATIO
    alpha = implied_acceptance_rate(tau, drafted)
    return TheoryRow(
        method=summary.method,
        mode=summary.mode,
        cost_ratio=cost_ratio,
        cost_ratio_in_run=in_run_ratio,
        drafted_per_step=drafted,
        tokens_per_step=tau,
        acceptance_per_token=alpha,
        theory=_theory(summary, cost_ratio),
        theory_in_run=None if in_run_ratio is None else _theory(summary, in_run_ratio),
        measured=summary.speedup,
        theory_by_k=tuple(theoretical_speedup(alpha, k, cost_ratio) for k in range(1, max_k + 1)),
    )


def _theory(summary: Summary, cost_ratio: float) -> float:
    """T / (S + c D): output tokens over the target forwards the run's steps are worth."""
    assert summary.num_target_forwards is not None and summary.num_drafted_tokens is not None
    cost_in_forwards = summary.num_target_forwards + cost_ratio * summary.num_drafted_tokens
    return summary.num_output_tokens / cost_in_forwards


def _in_run_ratio(measurements: Sequence[Measurement], summary: Summary) -> float | None:
    draft_s = draft_token_in_run_s(measurements, summary.method, summary.mode)
    target_s = target_step_in_run_s(measurements, summary.mode)
    if draft_s is None or not target_s:
        return None
    return draft_s / target_s
