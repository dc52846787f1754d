"""The report's arithmetic on synthetic timings whose answers are known exactly."""

from __future__ import annotations

import pytest

from server.bench.cost import CostMeasurement
from server.bench.greedy import check_greedy, first_difference
from server.bench.methods import DraftCounts, Generation, TargetCheck
from server.bench.report import (
    ALL_GROUPS,
    Summary,
    acceptance_by_position,
    summarize,
    target_step_in_run_s,
)
from server.bench.runner import Measurement, SamplingMode
from server.bench.stats import (
    expected_tokens_per_step,
    implied_acceptance_rate,
    theoretical_speedup,
)
from server.bench.tables import overview_table, theory_table
from server.bench.theory import theory_rows

GREEDY = SamplingMode.GREEDY
# Few resamples: these tests check exact cases, where every resample gives the same ratio.
RESAMPLES = 200
COST = CostMeasurement(
    context_tokens=100,
    num_forwards=3,
    target_step_s=0.4,
    draft_step_s=0.1,  # c = 0.25
    verify_s=(0.4, 0.42, 0.44, 0.46, 0.48),
)


def run(
    method: str,
    prompt_id: str,
    wall_s: float,
    token_ids: tuple[int, ...] = (1, 2, 3, 4),
    group: str = "code",
    draft: DraftCounts | None = None,
    first_token_s: float = 0.1,
) -> Measurement:
    generation = Generation(token_ids, wall_s, first_token_s, draft)
    return Measurement(method, prompt_id, group, GREEDY, 0, 10, generation, peak_rss_bytes=1 << 20)


def counts(
    num_steps: int,
    drafted_per_step: int,
    accepted: tuple[int, ...],
    draft_time_s: float = 0.0,
    verify_time_s: float = 0.0,
) -> DraftCounts:
    """Counters of a request with one prefill step, then one drafting step per `accepted` entry."""
    num_drafts = len(accepted)
    drafted_positions = (num_drafts,) * drafted_per_step
    accepted_positions = tuple(
        sum(a > position for a in accepted) for position in range(drafted_per_step)
    )
    return DraftCounts(
        num_steps=num_steps,
        num_drafts=num_drafts,
        num_draft_tokens=drafted_per_step * num_drafts,
        num_accepted_tokens=sum(accepted),
        accepted_per_position=accepted_positions,
        drafted_per_position=drafted_positions,
        draft_time_s=draft_time_s,
        verify_time_s=verify_time_s,
    )


def find(summaries: list[Summary], method: str, group: str = ALL_GROUPS) -> Summary:
    return next(s for s in summaries if (s.method, s.group) == (method, group))


def test_half_the_time_on_every_prompt_is_a_speedup_of_exactly_two():
    measurements = []
    for index, seconds in enumerate([1.0, 3.0, 2.0, 5.0]):
        group = "code" if index < 2 else "chat"
        measurements.append(run("target", f"p{index}", seconds, group=group))
        measurements.append(run("spec-k4", f"p{index}", seconds / 2, group=group))
    summaries = summarize(measurements, n_resamples=RESAMPLES)

    for group in ("code", "chat", ALL_GROUPS):
        speedup = find(summaries, "spec-k4", group).speedup
        assert speedup is not None
        assert (speedup.point, speedup.low, speedup.high) == pytest.approx((2.0, 2.0, 2.0))
    assert find(summaries, "target").speedup is None
    assert find(summaries, "target").tokens_per_s == pytest.approx(16 / 11.0)
    assert find(summaries, "spec-k4").tokens_per_s == pytest.approx(16 / 5.5)


def test_speedup_is_a_ratio_of_aggregate_throughputs_weighted_by_tokens():
    long_answer, short_answer = tuple(range(100)), tuple(range(10))
    measurements = [
        run("target", "long", 10.0, long_answer),
        run("target", "short", 1.0, short_answer),
        run("ngram", "long", 5.0, long_answer),
        run("ngram", "short", 1.0, short_answer),
    ]
    speedup = find(summarize(measurements, n_resamples=RESAMPLES), "ngram").speedup
    # (110 tokens / 6 s) / (110 tokens / 11 s)
    assert speedup is not None and speedup.point == pytest.approx(11 / 6)
    assert speedup.low <= speedup.point <= speedup.high


def test_latency_percentiles_and_time_to_first_token():
    measurements = [
        run("target", f"p{i}", float(seconds), first_token_s=seconds / 10)
        for i, seconds in enumerate(range(1, 102))
    ]
    summary = find(summarize(measurements, n_resamples=RESAMPLES), "target")
    assert summary.latency_s == pytest.approx((51.0, 91.0, 100.0))
    assert summary.first_token_p50_s == pytest.approx(5.1)


def test_theory_and_achieved_fraction_from_known_counts():
    # 10 drafting steps of k = 4 with 2 accepted each, after the prefill step: tau = 3, and
    # 31 output tokens (1 from the prefill, 3 per step) for 11 target forwards and 40 drafts.
    # Drafting took 0.1 s per token and the target's decode steps 0.4 s each: c in run = 0.25.
    draft = counts(num_steps=11, drafted_per_step=4, accepted=(2,) * 10, draft_time_s=4.0)
    plain = counts(num_steps=31, drafted_per_step=0, accepted=(), verify_time_s=30 * 0.4)
    tokens = tuple(range(31))
    measurements = [
        run("target", "p0", 31 * 0.4, tokens, draft=plain),
        run("spec-k4", "p0", 31 * 0.4 / 1.2, tokens, draft=draft),  # measured speedup 1.2
    ]
    summaries = summarize(measurements, n_resamples=RESAMPLES)
    summary = find(summaries, "spec-k4")
    assert summary.acceptance_rate == pytest.approx(0.5)
    assert summary.mean_acceptance_length == pytest.approx(3.0)
    assert summary.drafted_per_step == pytest.approx(4.0)

    (row,) = theory_rows(summaries, measurements, COST, max_k=6)
    assert row.cost_ratio == pytest.approx(0.25)
    assert row.theory == pytest.approx(31 / (11 + 0.25 * 40))
    assert row.cost_ratio_in_run == pytest.approx(0.25)
    assert row.theory_in_run == pytest.approx(row.theory)
    assert row.achieved_fraction == pytest.approx(1.2 / (31 / 21))
    assert expected_tokens_per_step(row.acceptance_per_token, 4) == pytest.approx(3.0)
    assert row.theory_by_k[3] == pytest.approx(
        theoretical_speedup(row.acceptance_per_token, 4, 0.25)
    )
    assert len(row.theory_by_k) == 6 and row.best_k == 1 + row.theory_by_k.index(
        max(row.theory_by_k)
    )


def test_prompt_lookup_costs_nothing_in_theory_and_combined_has_no_theory():
    draft = counts(num_steps=5, drafted_per_step=2, accepted=(2, 1, 0))
    measurements = [
        run("target", "p0", 2.0),
        run("ngram", "p0", 1.0, draft=draft),
        run("combined", "p0", 1.0, draft=draft),
    ]
    rows = theory_rows(summarize(measurements, n_resamples=RESAMPLES), measurements, COST, 6)
    (row,) = rows
    assert (row.method, row.cost_ratio) == ("ngram", 0.0)
    assert row.theory == pytest.approx(4 / 5)  # 4 tokens over 5 target forwards


def test_implied_acceptance_rate_inverts_the_expected_tokens_per_step():
    for alpha in (0.0, 0.3, 0.7, 0.95):
        for k in (1, 4, 6):
            tau = expected_tokens_per_step(alpha, k)
            assert implied_acceptance_rate(tau, k) == pytest.approx(alpha, abs=1e-9)
    assert implied_acceptance_rate(5.0, 4.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        implied_acceptance_rate(6.0, 4.0)
    with pytest.raises(ValueError):
        implied_acceptance_rate(0.5, 4.0)


def test_acceptance_per_position_pools_requests_of_different_lengths():
    measurements = [
        run("spec-adaptive", "p0", 1.0, draft=counts(3, 2, accepted=(2, 0))),
        run("spec-adaptive", "p1", 1.0, draft=counts(2, 4, accepted=(3,))),
    ]
    rates = acceptance_by_position(measurements)[(GREEDY, "spec-adaptive")]
    # Positions 1 and 2: accepted 1 + 1 of 2 + 1 drafted; position 3: 1 of 1; position 4: 0 of 1.
    assert rates == pytest.approx([2 / 3, 2 / 3, 1.0, 0.0])


def test_target_step_in_run_excludes_the_prefill_step():
    target = counts(num_steps=5, drafted_per_step=0, accepted=(), verify_time_s=2.0)
    measurements = [run("target", "p0", 2.5, draft=target)]
    assert target_step_in_run_s(measurements, GREEDY) == pytest.approx(0.5)


def test_greedy_check_fails_on_a_speculative_difference_and_only_reports_peers():
    measurements = [
        run("target", "p0", 1.0, (1, 2, 3, 4)),
        run("spec-k2", "p0", 1.0, (1, 2, 3, 4)),
        run("ngram", "p0", 1.0, (1, 2, 9, 4)),
        run("hf-target", "p0", 1.0, (1, 5, 6)),
        run("small", "p0", 1.0, (7, 7, 7, 7)),
    ]
    check = check_greedy(measurements)
    assert not check.passed
    (mismatch,) = check.mismatches
    assert (mismatch.method, mismatch.position) == ("ngram", 2)
    agreements = {a.method: a for a in check.agreements}
    assert set(agreements) == {"spec-k2", "ngram", "hf-target"}  # `small` is another model
    assert agreements["hf-target"].check is TargetCheck.INFO
    assert agreements["hf-target"].mean_prefix_fraction == pytest.approx(0.25)
    assert agreements["spec-k2"].num_identical == 1
    assert check.num_exact_compared == 2


def test_first_difference_counts_a_length_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 2]) == 2
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert first_difference([1, 2], [0, 2]) == 0


def test_tables_show_the_interval_and_the_achieved_fraction():
    draft = counts(num_steps=11, drafted_per_step=4, accepted=(2,) * 10)
    tokens = tuple(range(31))
    measurements = [
        run("target", "p0", 2.0, tokens),
        run("spec-k4", "p0", 1.0, tokens, draft=draft),
    ]
    summaries = summarize(measurements, n_resamples=RESAMPLES)
    overview = overview_table(summaries, GREEDY)
    assert "2.00 [2.00, 2.00]" in overview.markdown()
    assert overview.text().splitlines()[0] == "greedy: all prompts"
    theory = theory_table(theory_rows(summaries, measurements, COST, max_k=6))
    assert "135%" in theory.markdown()  # 2.0 measured over 31 / 21 in theory
