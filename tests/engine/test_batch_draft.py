"""Draft lengths chosen for a batch as a whole: never a change of output, only of cost."""

from __future__ import annotations

import pytest

from server.engine.draft_length import cap_for_batch
from server.engine.params import DrafterKind, SamplingParams, SpecParams
from server.engine.step_cost import StepCost
from tests.engine.helpers import make_engine
from tests.engine.test_greedy import greedy, prompts

# A CPU-like target: a forward costs the same for up to 16 tokens, then grows.
FLAT_TARGET = ((1, 1.0), (16, 1.0), (32, 2.0))
# A draft row costing 0.1 of a target step: speculation pays for one sequence.
CHEAP_DRAFT = StepCost(target_points=FLAT_TARGET, draft_points=((1, 0.1), (16, 0.2)))
# A draft whose cost grows with its rows: at four rows a draft position costs a target step.
ROW_BOUND_DRAFT = StepCost(target_points=FLAT_TARGET, draft_points=((1, 0.25), (4, 1.0)))


def test_one_sequence_with_a_cheap_draft_keeps_its_length() -> None:
    plan = cap_for_batch([4], [0.8], [True], [True], CHEAP_DRAFT)
    assert plan == [4]


def test_a_batch_with_a_row_bound_draft_stops_drafting() -> None:
    plan = cap_for_batch([4] * 4, [0.7] * 4, [True] * 4, [True] * 4, ROW_BOUND_DRAFT)
    assert plan == [0, 0, 0, 0]


def test_verify_past_the_flat_region_shortens_drafts() -> None:
    # Prompt lookup costs nothing to draft, but 8 x (6 + 1) tokens leave the target's flat region.
    plan = cap_for_batch([6] * 8, [0.5] * 8, [False] * 8, [True] * 8, CHEAP_DRAFT)
    assert 0 < max(plan) < 6
    assert len(set(plan)) == 1


def test_uncappable_sequences_keep_their_length() -> None:
    plan = cap_for_batch([4, 4], [0.7, 0.7], [True, True], [False, True], ROW_BOUND_DRAFT)
    assert plan[0] == 4
    assert plan[1] < 4


@pytest.mark.parametrize("step_cost", [CHEAP_DRAFT, ROW_BOUND_DRAFT], ids=["cheap", "row-bound"])
@pytest.mark.parametrize("drafter", [DrafterKind.MODEL, DrafterKind.COMBINED])
def test_batch_aware_greedy_equals_target_only(target, draft, tokenizer, step_cost, drafter):
    batch = prompts(4) + prompts(4, seed=1, repeat=True)
    plain = make_engine(target, tokenizer, max_batch_size=8)
    expected = plain.generate(batch, greedy(), SpecParams(drafter=DrafterKind.NONE))

    engine = make_engine(target, tokenizer, draft=draft, max_batch_size=8)
    engine.step_cost = step_cost
    outs = engine.generate(batch, greedy(), SpecParams(drafter=drafter))
    assert [o.token_ids for o in outs] == [e.token_ids for e in expected]
    drafted = sum(out.stats.num_draft_tokens for out in outs)
    if step_cost is CHEAP_DRAFT:
        assert drafted > 0
    elif drafter is DrafterKind.MODEL:
        assert drafted == 0  # all eight decode together to the end: drafting never pays


def test_seeded_sampling_is_unaffected_by_the_batch(target, draft, tokenizer) -> None:
    sampling = SamplingParams(max_tokens=24, temperature=0.8, seed=7, ignore_eos=True)
    prompt = prompts(1)[0]

    alone = make_engine(target, tokenizer, draft=draft)
    alone.step_cost = ROW_BOUND_DRAFT
    (expected,) = alone.generate([prompt], sampling)

    batched = make_engine(target, tokenizer, draft=draft, max_batch_size=4)
    batched.step_cost = ROW_BOUND_DRAFT
    for i, other in enumerate(prompts(4)[1:]):
        batched.add_request(f"other-{i}", other, greedy())
    seq = batched.add_request("seeded", prompt, sampling)
    while batched.has_unfinished():
        batched.step()
    assert seq.output_ids == expected.token_ids
