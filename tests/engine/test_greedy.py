"""Greedy speculative decoding must reproduce target-only greedy decoding token for token."""

from __future__ import annotations

import pytest
import torch

from models.transformer import Transformer
from server.engine.engine import LLMEngine
from server.engine.params import DrafterKind, EngineConfig, SamplingParams, SpecParams
from tests.engine.helpers import VOCAB_SIZE, make_engine, shifted_head_copy
from tests.tiny import ours_from_hf, tiny_hf_model

PROMPT_LENGTHS = (3, 11, 6, 20)
MAX_TOKENS = 24


def prompts(count: int, seed: int = 0, repeat: bool = False) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for length in PROMPT_LENGTHS[:count]:
        prompt = torch.randint(3, VOCAB_SIZE, (length,), generator=generator).tolist()
        # Repeated text gives prompt lookup something to match.
        out.append(prompt * 2 if repeat else prompt)
    return out


def greedy(max_tokens: int = MAX_TOKENS) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def hf_greedy(hf_model, prompt: list[int], max_tokens: int) -> list[int]:
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([prompt]),
            max_new_tokens=max_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


@pytest.fixture(scope="module")
def reference(target: Transformer, tokenizer) -> dict[tuple[int, ...], list[int]]:
    engine = make_engine(target, tokenizer)
    results = {}
    for batch in (prompts(4), prompts(4, seed=1, repeat=True)):
        outs = engine.generate(batch, greedy(), SpecParams(drafter=DrafterKind.NONE))
        results.update({tuple(p): o.token_ids for p, o in zip(batch, outs, strict=True)})
    return results


def test_target_only_matches_transformers_generate(tokenizer) -> None:
    hf_model = tiny_hf_model("llama", vocab_size=VOCAB_SIZE, seed=3)
    engine = make_engine(ours_from_hf(hf_model), tokenizer)
    for prompt in prompts(2):
        (out,) = engine.generate([prompt], greedy(), SpecParams(drafter=DrafterKind.NONE))
        assert out.token_ids == hf_greedy(hf_model, prompt, MAX_TOKENS)


@pytest.mark.parametrize("k", [1, 3, 5, 8])
@pytest.mark.parametrize("drafter", [DrafterKind.MODEL, DrafterKind.NGRAM, DrafterKind.COMBINED])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_speculative_equals_target_only(
    target, draft, tokenizer, reference, k: int, drafter: DrafterKind, batch_size: int
) -> None:
    engine = make_engine(target, tokenizer, draft=draft)
    for batch in (prompts(batch_size), prompts(batch_size, seed=1, repeat=True)):
        outs = engine.generate(batch, greedy(), SpecParams(drafter=drafter, num_draft_tokens=k))
        for prompt, out in zip(batch, outs, strict=True):
            assert out.token_ids == reference[tuple(prompt)]
    assert engine.target.allocator.num_used == 0, "finished sequences must free their blocks"


def test_adaptive_draft_length_equals_target_only(target, draft, tokenizer, reference) -> None:
    engine = make_engine(target, tokenizer, draft=draft)
    batch = prompts(4)
    for prompt, out in zip(batch, engine.generate(batch, greedy()), strict=True):
        assert out.token_ids == reference[tuple(prompt)]


def step_until_done(engine: LLMEngine, check) -> None:
    while engine.has_unfinished():
        engine.step()
        check(engine)


def test_cached_lengths_track_generated_tokens(target, draft, tokenizer) -> None:
    """Between steps the target caches all tokens but the newest; the draft never more."""
    engine = make_engine(target, tokenizer, draft=draft)
    for prompt in prompts(4):
        engine.add_request(f"r{len(prompt)}", prompt, greedy(), SpecParams(num_draft_tokens=4))

    def check(engine: LLMEngine) -> None:
        for seq in engine.running:
            assert seq.target_table.num_tokens == seq.num_tokens - 1
            assert seq.draft_table.num_tokens <= seq.num_tokens - 1
            assert len(seq.target_table.block_ids) == -(-seq.target_table.num_tokens // 4)

    step_until_done(engine, check)


@pytest.mark.parametrize("k", [1, 4, 7])
def test_always_right_draft_emits_k_plus_one_per_target_forward(target, tokenizer, k) -> None:
    engine = make_engine(target, tokenizer, draft=target, confidence_threshold=0.0)
    max_tokens = 1 + 3 * (k + 1)  # the prefill's token, then three full steps
    (out,) = engine.generate([prompts(1)[0]], greedy(max_tokens), SpecParams(num_draft_tokens=k))
    assert out.stats.num_steps == 4
    assert out.stats.num_drafts == 3
    assert out.stats.num_accepted_tokens == 3 * k
    assert out.stats.mean_acceptance_length == k + 1


def test_always_wrong_draft_emits_one_per_target_forward(target, tokenizer, reference) -> None:
    engine = make_engine(target, tokenizer, draft=shifted_head_copy(target))
    prompt = prompts(1)[0]
    (out,) = engine.generate([prompt], greedy(), SpecParams(num_draft_tokens=4))
    assert out.token_ids == reference[tuple(prompt)]
    assert out.stats.num_accepted_tokens == 0
    assert out.stats.num_steps == MAX_TOKENS  # one token per target forward
    assert out.stats.mean_acceptance_length == 1.0


def test_tiny_kv_pool_preempts_and_still_matches(target, draft, tokenizer, reference) -> None:
    block_bytes = 2 * 2 * 4 * 2 * 16 * 4  # K and V, 2 layers, 4 tokens, 2 KV heads, dim 16, fp32
    config = EngineConfig(kv_cache_bytes=block_bytes * 2 * 24, block_size=4)
    engine = LLMEngine(target, tokenizer, {tokenizer.eos_token_id}, config, draft=draft)
    batch = prompts(4)
    outs = engine.generate(batch, greedy(), SpecParams(num_draft_tokens=3))
    for prompt, out in zip(batch, outs, strict=True):
        assert out.token_ids == reference[tuple(prompt)]
    assert engine.totals.num_preempted > 0
