"""Incremental detokenization: UTF-8 safe, space preserving, stop strings held back then cut."""

from __future__ import annotations

import random

import pytest

from server.engine.detokenizer import IncrementalDetokenizer

TEXTS = [
    "plain ascii text with  double  spaces",
    "accents: héllo, déjà vu, naïve, Ærø",
    "emoji 😀🎉 and CJK 漢字 mixed",
    "def foo(x):\n    return x + 1\n",
]


def stream(tokenizer, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[str, list[str], bool]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids=[10, 20], stop=stop)
    deltas = []
    for token in ids:
        stopped = detok.add(token)
        deltas.append(detok.release(final=False))
        if stopped:
            break
    else:
        detok.flush()
    deltas.append(detok.release(final=True))
    return detok.text, deltas, detok.stopped


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_join_to_the_full_text(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    full, deltas, stopped = stream(tokenizer, ids)
    assert full == text and "".join(deltas) == text and not stopped
    assert all("\ufffd" not in d for d in deltas), "a delta split a multi-byte character"


def test_random_byte_tokens_never_lose_text(tokenizer) -> None:
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(256) for _ in range(rng.randrange(1, 30))]
        full, deltas, _ = stream(tokenizer, ids)
        assert "".join(deltas) == full == tokenizer.decode(ids)


def test_cut_inside_a_multibyte_character_is_flushed_at_the_end(tokenizer) -> None:
    ids = tokenizer.encode("ok 😀")[:-2]  # two of the emoji's four bytes
    full, deltas, _ = stream(tokenizer, ids)
    assert "".join(deltas) == full == tokenizer.decode(ids)


def test_stop_string_spanning_tokens(tokenizer) -> None:
    ids = tokenizer.encode("first line\nSTOP here and more")
    full, deltas, stopped = stream(tokenizer, ids, stop=("\nSTOP",))
    assert stopped and full == "first line" and "".join(deltas) == "first line"


def test_false_start_of_a_stop_string_is_released(tokenizer) -> None:
    ids = tokenizer.encode("a ST b STx c")
    full, deltas, stopped = stream(tokenizer, ids, stop=("STOP",))
    assert not stopped and "".join(deltas) == full == "a ST b STx c"
    # While "ST" could still begin "STOP", it was held back.
    held = IncrementalDetokenizer(tokenizer, [], stop=("STOP",))
    for token in tokenizer.encode("a ST"):
        held.add(token)
    assert held.release(final=False) == "a "
    assert held.release(final=True) == "ST"


def test_earliest_of_several_stop_strings_wins(tokenizer) -> None:
    ids = tokenizer.encode("abc XYZ def")
    full, _, stopped = stream(tokenizer, ids, stop=("def", "XY"))
    assert stopped and full == "abc "
