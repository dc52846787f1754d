"""The small tier's engine: the draft model answering alone, beside the speculative engine."""

from __future__ import annotations

import dataclasses

from server.engine.engine import LLMEngine
from server.engine.params import DrafterKind


def build_small_engine(large: LLMEngine) -> LLMEngine:
    """An engine whose target is `large`'s draft model: same weights, a KV pool of its own.

    It decodes plainly (no draft model behind it). Its pool is as large as the draft's pool in
    `large`, so it holds as many tokens as the speculative engine does.
    """
    if large.draft is None:
        raise ValueError("the small tier serves the draft model, and none is loaded")
    model = large.draft.model
    if model.head_token_ids is not None:
        raise ValueError(
            "the draft's head keeps only its most frequent tokens, so it cannot answer alone; "
            "load it with its full head to serve the small tier"
        )
    config = dataclasses.replace(
        large.config, drafter=DrafterKind.NONE, kv_cache_bytes=large.draft.pool.nbytes
    )
    return LLMEngine(model, large.tokenizer, large.eos_token_ids, config)
