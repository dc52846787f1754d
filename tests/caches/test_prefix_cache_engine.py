"""Prefix caching in the engine (target only): reused KV gives exactly the cold output."""

from __future__ import annotations

import pytest

from models.transformer import Transformer
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


@pytest.fixture(scope="module")
def target() -> Transformer:
    return tiny_pair()[0]


def reusable(num_prompt_tokens: int, num_common: int) -> int:
    """Tokens a prompt can reuse: whole blocks of the common prefix, never its last token."""
    return min(num_common, num_prompt_tokens - 1) // BLOCK_SIZE * BLOCK_SIZE


def test_shared_system_prompt_then_two_questions(target, tokenizer) -> None:
    prompts = [encode(tokenizer, SYSTEM + q) for q in ("What is 2+2?", "Name a colour.")]
    cold = cold_outputs(target, tokenizer, prompts)
    engine = tiny_engine(target, tokenizer)

    first, second = (run_one(engine, prompt) for prompt in prompts)

    assert [first.output_ids, second.output_ids] == cold
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == reusable(len(prompts[1]), len(encode(tokenizer, SYSTEM)))


def test_same_prompt_twice(target, tokenizer) -> None:
    prompt = encode(tokenizer, SYSTEM + "Repeat after me.")
    (cold,) = cold_outputs(target, tokenizer, [prompt])
    engine = tiny_engine(target, tokenizer)

    first, second = run_one(engine, prompt), run_one(engine, prompt)

    assert first.output_ids == second.output_ids == cold
    assert second.num_cached_tokens == reusable(len(prompt), len(prompt))


@pytest.mark.parametrize("divergence", [1, 2, 3])  # offsets inside a block, never on its edge
def test_prompts_diverging_inside_a_block(target, tokenizer, divergence: int) -> None:
    head = encode(tokenizer, SYSTEM)[: 12 * BLOCK_SIZE + divergence]
    prompts = [head + encode(tokenizer, tail) for tail in ("alpha beta", "gamma delta")]
    cold = cold_outputs(target, tokenizer, prompts)
    engine = tiny_engine(target, tokenizer)

    outputs = [run_one(engine, prompt) for prompt in prompts]

    assert [out.output_ids for out in outputs] == cold
    # The block holding the divergence is not reused: only the blocks before it.
    assert outputs[1].num_cached_tokens == 12 * BLOCK_SIZE


def test_a_longer_word_after_a_cached_prompt(target, tokenizer) -> None:
    """`...def foo` was cached with its answer; `...def foobar` shares its text, not its blocks."""
    # "# def foo" ends two tokens into a block, which then fills up with foo's answer.
    prompts = [encode(tokenizer, SYSTEM + word) for word in ("# def foo", "# def foobar")]
    cold = cold_outputs(target, tokenizer, prompts)
    engine = tiny_engine(target, tokenizer)

    outputs = [run_one(engine, prompt) for prompt in prompts]

    assert [out.output_ids for out in outputs] == cold
    assert len(prompts[0]) % BLOCK_SIZE != 0
    assert outputs[1].num_cached_tokens == reusable(len(prompts[1]), len(prompts[0]))


def test_long_shared_prefix_prefills_only_the_uncached_tail(target, tokenizer) -> None:
    system = encode(tokenizer, SYSTEM * 6)
    engine = tiny_engine(target, tokenizer)
    run_one(engine, system + encode(tokenizer, "First question?"))
    prompt = system + encode(tokenizer, "Second one?")

    before = engine.target.num_computed_tokens
    seq = engine.add_request("second", prompt, greedy())
    engine.step()  # the prefill step alone
    computed = engine.target.num_computed_tokens - before

    expected_cached = reusable(len(prompt), len(system))
    assert seq.num_cached_prompt_tokens == expected_cached
    assert computed == len(prompt) - expected_cached


def test_multi_turn_reuses_the_previous_answer(target, tokenizer) -> None:
    """Turn two's prompt holds turn one's answer: its blocks were keyed while decoding."""
    turn_one = encode(tokenizer, SYSTEM + "Tell me a story.")
    engine = tiny_engine(target, tokenizer)
    answer = run_one(engine, turn_one, greedy(max_tokens=20)).output_ids
    turn_two = turn_one + answer + encode(tokenizer, "\nAnd then?")
    (cold,) = cold_outputs(target, tokenizer, [turn_two])

    second = run_one(engine, turn_two)

    assert second.output_ids == cold
    # The answer's tokens before the last one are final, hence reusable.
    assert second.num_cached_tokens == reusable(len(turn_two), len(turn_one) + len(answer) - 1)
    assert second.num_cached_tokens > len(turn_one)


def test_concurrent_requests_share_blocks_without_corruption(
    target, tokenizer, monkeypatch
) -> None:
    prompts = [encode(tokenizer, SYSTEM + q) for q in ("Why is the sky blue?", "Count to 3.")]
    cold = cold_outputs(target, tokenizer, prompts, greedy(max_tokens=24))
    engine = tiny_engine(target, tokenizer)
    max_refs = guard_shared_blocks(monkeypatch, engine)

    first = engine.add_request("first", prompts[0], greedy(max_tokens=24))
    engine.step()  # first's prompt is computed and its blocks keyed
    second = engine.add_request("second", prompts[1], greedy(max_tokens=24))
    engine.step()  # second is admitted onto first's blocks

    shared = second.target_table.block_ids[: second.num_cached_prompt_tokens // BLOCK_SIZE]
    assert shared and shared == first.target_table.block_ids[: len(shared)]
    assert all(engine.target.allocator.ref_counts[b] == 2 for b in shared)
    while engine.has_unfinished():
        engine.step()

    assert [first.output_ids, second.output_ids] == cold
    assert max(max_refs) == 2


def test_aborting_one_sharer_leaves_the_other_unchanged(target, tokenizer, monkeypatch) -> None:
    prompts = [encode(tokenizer, SYSTEM + q) for q in ("Abort me.", "Keep me going.")]
    (cold,) = cold_outputs(target, tokenizer, prompts[1:], greedy(max_tokens=24))
    engine = tiny_engine(target, tokenizer)
    guard_shared_blocks(monkeypatch, engine)

    engine.add_request("doomed", prompts[0], greedy(max_tokens=24))
    engine.step()
    survivor = engine.add_request("survivor", prompts[1], greedy(max_tokens=24))
    for _ in range(3):
        engine.step()
    shared = survivor.target_table.block_ids[: survivor.num_cached_prompt_tokens // BLOCK_SIZE]
    engine.abort("doomed")

    assert shared and all(engine.target.allocator.ref_counts[b] == 1 for b in shared)
    while engine.has_unfinished():
        engine.step()
    assert survivor.output_ids == cold


def test_eviction_under_a_tiny_pool(target, tokenizer) -> None:
    engine = tiny_engine(target, tokenizer, kv_cache_bytes=TINY_BLOCK_BYTES * 32)
    prompts = [encode(tokenizer, f"{i}: {SYSTEM}") for i in range(6)]
    cold = cold_outputs(target, tokenizer, prompts)

    outputs = [run_one(engine, prompt) for prompt in prompts]
    again = run_one(engine, prompts[0])  # its blocks were taken back by later prompts

    assert [out.output_ids for out in outputs] == cold
    assert again.output_ids == cold[0]
    assert engine.target.allocator.num_evictions > 0
    assert again.num_cached_tokens < reusable(len(prompts[0]), len(prompts[0]))


def test_request_opting_out_neither_reuses_nor_leaves_blocks(target, tokenizer) -> None:
    prompt = encode(tokenizer, SYSTEM + "Private question.")
    engine = tiny_engine(target, tokenizer)

    private = run_one(engine, prompt, greedy(use_prefix_cache=False))
    public = run_one(engine, prompt)

    assert private.num_cached_tokens == public.num_cached_tokens == 0
    assert private.output_ids == public.output_ids


def test_disabled_cache_keys_nothing(target, tokenizer) -> None:
    engine = tiny_engine(target, tokenizer, enable_prefix_cache=False)
    run_together(engine, [encode(tokenizer, SYSTEM)] * 2)
    assert not engine.target.allocator.block_keys
    assert engine.totals.num_prefix_cache_queries == 0


def test_totals_count_queried_and_reused_tokens(target, tokenizer) -> None:
    prompt = encode(tokenizer, SYSTEM + "Count me.")
    engine = tiny_engine(target, tokenizer)
    first, second = run_one(engine, prompt), run_one(engine, prompt)
    assert engine.totals.num_prefix_cache_queries == 2 * len(prompt)
    assert engine.totals.num_prefix_cache_hits == first.num_cached_tokens + second.num_cached_tokens
