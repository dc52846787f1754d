"""The routing evaluation: the offline sweep on records with known answers, and its pipeline."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from server.bench.datasets import DEFAULT_DATA_DIR, Prompt, user_prompt
from server.bench.routing.__main__ import main
from server.bench.routing.records import PromptRecord, TierRun
from server.bench.routing.run import BenchPrompt, load_prompts, record_prompt
from server.bench.routing.sweep import (
    Policy,
    best_on_target,
    curve_thresholds,
    evaluate,
    sweep,
)
from server.router.config import RouterConfig
from server.router.policy import FeatureWeights, ScoreTerms, route_score
from server.router.router import Router
from server.router.small_tier import build_small_engine
from server.router.tiers import Tier
from tests.api.support import build_tiny_engine

# score = sigmoid(prompt_entropy): each record's score is set by its entropy term alone.
ENTROPY_ONLY = FeatureWeights(
    **{field.name: 0.0 for field in dataclasses.fields(FeatureWeights)}
).with_values({"prompt_entropy": 1.0})
PRICE_PER_HOUR = 3.6  # one cent per 10 model-seconds
SCORING_S = 0.5


def terms(logit: float) -> ScoreTerms:
    zero = {field.name: 0.0 for field in dataclasses.fields(ScoreTerms)}
    return ScoreTerms(**{**zero, "prompt_entropy": logit})


def run(correct: bool, seconds: float, confidence: float = 0.9) -> TierRun:
    return TierRun("answer", correct, seconds, seconds, 10, confidence, confidence / 2)


# Scores about 0.12, 0.27, 0.73 and 0.88. The small model solves the two easiest; the large one
# all but the last; the small model is sure of the first and the last answer only.
RECORDS = [
    PromptRecord("p1", "code", terms(-2.0), SCORING_S, run(True, 1.0, 0.9), run(True, 4.0)),
    PromptRecord("p2", "math", terms(-1.0), SCORING_S, run(True, 2.0, 0.5), run(True, 5.0)),
    PromptRecord("p3", "code", terms(1.0), SCORING_S, run(False, 1.0, 0.4), run(True, 6.0)),
    PromptRecord("p4", "math", terms(2.0), SCORING_S, run(False, 2.0, 0.95), run(False, 7.0)),
]


def outcome(policy: Policy):
    return evaluate(RECORDS, policy, ENTROPY_ONLY, "mean", PRICE_PER_HOUR)


def test_fixed_tiers() -> None:
    small, large = outcome(Policy(Tier.SMALL)), outcome(Policy(Tier.LARGE))
    assert (small.quality, small.small_share, small.model_s) == (0.5, 1.0, 6.0)
    assert (large.quality, large.small_share, large.model_s) == (0.75, 0.0, 22.0)
    assert large.quality_by_category == {"code": 1.0, "math": 0.5}
    assert large.mean_latency_s == 5.5
    assert large.p90_latency_s == pytest.approx(6.7)  # linear between 6 and 7
    assert large.cost_usd == pytest.approx(22.0 / 1000)
    assert large.cost_per_1k_usd == pytest.approx(22.0 / 1000 * 1000 / 4)


def test_auto_routes_by_score_and_pays_for_scoring() -> None:
    half = outcome(Policy(Tier.AUTO, 0.5))  # p1, p2 small; p3, p4 large
    assert (half.quality, half.small_share, half.answered_small_share) == (0.75, 0.5, 0.5)
    assert half.model_s == 4 * SCORING_S + 1.0 + 2.0 + 6.0 + 7.0
    assert half.quality_by_category == {"code": 1.0, "math": 0.5}
    nearly_all = outcome(Policy(Tier.AUTO, 0.8))  # p3 joins the small side, and fails there
    assert (nearly_all.quality, nearly_all.small_share) == (0.5, 0.75)
    assert outcome(Policy(Tier.AUTO, 0.0)).small_share == 0.0
    assert outcome(Policy(Tier.AUTO, 1.0)).small_share == 1.0


def test_escalation_redoes_unsure_small_answers_at_both_costs() -> None:
    escalating = outcome(Policy(Tier.AUTO, 1.0, 0.6))  # p2 (0.5) and p3 (0.4) escalate
    assert escalating.quality == 0.75
    assert (escalating.small_share, escalating.answered_small_share) == (1.0, 0.5)
    assert escalating.escalated_share == 0.5
    assert escalating.model_s == 4 * SCORING_S + (1 + 2 + 1 + 2) + 5.0 + 6.0
    strict = evaluate(RECORDS, Policy(Tier.AUTO, 1.0, 0.6), ENTROPY_ONLY, "min", PRICE_PER_HOUR)
    assert strict.escalated_share == 1.0  # min confidences are 0.45, 0.25, 0.2, 0.475


def test_curve_thresholds_realise_every_split() -> None:
    scores = [1 / (1 + math.exp(-logit)) for logit in (-2.0, -1.0, 1.0, 2.0)]
    expected = [0.0] + [(a + b) / 2 for a, b in zip(scores[:-1], scores[1:], strict=True)] + [1.0]
    assert curve_thresholds(RECORDS, ENTROPY_ONLY) == pytest.approx(expected)
    shares = [outcome(Policy(Tier.AUTO, t)).small_share for t in expected]
    assert shares == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_sweep_finds_the_cheapest_policy_on_target() -> None:
    result = sweep(RECORDS, ENTROPY_ONLY, [0.3, 0.5, 0.8], [0.6], "mean", PRICE_PER_HOUR)
    assert [o.policy.name for o in result.table] == [
        "auto@0.30",
        "auto@0.50",
        "auto@0.80",
        "auto@0.30+esc@0.60",
        "auto@0.50+esc@0.60",
        "auto@0.80+esc@0.60",
    ]
    assert set(result.curves) == {"auto", "auto+esc@0.60"}
    assert result.oracle_small_share == 0.75  # p1, p2 solved small; p4 failed by both
    best = result.best
    assert best is not None and best.quality == 0.75 and best.answered_small_share == 0.5
    # auto@0.5 (18 model-s, scoring included) beats auto@1.0+esc@0.6 (19 model-s).
    assert best.policy == Policy(Tier.AUTO, best.policy.threshold)
    assert route_score(RECORDS[1].terms, ENTROPY_ONLY) < best.policy.threshold
    assert route_score(RECORDS[2].terms, ENTROPY_ONLY) > best.policy.threshold
    assert best_on_target([result.small_only], result.large_only) is None


def test_policy_fields_must_agree() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Policy(Tier.AUTO)
    with pytest.raises(ValueError, match="threshold"):
        Policy(Tier.SMALL, 0.5)
    with pytest.raises(ValueError, match="escalate"):
        Policy(Tier.LARGE, escalation=0.5)


def test_reanalysis_of_records_writes_the_table_curve_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records_path = tmp_path / "records.jsonl"
    lines = [json.dumps(dataclasses.asdict(record)) for record in RECORDS]
    records_path.write_text("\n".join(lines) + "\n")
    weights = [
        f"--route-weight={field.name}={1 if field.name == 'prompt_entropy' else 0}"
        for field in dataclasses.fields(FeatureWeights)
    ]
    out = tmp_path / "out"
    status = main(
        ["--records", str(records_path), "--out", str(out), "--thresholds", "0.5"] + weights
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "auto@0.50" in printed and "Target reached" in printed
    document = json.loads((out / "results.json").read_text())
    assert [PromptRecord.from_json(r) for r in document["records"]] == RECORDS
    assert document["sweep"]["large_only"]["quality"] == 0.75
    assert (out / "routing.png").stat().st_size > 0
    assert "| auto@0.50 |" in (out / "results.md").read_text()


def test_records_a_prompt_on_both_tiers_with_tiny_models() -> None:
    large = build_tiny_engine()
    small = build_small_engine(large)
    router = Router(small.target.model, RouterConfig())
    prompt = user_prompt("tiny/1", "math", "How many legs do 3 cats have?", reference="12")
    token_ids = list(large.tokenizer.encode("How many legs do 3 cats have?"))
    graded: list[tuple[str, str]] = []

    def grader(graded_prompt: Prompt, answer: str) -> bool:
        graded.append((graded_prompt.id, answer))
        return len(graded) == 1  # the small answer passes, the large one fails

    record = record_prompt(
        BenchPrompt(prompt, token_ids, "How many legs?"), router, small, large, 5, grader
    )
    assert (record.id, record.category) == ("tiny/1", "math")
    assert record.terms.reasoning_task == 1.0 and record.scoring_s > 0
    assert (record.small.correct, record.large.correct) == (True, False)
    assert [answer for _, answer in graded] == [record.small.text, record.large.text]
    for tier_run in (record.small, record.large):
        assert 1 <= tier_run.num_output_tokens <= 5
        assert 0 < tier_run.confidence_min <= tier_run.confidence_mean <= 1
        assert tier_run.model_s > 0


@pytest.mark.skipif(not DEFAULT_DATA_DIR.is_dir(), reason="shared data folder not present")
def test_prompts_alternate_between_code_and_math() -> None:
    prompts = load_prompts(humaneval_limit=2, math_limit=3, data_dir=DEFAULT_DATA_DIR)
    assert [p.category for p in prompts] == [
        "humaneval",
        "math_reasoning",
        "humaneval",
        "math_reasoning",
        "math_reasoning",
    ]
    assert all(p.reference for p in prompts if p.category == "math_reasoning")


def test_bench_command_dispatches_routing(tmp_path: Path) -> None:
    """`python -m server.bench routing ...` is the same evaluation as `server.bench.routing`."""
    from server.bench.__main__ import main as bench_main

    records_path = tmp_path / "records.jsonl"
    records_path.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in RECORDS))
    out = tmp_path / "out"
    assert bench_main(["routing", "--records", str(records_path), "--out", str(out)]) == 0
    document = json.loads((out / "results.json").read_text())
    assert len(document["records"]) == len(RECORDS)
