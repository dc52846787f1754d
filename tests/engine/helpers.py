"""Shared builders for engine tests: tiny engines over the byte-level test tokenizer."""

from __future__ import annotations

import copy

import torch

from models.transformer import Transformer
from server.engine.engine import LLMEngine
from server.engine.params import EngineConfig
from tests.tiny import tiny_tokenizer

# The byte-level test tokenizer: 256 byte tokens plus 3 special tokens.
VOCAB_SIZE = len(tiny_tokenizer())
BLOCK_SIZE = 4  # small, so test sequences cross many block boundaries
KV_BYTES = 8 << 20


def make_engine(
    target: Transformer,
    tokenizer,
    draft: Transformer | None = None,
    confidence_threshold: float = 0.0,
    **config,
) -> LLMEngine:
    """An engine over float32 tiny models; the confidence cutoff is off unless asked for."""
    config.setdefault("kv_cache_bytes", KV_BYTES)
    engine_config = EngineConfig(
        block_size=BLOCK_SIZE,
        draft_confidence_threshold=confidence_threshold,
        **config,
    )
    eos = {tokenizer.eos_token_id}
    return LLMEngine(target, tokenizer, eos, engine_config, draft=draft)


def shifted_head_copy(model: Transformer) -> Transformer:
    """A draft that always proposes the target's argmax plus one: every draft token is wrong.

    Same body as `model`, so its hidden states equal the target's; the head's rows are rolled by
    one, so the score of token t is the target's score of token t - 1.
    """
    draft = copy.deepcopy(model)
    with torch.no_grad():
        draft.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.roll(1, dims=0))
    return draft
