"""The packaged Qwen2.5-Coder pair, for real: parity with transformers and exact speculation.

Runs in float32, where greedy equality is the contract. Skipped, with the reason, when the
packaged models are not installed. Loads at most one large model pair at a time.
"""

from __future__ import annotations

import gc

import pytest
import torch
import transformers

from models.checkpoint import DEFAULT_DRAFT, DEFAULT_TARGET, load_checkpoint
from models.packaged import PACKAGED_MODELS, converted_directory, default_cache_dir
from server.engine.loading import DraftOptions, build_engine, load_pair
from server.engine.params import DrafterKind, EngineConfig, SamplingParams, SpecParams

pytestmark = pytest.mark.real

NUM_TOKENS = 32
KV_BYTES = 64 << 20
CHAT = [
    {"role": "system", "content": "You are a careful Python programmer."},
    {"role": "user", "content": "Write a function that returns the n-th Fibonacci number."},
]


def chat_prompt(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def test_target_greedy_matches_transformers_and_speculation_is_exact() -> None:
    cpu = torch.device("cpu")
    pair = load_pair(DEFAULT_TARGET, DEFAULT_DRAFT, torch.float32, cpu, DraftOptions.auto(cpu))
    engine = build_engine(pair, EngineConfig(kv_cache_bytes=KV_BYTES))
    prompt = chat_prompt(pair.tokenizer)
    greedy = SamplingParams(max_tokens=NUM_TOKENS, ignore_eos=True)

    (target_only,) = engine.generate([prompt], greedy, SpecParams(drafter=DrafterKind.NONE))
    for drafter in (DrafterKind.MODEL, DrafterKind.COMBINED, DrafterKind.NGRAM):
        (speculative,) = engine.generate([prompt], greedy, SpecParams(drafter=drafter))
        assert speculative.token_ids == target_only.token_ids, drafter
    (adaptive,) = engine.generate([prompt], greedy)
    assert adaptive.stats.acceptance_rate > 0.5, adaptive.stats.as_dict()
    assert "def " in target_only.text
    del engine, pair
    gc.collect()

    # transformers' own Qwen2 on the same float32 weights, dequantized from the same GGUF.
    load_checkpoint(DEFAULT_TARGET, torch.float32)  # makes sure the converted directory exists
    directory = converted_directory(
        PACKAGED_MODELS[DEFAULT_TARGET], default_cache_dir(), torch.float32
    )
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([prompt]),
            max_new_tokens=NUM_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert out[0, len(prompt) :].tolist() == target_only.token_ids


BF16_PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain in two sentences what a hash map is.",
    "Translate to French: The weather is nice today and we are going to the beach.",
]


def test_speculation_is_exact_in_bfloat16() -> None:
    """The served dtype: greedy speculation equals target-only decoding token for token.

    This holds in bfloat16 only because no projection ever multiplies a lone row (see
    `models.transformer.Linear`): a verify step and a single-token step then round alike.
    """
    cpu = torch.device("cpu")
    pair = load_pair(DEFAULT_TARGET, DEFAULT_DRAFT, torch.bfloat16, cpu, DraftOptions.auto(cpu))
    engine = build_engine(pair, EngineConfig(kv_cache_bytes=KV_BYTES))
    prompts = []
    for text in BF16_PROMPTS:
        messages = [{"role": "user", "content": text}]
        rendered = pair.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        prompts.append(pair.tokenizer.encode(rendered, add_special_tokens=False))
    greedy = SamplingParams(max_tokens=48, ignore_eos=True)

    # Target-only one prompt at a time (single-row decode steps), speculation batched.
    target_only = [
        engine.generate([prompt], greedy, SpecParams(drafter=DrafterKind.NONE))[0]
        for prompt in prompts
    ]
    for drafter in (DrafterKind.MODEL, DrafterKind.COMBINED):
        speculative = engine.generate(prompts, greedy, SpecParams(drafter=drafter))
        for expected, got in zip(target_only, speculative, strict=True):
            assert got.token_ids == expected.token_ids, (drafter, expected.text, got.text)
    del engine, pair
    gc.collect()
