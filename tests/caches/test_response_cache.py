"""Response-cache keys (what must and must not change them) and the LRU bounds."""

from __future__ import annotations

import dataclasses

import pytest

from server.caches.response_cache import CachedResponse, ResponseCache, response_key
from server.engine.engine import RequestOutput
from server.engine.params import DrafterKind, FinishReason, SamplingParams, SpecParams
from server.engine.sequence import SpecStats, TokenLogprob

MODEL = "tiny-target"
PROMPT = [10, 11, 12, 13]
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
SEEDED = SamplingParams(max_tokens=8, temperature=0.8, seed=7)
DEFAULT_SPEC = SpecParams()

# One change per output-affecting sampling field.
OUTPUT_CHANGES = {
    "max_tokens": {"max_tokens": 9},
    "temperature": {"temperature": 0.5, "seed": SEEDED.seed},
    "top_p": {"top_p": 0.9},
    "top_k": {"top_k": 5},
    "min_p": {"min_p": 0.1},
    "seed": {"seed": 3},
    "stop": {"stop": ("\n",)},
    "stop_token_ids": {"stop_token_ids": (4,)},
    "ignore_eos": {"ignore_eos": True},
    "logprobs": {"logprobs": 2},
}


def key(
    sampling: SamplingParams = GREEDY,
    model: str = MODEL,
    prompt: list[int] = PROMPT,
    spec: SpecParams = DEFAULT_SPEC,
    drafter: DrafterKind = DrafterKind.MODEL,
) -> bytes | None:
    return response_key(model, prompt, sampling, spec, drafter)


def test_unseeded_sampling_has_no_key() -> None:
    assert key(SamplingParams(temperature=0.7)) is None
    assert key(GREEDY) is not None and key(SEEDED) is not None


def test_model_and_prompt_are_keyed() -> None:
    assert key() == key()
    assert key(model="other") != key()
    assert key(prompt=PROMPT + [1]) != key()
    assert key(prompt=PROMPT[:-1]) != key()


@pytest.mark.parametrize("field", sorted(OUTPUT_CHANGES))
@pytest.mark.parametrize("base", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_every_output_changing_field_is_keyed(base: SamplingParams, field: str) -> None:
    changed = dataclasses.replace(base, **OUTPUT_CHANGES[field])
    assert key(changed) != key(base)


def test_the_change_table_covers_every_sampling_field() -> None:
    neutral = {"use_prefix_cache"}
    fields = {field.name for field in dataclasses.fields(SamplingParams)}
    assert fields - neutral == set(OUTPUT_CHANGES)


def test_greedy_keys_ignore_speculation_and_the_prefix_cache() -> None:
    base = key(GREEDY)
    assert key(GREEDY, spec=SpecParams(DrafterKind.NGRAM, 3), drafter=DrafterKind.NGRAM) == base
    assert key(GREEDY, drafter=DrafterKind.NONE) == base
    assert key(dataclasses.replace(GREEDY, use_prefix_cache=False)) == base


def test_seeded_sampling_keys_the_speculation_settings() -> None:
    base = key(SEEDED)
    assert key(SEEDED, spec=SpecParams(num_draft_tokens=3)) != base
    assert key(SEEDED, drafter=DrafterKind.NGRAM) != base
    assert key(dataclasses.replace(SEEDED, use_prefix_cache=False)) == base


def response(text: str, num_logprobs: int = 0) -> CachedResponse:
    logprobs = [TokenLogprob(1, -0.5, [(1, -0.5)] * num_logprobs)]
    output = RequestOutput(
        request_id="r",
        new_token_ids=[1] * len(text),
        new_text=text,
        new_logprobs=logprobs,
        finished=True,
        finish_reason=FinishReason.LENGTH,
        num_prompt_tokens=4,
        num_output_tokens=len(text),
        num_cached_tokens=0,
        stats=SpecStats(),
        first_token_s=None,
    )
    return CachedResponse((output,), DrafterKind.MODEL)


def test_least_recently_used_entry_goes_first() -> None:
    cache = ResponseCache(max_entries=2, max_bytes=1 << 20)
    cache.put(b"a", response("a"))
    cache.put(b"b", response("b"))
    assert cache.get(b"a") is not None  # a is now the most recent
    assert cache.put(b"c", response("c")) == 1
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None and cache.get(b"c") is not None
    assert cache.num_entries == 2


def test_the_byte_bound_evicts_and_refuses_oversized_entries() -> None:
    small = response("x" * 10)
    cache = ResponseCache(max_entries=100, max_bytes=small.num_bytes * 2)
    cache.put(b"1", small)
    cache.put(b"2", small)
    assert cache.put(b"3", small) == 1
    assert cache.num_bytes == 2 * small.num_bytes

    assert cache.put(b"big", response("x" * 10_000)) == 0
    assert cache.get(b"big") is None and cache.num_entries == 2


def test_logprobs_count_towards_the_size() -> None:
    assert response("abc", num_logprobs=5).num_bytes > response("abc").num_bytes


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache = ResponseCache(max_entries=4, max_bytes=1 << 20)
    cache.put(b"k", response("short"))
    cache.put(b"k", response("a longer text"))
    assert cache.num_entries == 1
    assert cache.num_bytes == response("a longer text").num_bytes


def test_an_empty_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="disable"):
        ResponseCache(max_entries=0, max_bytes=1)
