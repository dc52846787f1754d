"""Server-sent events: chunk shapes, and joined deltas equal to the non-streamed text.

The tiny model emits random bytes, so outputs are full of multi-byte UTF-8 characters cut across
tokens (and invalid sequences): the hold-back of half characters and of possible stop strings is
exercised at every max_tokens cut, for greedy and seeded sampled requests alike.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.api.support import TARGET_NAME, Served, stream_events

# Prompts mixing ASCII, accented letters, CJK and emoji (multi-byte characters in the prompt).
PROMPTS = (
    "def fib(n):",
    "Café naïve façade",
    "東京タワー",
    "emoji 😀🚀 ✨",
    "Straße → déjà vu",
)
NUM_RANDOM_CASES = 24
MAX_RANDOM_TOKENS = 40
RANDOM_SEED = 1234
# Long enough to contain a stop string taken from its middle, in a few dozen bytes.
STOP_SOURCE_TOKENS = 48


def completion_text(served: Served, body: dict[str, Any]) -> tuple[str, str]:
    response = served.http.post("/v1/completions", json={**body, "stream": False})
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    return choice["text"], choice["finish_reason"]


def streamed_completion(served: Served, body: dict[str, Any]) -> tuple[str, str]:
    events = stream_events(served.http, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(choice["text"] for chunk in chunks for choice in chunk["choices"])
    reasons = [
        c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]
    ]
    assert len(reasons) == 1
    return text, reasons[0]


def random_cases() -> list[dict[str, Any]]:
    rng = random.Random(RANDOM_SEED)
    cases = []
    for index in range(NUM_RANDOM_CASES):
        case: dict[str, Any] = {
            "model": TARGET_NAME,
            "prompt": rng.choice(PROMPTS) + rng.choice(["", " ", "\n", "é", "😀"]),
            "max_tokens": rng.randint(1, MAX_RANDOM_TOKENS),
            "ignore_eos": rng.random() < 0.5,
            "speculative": {"drafter": rng.choice(["model", "ngram", "none"])},
        }
        if index % 2:  # half sampled with a seed, which is just as deterministic
            case |= {"temperature": 1.0, "seed": rng.randint(0, 10_000)}
        else:
            case |= {"temperature": 0.0}
        cases.append(case)
    return cases


@pytest.mark.parametrize("body", random_cases(), ids=lambda body: f"max{body['max_tokens']}")
def test_streamed_text_equals_non_streamed_text(served: Served, body: dict[str, Any]) -> None:
    assert streamed_completion(served, body) == completion_text(served, body)


def test_chat_stream_shape(served: Served) -> None:
    body = {
        "model": TARGET_NAME,
        "messages": [{"role": "user", "content": "Grüße 👋"}],
        "max_tokens": 12,
        "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    events = stream_events(served.http, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    opening, *content, finish, usage = events[:-1]
    assert opening["object"] == "chat.completion.chunk"
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in content)
    assert all(chunk["choices"][0]["delta"]["content"] for chunk in content)
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
    assert finish["speculative"]["drafter"] == "model"
    assert usage["choices"] == []
    assert len({chunk["id"] for chunk in events[:-1]}) == 1

    streamed = "".join(chunk["choices"][0]["delta"]["content"] for chunk in content)
    plain = served.http.post("/v1/chat/completions", json=body).json()
    assert streamed == plain["choices"][0]["message"]["content"]
    assert usage["usage"] == plain["usage"]


def test_usage_chunk_only_when_asked(served: Served) -> None:
    body = {"model": TARGET_NAME, "prompt": "abc", "max_tokens": 4, "temperature": 0.0}
    events = stream_events(served.http, "/v1/completions", body)
    assert all("usage" not in chunk for chunk in events[:-1])


def test_openai_client_streams(served: Served) -> None:
    stream = served.client.chat.completions.create(
        model=TARGET_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    plain = served.client.chat.completions.create(
        model=TARGET_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
        temperature=0.0,
    )
    assert text == plain.choices[0].message.content


def long_output(served: Served, prompt: str) -> str:
    body = {
        "prompt": prompt,
        "max_tokens": STOP_SOURCE_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    text, _ = completion_text(served, body)
    return text


def stop_candidates(text: str) -> list[tuple[int, str]]:
    """(position, 3-character substring) pairs free of U+FFFD, in order of position."""
    return [
        (start, text[start : start + 3])
        for start in range(1, len(text) - 3)
        if "\ufffd" not in text[start : start + 3]
    ]


@pytest.mark.parametrize("prompt", PROMPTS[:3])
@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_spanning_tokens(served: Served, prompt: str, stream: bool) -> None:
    """A stop string from the middle of the output cuts the text just before it."""
    full = long_output(served, prompt)
    candidates = stop_candidates(full)
    if not candidates:
        pytest.skip("the output has no clean three-character window")
    _, stop = candidates[len(candidates) // 2]
    body = {
        "prompt": prompt,
        "max_tokens": STOP_SOURCE_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
        "stop": [stop],
    }
    run = streamed_completion if stream else completion_text
    text, reason = run(served, body)
    assert text == full[: full.index(stop)]
    assert reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_false_start_of_a_stop_string_is_released(served: Served, stream: bool) -> None:
    """Text that begins a stop string but never completes it is held back, then sent."""
    prompt = PROMPTS[0]
    full = long_output(served, prompt)
    candidates = stop_candidates(full)
    assert candidates
    _, start = candidates[0]
    # The first two characters occur in the output; the whole string cannot.
    stop = start[:2] + "\x00never\x00"
    assert stop not in full
    body = {
        "prompt": prompt,
        "max_tokens": STOP_SOURCE_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
        "stop": stop,
    }
    run = streamed_completion if stream else completion_text
    assert run(served, body) == (full, "length")


def test_random_cases_cover_multibyte_characters(served: Served) -> None:
    """The cases above are only worth running if outputs split real multi-byte characters."""
    texts = [completion_text(served, body)[0] for body in random_cases()]
    multibyte = [ch for text in texts for ch in text if len(ch.encode()) > 1 and ch != "\ufffd"]
    assert multibyte


def test_streamed_logprobs_cover_every_token(served: Served) -> None:
    body = {
        "model": TARGET_NAME,
        "messages": [{"role": "user", "content": "naïve"}],
        "max_tokens": 16,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 1,
        "stream_options": {"include_usage": True},
    }
    events = stream_events(served.http, "/v1/chat/completions", body)[:-1]
    entries = [
        entry
        for chunk in events
        for choice in chunk["choices"]
        if choice["logprobs"] is not None
        for entry in choice["logprobs"]["content"]
    ]
    plain = served.http.post("/v1/chat/completions", json=body).json()
    assert entries == plain["choices"][0]["logprobs"]["content"]
    assert len(entries) == events[-1]["usage"]["completion_tokens"]
