"""Stops that fall inside an accepted block: nothing after them is emitted or counted."""

from __future__ import annotations

import pytest

from server.engine.params import FinishReason, SamplingParams, SpecParams
from tests.engine.helpers import VOCAB_SIZE, make_engine
from tests.tiny import tiny_model

NUM_DRAFT = 4  # with an always-right draft, each step emits 5 tokens
LONG = 24
PROMPT = [72, 101, 108, 108, 111, 32, 119]


@pytest.fixture(scope="module")
def target():
    return tiny_model(VOCAB_SIZE, seed=5, head_scale=4.0)


@pytest.fixture(scope="module")
def reference(target, tokenizer) -> list[int]:
    engine = make_engine(target, tokenizer)
    sampling = SamplingParams(max_tokens=LONG, ignore_eos=True)
    (out,) = engine.generate([PROMPT], sampling, SpecParams(num_draft_tokens=1))
    return out.token_ids


def run(target, tokenizer, sampling: SamplingParams, eos: set[int] | None = None):
    engine = make_engine(target, tokenizer, draft=target)
    if eos is not None:
        engine.eos_token_ids = frozenset(eos)
    (out,) = engine.generate([PROMPT], sampling, SpecParams(num_draft_tokens=NUM_DRAFT))
    assert engine.target.allocator.num_used == 0 and engine.draft.allocator.num_used == 0
    return out


@pytest.mark.parametrize("max_tokens", range(1, 13))
def test_max_tokens_at_every_position(target, tokenizer, reference, max_tokens) -> None:
    out = run(target, tokenizer, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
    assert out.token_ids == reference[:max_tokens]
    assert out.finish_reason is FinishReason.LENGTH


def first_occurrences(tokens: list[int]) -> list[int]:
    return [i for i, t in enumerate(tokens) if t not in tokens[:i]]


def test_stop_token_ids_at_every_position(target, tokenizer, reference) -> None:
    positions = first_occurrences(reference)[:10]
    assert len(positions) >= 5, "reference output too repetitive to test stops"
    for position in positions:
        sampling = SamplingParams(
            max_tokens=LONG, ignore_eos=True, stop_token_ids=(reference[position],)
        )
        out = run(target, tokenizer, sampling)
        assert out.token_ids == reference[: position + 1]
        assert out.finish_reason is FinishReason.STOP
        assert out.stats.num_accepted_tokens <= position


def test_eos_at_every_position(target, tokenizer, reference) -> None:
    for position in first_occurrences(reference)[:10]:
        out = run(target, tokenizer, SamplingParams(max_tokens=LONG), eos={reference[position]})
        assert out.token_ids == reference[: position + 1]
        assert out.finish_reason is FinishReason.STOP


def test_ignore_eos_runs_to_max_tokens(target, tokenizer, reference) -> None:
    sampling = SamplingParams(max_tokens=LONG, ignore_eos=True)
    out = run(target, tokenizer, sampling, eos={reference[2]})
    assert out.token_ids == reference


def test_stop_string_cuts_text_and_tokens(target, tokenizer, reference) -> None:
    full_text = tokenizer.decode(reference, skip_special_tokens=True)
    windows = [full_text[i : i + 2] for i in range(3, len(full_text) - 1)]
    clean = [w for w in windows if "\ufffd" not in w and full_text.index(w) >= 3]
    assert clean, f"reference text {full_text!r} has no clean two-character window"
    stop = clean[0]
    out = run(target, tokenizer, SamplingParams(max_tokens=LONG, ignore_eos=True, stop=(stop,)))
    assert out.text == full_text[: full_text.index(stop)]
    assert out.finish_reason is FinishReason.STOP
    assert len(out.token_ids) < LONG
