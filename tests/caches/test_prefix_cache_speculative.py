"""Prefix caching under speculative decoding: both pools reuse, rollback never keys a bad block."""

from __future__ import annotations

import pytest
import torch

from models.transformer import Transformer
from server.caches.prefix_cache import PrefixCache, block_key
from server.engine.engine import LLMEngine
from server.engine.model_runner import ForwardItem, ModelRunner
from server.engine.params import DrafterKind, SpecParams
from tests.caches.support import (
    BLOCK_SIZE,
    SYSTEM,
    TINY_BLOCK_BYTES,
    cold_outputs,
    encode,
    greedy,
    guard_shared_blocks,
    run_one,
    run_together,
    tiny_engine,
    tiny_pair,
)
from tests.engine.helpers import KV_BYTES, shifted_head_copy

QUESTIONS = ("Sort a list.", "Reverse a string, please.", "def fib(n):")
K = 3
# Output tokens before the stop, so that the stopping step follows some drafting steps.
MIN_STEPS_BEFORE_STOP = 4
KV_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def pair() -> tuple[Transformer, Transformer]:
    return tiny_pair()


def drafts(pair: tuple[Transformer, Transformer], kind: str) -> Transformer:
    target, other = pair
    # "wrong" rejects every draft token (a rollback every step); "other" rejects some.
    return shifted_head_copy(target) if kind == "wrong" else other


@pytest.mark.parametrize("draft_kind", ["wrong", "other"])
@pytest.mark.parametrize("drafter", [DrafterKind.MODEL, DrafterKind.NGRAM, DrafterKind.COMBINED])
def test_speculative_with_prefix_cache_equals_target_only(
    pair, tokenizer, monkeypatch, draft_kind: str, drafter: DrafterKind
) -> None:
    target = pair[0]
    spec = SpecParams(drafter=drafter, num_draft_tokens=K)
    prompts = [encode(tokenizer, SYSTEM + q) for q in QUESTIONS]
    engine = tiny_engine(target, tokenizer, draft=drafts(pair, draft_kind))
    max_refs = guard_shared_blocks(monkeypatch, engine)

    # One alone (it fills the cache), then all three together on top of it.
    alone = run_one(engine, prompts[0], spec=spec)
    together = run_together(engine, prompts, spec=spec)
    turn_two = prompts[1] + together[1].output_ids + encode(tokenizer, "\nMore.")
    follow_up = run_one(engine, turn_two, spec=spec)

    cold = cold_outputs(target, tokenizer, prompts + [turn_two])
    assert alone.output_ids == cold[0]
    assert [out.output_ids for out in together] == cold[:3]
    assert follow_up.output_ids == cold[3]
    assert all(out.num_cached_tokens > 0 for out in together)
    assert follow_up.num_cached_tokens > len(prompts[1])
    assert max(max_refs) >= 2


def test_the_draft_reuses_its_own_prefix(pair, tokenizer) -> None:
    target, draft = pair
    prompt = encode(tokenizer, SYSTEM + QUESTIONS[0])
    spec = SpecParams(drafter=DrafterKind.MODEL, num_draft_tokens=K)
    engine = tiny_engine(target, tokenizer, draft=draft)
    run_one(engine, prompt, spec=spec)

    seq = engine.add_request("again", prompt, greedy(), spec)
    engine.step()  # prefill: the draft has not run yet, so its tokens all come from the cache

    assert seq.draft_table.num_tokens == seq.num_cached_prompt_tokens > 0
    engine.draft.num_computed_tokens = 0
    while engine.has_unfinished():
        engine.step()
    # Its first draft forward caught up from the cached prefix, not from position 0.
    assert engine.draft.num_computed_tokens < len(prompt)


@pytest.mark.parametrize("draft_kind", ["wrong", "other"])
def test_keyed_blocks_hold_the_kv_of_their_tokens(pair, tokenizer, draft_kind: str) -> None:
    """Compare every cached block with the KV of its tokens computed afresh in one forward.

    The riskiest moment is a stop in the middle of a step: the verify forward has written
    rejected drafts' KV past the last kept token, and no rollback follows. Each request here stops
    on a token that ends a block, so that block is full when its sequence finishes.
    """
    target = pair[0]
    engine = tiny_engine(target, tokenizer, draft=drafts(pair, draft_kind))
    spec = SpecParams(drafter=DrafterKind.MODEL, num_draft_tokens=K)
    stopping = _prompts_stopping_at_a_block_end(target, tokenizer)
    seqs = [
        engine.add_request(f"r{i}", prompt, greedy(24, stop_token_ids=(stop,)), spec)
        for i, (prompt, stop) in enumerate(stopping)
    ]
    while engine.has_unfinished():
        engine.step()

    assert all(seq.num_tokens % BLOCK_SIZE == 0 for seq in seqs)
    pools = [(engine.target, engine.target_prefixes), (engine.draft, engine.draft_prefixes)]
    for runner, prefixes in pools:
        assert runner is not None and prefixes is not None
        num_checked = sum(_check_keyed_blocks(runner, prefixes, seq.token_ids) for seq in seqs)
        # Prompt blocks and answer blocks alike (more blocks than the prompts alone have).
        assert num_checked > sum(len(prompt) // BLOCK_SIZE for prompt, _ in stopping)


def _prompts_stopping_at_a_block_end(
    target: Transformer, tokenizer, wanted: int = 2
) -> list[tuple[list[int], int]]:
    """Prompts and a stop token id each, such that the text ends exactly at a block's end.

    The stop token is an output token seen for the first time at least a few steps in (so that
    earlier steps drafted), chosen where prompt plus output fill whole blocks.
    """
    found = []
    for padding in range(4 * BLOCK_SIZE):
        prompt = encode(tokenizer, SYSTEM + " " * padding + QUESTIONS[0])
        (output,) = cold_outputs(target, tokenizer, [prompt], greedy(24))
        for index in range(MIN_STEPS_BEFORE_STOP, len(output)):
            ends_block = (len(prompt) + index + 1) % BLOCK_SIZE == 0
            if ends_block and output[index] not in output[:index]:
                found.append((prompt, output[index]))
                break
        if len(found) == wanted:
            return found
    raise AssertionError("no prompt stops at a block's end; try other questions")


def _check_keyed_blocks(runner: ModelRunner, prefixes: PrefixCache, token_ids: list[int]) -> int:
    """Assert that each keyed block of this text holds its KV; return how many were found."""
    fresh = ModelRunner(runner.model, KV_BYTES, BLOCK_SIZE, runner.device)
    table = fresh.new_table()
    with torch.no_grad():
        fresh.forward([ForwardItem(table, token_ids, 1)])
    parent, num_found = prefixes.root_key, 0
    for index in range(len(token_ids) // BLOCK_SIZE):
        parent = block_key(parent, token_ids[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE])
        block_id = runner.allocator.lookup(parent)
        if block_id is None:
            continue
        num_found += 1
        expected = table.block_ids[index]
        for cached, computed in ((runner.pool.k, fresh.pool.k), (runner.pool.v, fresh.pool.v)):
            # Decode-time and one-shot KV differ by float rounding; wrong tokens differ by O(1).
            torch.testing.assert_close(
                cached[:, block_id], computed[:, expected], rtol=KV_TOLERANCE, atol=KV_TOLERANCE
            )
    return num_found


def test_preempted_sequences_resume_and_match(pair, tokenizer, monkeypatch) -> None:
    target, draft = pair
    # 32 blocks per pool (the budget is split evenly between two equal tiny models): four
    # sequences of ~24 blocks sharing 14 cannot all grow, so some are preempted.
    engine = tiny_engine(target, tokenizer, draft=draft, kv_cache_bytes=2 * 32 * TINY_BLOCK_BYTES)
    guard_shared_blocks(monkeypatch, engine)
    prompts = [encode(tokenizer, SYSTEM + q) for q in QUESTIONS + ("Last one.",)]
    spec = SpecParams(drafter=DrafterKind.MODEL, num_draft_tokens=K)

    outputs = run_together(engine, prompts, greedy(28), spec)

    assert engine.totals.num_preempted > 0
    assert [out.output_ids for out in outputs] == cold_outputs(
        target, tokenizer, prompts, greedy(28)
    )
    first_admissions = sum(out.num_cached_tokens for out in outputs)
    assert engine.totals.num_prefix_cache_hits > first_admissions, "resumes reused nothing"


def test_engine_reports_shared_blocks_as_used_and_idle_ones_as_free(pair, tokenizer) -> None:
    target, draft = pair
    engine: LLMEngine = tiny_engine(target, tokenizer, draft=draft)
    run_one(engine, encode(tokenizer, SYSTEM), spec=SpecParams(drafter=DrafterKind.MODEL))
    allocator = engine.target.allocator
    assert allocator.num_used == 0
    assert len(allocator.idle_cached) > 0
