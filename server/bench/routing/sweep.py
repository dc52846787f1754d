"""Routing policies replayed over recorded answers: no model runs, so every threshold is free.

A prompt's route depends only on its score (`route_score` of its recorded terms) and, with
escalation, on the recorded small answer's confidence; its outcome is then the recorded answer of
the tier it lands on. Latency and model time add up what the route runs: auto pays the scoring
forward, and an escalated prompt pays the small and the large run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.bench.routing.records import PromptRecord
from server.bench.stats import percentile
from server.router.escalation import ConfidenceStat
from server.router.policy import FeatureWeights, route_score
from server.router.tiers import Tier

SECONDS_PER_HOUR = 3600.0
REQUESTS_PER_COST_UNIT = 1000
# The target this evaluation reports on: keep 95% of large-only quality, answer 30% with small.
QUALITY_KEPT = 0.95
MIN_SMALL_SHARE = 0.30
LATENCY_PERCENTILE = 90.0


@dataclass(frozen=True)
class Policy:
    """One tier for everything (small, large), or auto with a threshold and maybe escalation."""

    tier: Tier
    threshold: float | None = None
    escalation: float | None = None

    def __post_init__(self) -> None:
        if (self.tier is Tier.AUTO) != (self.threshold is not None):
            raise ValueError("an auto policy needs a threshold, and only an auto policy has one")
        if self.escalation is not None and self.tier is not Tier.AUTO:
            raise ValueError("only auto policies escalate")

    @property
    def name(self) -> str:
        if self.threshold is None:
            return f"{self.tier.value}-only"
        escalation = "" if self.escalation is None else f"+esc@{self.escalation:.2f}"
        return f"auto@{self.threshold:.2f}{escalation}"


@dataclass(frozen=True)
class Served:
    """How a policy served one prompt."""

    correct: bool
    latency_s: float
    model_s: float
    routed_small: bool
    escalated: bool


def serve(
    record: PromptRecord, policy: Policy, weights: FeatureWeights, stat: ConfidenceStat
) -> Served:
    """The answer `policy` would have given to `record`'s prompt, and what it would have cost."""
    if policy.threshold is None:
        small_only = policy.tier is Tier.SMALL
        run = record.small if small_only else record.large
        return Served(run.correct, run.latency_s, run.model_s, small_only, False)
    scoring = record.scoring_s
    if route_score(record.terms, weights) >= policy.threshold:
        large = record.large
        return Served(
            large.correct, scoring + large.latency_s, scoring + large.model_s, False, False
        )
    small = record.small
    latency_s, model_s = scoring + small.latency_s, scoring + small.model_s
    if policy.escalation is None or small.confidence(stat) >= policy.escalation:
        return Served(small.correct, latency_s, model_s, True, False)
    large = record.large
    return Served(large.correct, latency_s + large.latency_s, model_s + large.model_s, True, True)


@dataclass(frozen=True)
class Outcome:
    """A policy over every record."""

    policy: Policy
    num_prompts: int
    quality: float  # fraction answered correctly (pass@1 / exact match)
    quality_by_category: dict[str, float]
    small_share: float  # routed to the small model
    answered_small_share: float  # routed there and not escalated
    escalated_share: float
    mean_latency_s: float
    p90_latency_s: float
    model_s: float  # summed over prompts
    cost_usd: float

    @property
    def cost_per_1k_usd(self) -> float:
        return self.cost_usd * REQUESTS_PER_COST_UNIT / self.num_prompts


def evaluate(
    records: Sequence[PromptRecord],
    policy: Policy,
    weights: FeatureWeights,
    stat: ConfidenceStat,
    price_per_gpu_hour: float,
) -> Outcome:
    """Replay `policy` over the records (no model runs)."""
    if not records:
        raise ValueError("no records to evaluate")
    served = [serve(record, policy, weights, stat) for record in records]
    count = len(served)
    categories = sorted({record.category for record in records})
    by_category = {
        category: _fraction(
            [s.correct for s, r in zip(served, records, strict=True) if r.category == category]
        )
        for category in categories
    }
    latencies = [s.latency_s for s in served]
    model_s = sum(s.model_s for s in served)
    return Outcome(
        policy=policy,
        num_prompts=count,
        quality=_fraction([s.correct for s in served]),
        quality_by_category=by_category,
        small_share=_fraction([s.routed_small for s in served]),
        answered_small_share=_fraction([s.routed_small and not s.escalated for s in served]),
        escalated_share=_fraction([s.escalated for s in served]),
        mean_latency_s=sum(latencies) / count,
        p90_latency_s=percentile(latencies, LATENCY_PERCENTILE),
        model_s=model_s,
        cost_usd=model_s / SECONDS_PER_HOUR * price_per_gpu_hour,
    )


def _fraction(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags)


def curve_thresholds(records: Sequence[PromptRecord], weights: FeatureWeights) -> list[float]:
    """Thresholds that realise every distinct split of the records by score, 0 and 1 included.

    Between two neighbouring scores every threshold routes the same way, so their midpoint
    stands for all of them.
    """
    scores = sorted({route_score(record.terms, weights) for record in records})
    midpoints = [(low + high) / 2 for low, high in zip(scores[:-1], scores[1:], strict=True)]
    return [0.0, *midpoints, 1.0]


def meets_target(outcome: Outcome, large_only: Outcome) -> bool:
    """>= 95% of large-only quality with >= 30% of requests answered by the small model."""
    return (
        outcome.quality >= QUALITY_KEPT * large_only.quality
        and outcome.answered_small_share >= MIN_SMALL_SHARE
    )


def best_on_target(outcomes: Sequence[Outcome], large_only: Outcome) -> Outcome | None:
    """The cheapest auto policy that meets the target; None when none does."""
    meeting = [o for o in outcomes if o.policy.tier is Tier.AUTO and meets_target(o, large_only)]
    return min(meeting, key=lambda o: (o.cost_usd, -o.quality), default=None)


@dataclass(frozen=True)
class Sweep:
    """Every policy's outcome over one set of records."""

    small_only: Outcome
    large_only: Outcome
    table: tuple[Outcome, ...]  # auto at the table's thresholds, with and without escalation
    curves: dict[str, tuple[Outcome, ...]]  # "auto" and "auto+esc@c": at every curve threshold
    oracle_small_share: float  # prompts whose small answer is as good as the large one's

    @property
    def best(self) -> Outcome | None:
        candidates = [*self.table, *(o for curve in self.curves.values() for o in curve)]
        return best_on_target(candidates, self.large_only)


def sweep(
    records: Sequence[PromptRecord],
    weights: FeatureWeights,
    thresholds: Sequence[float],
    escalations: Sequence[float],
    stat: ConfidenceStat,
    price_per_gpu_hour: float,
) -> Sweep:
    """Evaluate the fixed tiers and auto at every threshold (offline)."""

    def run(policy: Policy) -> Outcome:
        return evaluate(records, policy, weights, stat, price_per_gpu_hour)

    table = [run(Policy(Tier.AUTO, t)) for t in thresholds]
    table += [run(Policy(Tier.AUTO, t, c)) for c in escalations for t in thresholds]
    points = curve_thresholds(records, weights)
    curves = {"auto": tuple(run(Policy(Tier.AUTO, t)) for t in points)}
    for c in escalations:
        curves[f"auto+esc@{c:.2f}"] = tuple(run(Policy(Tier.AUTO, t, c)) for t in points)
    oracle = _fraction([r.small.correct or not r.large.correct for r in records])
    return Sweep(
        small_only=run(Policy(Tier.SMALL)),
        large_only=run(Policy(Tier.LARGE)),
        table=tuple(table),
        curves=curves,
        oracle_small_share=oracle,
    )
