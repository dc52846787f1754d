"""Engine-level helpers for prefix-cache tests: tiny models, cold references, a write guard.

The block size is 4 (tests.engine.helpers), so prompts of a few dozen bytes cross many block
boundaries, and the byte-level tokenizer makes every character one token: a boundary inside a
block is just a character position.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from models.kv_cache import BlockTable
from models.transformer import Transformer
from server.engine.engine import LLMEngine
from server.engine.model_runner import ForwardItem, ModelRunner
from server.engine.params import DrafterKind, EngineConfig, SamplingParams, SpecParams
from tests.engine.helpers import BLOCK_SIZE, KV_BYTES, VOCAB_SIZE
from tests.tiny import tiny_model

# Sharpened heads keep greedy choices far from ties, so batch shapes cannot flip an argmax.
HEAD_SCALE = 4.0
MAX_TOKENS = 12
TARGET_ONLY = SpecParams(drafter=DrafterKind.NONE)
SYSTEM = "You are a careful assistant. Answer briefly and exactly.\n"
# Bytes of one KV block of a tiny model: K and V, 2 layers, 2 KV heads of dim 16, float32.
TINY_BLOCK_BYTES = 2 * 2 * BLOCK_SIZE * 2 * 16 * 4


def tiny_pair() -> tuple[Transformer, Transformer]:
    """A target and a different draft (seeds 0 and 1): drafts are often rejected."""
    return (
        tiny_model(VOCAB_SIZE, seed=0, head_scale=HEAD_SCALE),
        tiny_model(VOCAB_SIZE, seed=1, head_scale=HEAD_SCALE),
    )


def tiny_engine(target: Transformer, tokenizer, draft: Transformer | None = None, **config):
    """An engine with block size 4, the prefix cache on and no draft confidence cutoff."""
    settings: dict = {
        "kv_cache_bytes": KV_BYTES,
        "block_size": BLOCK_SIZE,
        "draft_confidence_threshold": 0.0,
    }
    engine_config = EngineConfig(**{**settings, **config})
    return LLMEngine(target, tokenizer, {tokenizer.eos_token_id}, engine_config, draft=draft)


def greedy(max_tokens: int = MAX_TOKENS, **overrides: object) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **overrides)


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True)
class Finished:
    output_ids: list[int]
    num_cached_tokens: int


def run_together(
    engine: LLMEngine,
    prompts: list[list[int]],
    sampling: SamplingParams | None = None,
    spec: SpecParams = TARGET_ONLY,
) -> list[Finished]:
    """Submit all prompts at once and step until every one finishes."""
    seqs = [
        engine.add_request(f"r{i}-{len(p)}", p, sampling or greedy(), spec)
        for i, p in enumerate(prompts)
    ]
    while engine.has_unfinished():
        engine.step()
    return [Finished(seq.output_ids, seq.num_cached_prompt_tokens) for seq in seqs]


def run_one(
    engine: LLMEngine,
    prompt: list[int],
    sampling: SamplingParams | None = None,
    spec: SpecParams = TARGET_ONLY,
) -> Finished:
    (finished,) = run_together(engine, [prompt], sampling, spec)
    return finished


def cold_outputs(
    target: Transformer, tokenizer, prompts: list[list[int]], sampling: SamplingParams | None = None
) -> list[list[int]]:
    """Target-only greedy outputs with no prefix cache, one fresh engine per prompt."""
    outputs = []
    for prompt in prompts:
        engine = tiny_engine(target, tokenizer, enable_prefix_cache=False)
        outputs.append(run_one(engine, prompt, sampling).output_ids)
    return outputs


def guard_shared_blocks(monkeypatch: pytest.MonkeyPatch, engine: LLMEngine) -> list[int]:
    """Fail the test if any forward writes into a shared or registered block.

    Returns a list that receives the largest ref count seen in a table per forward, so a test
    can also check that sharing actually happened.
    """
    max_refs: list[int] = []
    runners = [engine.target] + ([engine.draft] if engine.draft else [])
    for runner in runners:
        monkeypatch.setattr(runner, "forward", _guarded(runner, max_refs))
    return max_refs


def _guarded(runner: ModelRunner, max_refs: list[int]):
    original = runner.forward
    allocator = runner.allocator

    def forward(items: list[ForwardItem]) -> list[torch.Tensor]:
        for item in items:
            for block_id in _blocks_written(item.table, len(item.token_ids)):
                assert allocator.ref_counts[block_id] == 1, f"write into shared block {block_id}"
                assert block_id not in allocator.block_keys, f"write into keyed block {block_id}"
            refs = [allocator.ref_counts[b] for b in item.table.block_ids]
            max_refs.append(max(refs, default=0))
        return original(items)

    return forward


def _blocks_written(table: BlockTable, num_new: int) -> list[int]:
    """Blocks the table already holds that the next `num_new` tokens will be written into."""
    first = table.num_tokens // table.block_size
    last = (table.num_tokens + num_new - 1) // table.block_size
    return table.block_ids[first : min(last + 1, len(table.block_ids))]
