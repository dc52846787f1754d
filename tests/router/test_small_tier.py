"""The small tier's engine: the draft's own weights, a pool of its own, plain decoding."""

from __future__ import annotations

import pytest
import torch

from server.engine.engine import LLMEngine
from server.engine.params import DrafterKind, SamplingParams
from server.router.small_tier import build_small_engine
from tests.api.support import ENGINE_CONFIG, build_tiny_engine
from tests.tiny import tiny_model, tiny_tokenizer

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPT = [72, 101, 108, 108, 111]


def test_shares_the_drafts_weights_but_not_its_pool() -> None:
    large = build_tiny_engine()
    small = build_small_engine(large)
    assert large.draft is not None
    assert small.target.model is large.draft.model
    assert small.target.pool is not large.draft.pool
    assert small.target.pool.nbytes == large.draft.pool.nbytes
    assert small.draft is None and small.default_drafter is DrafterKind.NONE


def test_answers_as_the_draft_model_alone_would() -> None:
    tokenizer = tiny_tokenizer()
    large = LLMEngine(
        tiny_model(len(tokenizer), seed=0, head_scale=4.0),
        tokenizer,
        [tokenizer.eos_token_id],
        ENGINE_CONFIG,
        draft=tiny_model(len(tokenizer), seed=1, head_scale=4.0),
    )
    alone = LLMEngine(
        tiny_model(len(tokenizer), seed=1, head_scale=4.0),
        tokenizer,
        [tokenizer.eos_token_id],
        ENGINE_CONFIG,
    )
    small = build_small_engine(large)
    [expected] = alone.generate([PROMPT], GREEDY)
    [got] = small.generate([PROMPT], GREEDY)
    assert got.token_ids == expected.token_ids
    assert got.stats.num_draft_tokens == 0
    [large_answer] = large.generate([PROMPT], GREEDY)
    assert large_answer.token_ids != got.token_ids  # a different model answered


def test_needs_a_draft_with_its_full_head() -> None:
    with pytest.raises(ValueError, match="none is loaded"):
        build_small_engine(build_tiny_engine(with_draft=False))
    large = build_tiny_engine()
    assert large.draft is not None
    large.draft.model.restrict_head(torch.arange(100))
    with pytest.raises(ValueError, match="full head"):
        build_small_engine(large)
