"""Both caches through the HTTP server and the openai client: answers, flags, usage and metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from server.api.config import ServerConfig
from tests.api.support import (
    ENGINE_CONFIG,
    TARGET_NAME,
    Served,
    build_tiny_engine,
    extension,
    metric_value,
    serve,
    shut_down,
    stream_events,
)

PREFIX = "specserve_"
CACHE_SIZE = 8
SYSTEM = "You review Python code. Be brief, exact and kind. " * 4
BASE: dict[str, Any] = {
    "model": TARGET_NAME,
    "prompt": "def add(a, b):",
    "max_tokens": 12,
    "temperature": 0.0,
    "ignore_eos": True,
}
# Each differs from BASE in one thing that can change the output.
VARIANTS: dict[str, dict[str, Any]] = {
    "prompt": {"prompt": "def add(a, c):"},
    "max_tokens": {"max_tokens": 11},
    "stop": {"stop": ["\n"]},
    "ignore_eos": {"ignore_eos": False},
    "logprobs": {"logprobs": 1},
    "seeded sampling": {"temperature": 0.7, "seed": 5},
    "top_k": {"temperature": 0.7, "seed": 0, "top_k": 3},
    "top_p": {"temperature": 0.7, "seed": 0, "top_p": 0.5},
    "min_p": {"temperature": 0.7, "seed": 0, "min_p": 0.2},
}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """A tiny server with both caches on (the shared test server has neither)."""
    engine = build_tiny_engine(dataclasses.replace(ENGINE_CONFIG, enable_prefix_cache=True))
    running = serve(engine, ServerConfig(response_cache_size=CACHE_SIZE))
    yield running
    shut_down(running)


def counter(served: Served, suffix: str) -> float:
    return metric_value(served.http, f"{PREFIX}{suffix}_total")


def complete(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    response = served.http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_repeated_greedy_request_comes_from_the_cache(served: Served) -> None:
    body = {**BASE, "prompt": "class Stack:"}
    hits, misses = counter(served, "response_cache_hits"), counter(served, "response_cache_misses")

    first = served.client.completions.create(**_client_args(body))
    second = served.client.completions.create(**_client_args(body))

    assert first.model_extra is not None and "cached_response" not in first.model_extra
    assert extension(second, "cached_response") is True
    assert second.choices[0].text == first.choices[0].text
    assert second.choices[0].finish_reason == first.choices[0].finish_reason
    assert extension(second, "speculative") == extension(first, "speculative")
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens
    assert counter(served, "response_cache_hits") == hits + 1
    assert counter(served, "response_cache_misses") == misses + 1


def test_a_cached_stream_equals_the_original_stream(served: Served) -> None:
    body = {**BASE, "prompt": "for i in range(3):", "stream_options": {"include_usage": True}}
    original = stream_events(served.http, "/v1/completions", body)
    replayed = stream_events(served.http, "/v1/completions", body)

    assert original[-1] == replayed[-1] == "[DONE]"
    assert _content(replayed) == _content(original)
    assert "cached_response" not in _finish_chunk(original)
    assert _finish_chunk(replayed)["cached_response"] is True
    assert _finish_chunk(replayed)["speculative"] == _finish_chunk(original)["speculative"]
    assert (
        "".join(_content(original))
        == complete(served, BASE | {"prompt": body["prompt"]})["choices"][0]["text"]
    )


def test_chat_answers_are_cached_too(served: Served) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    args = {"model": TARGET_NAME, "messages": messages, "max_tokens": 8, "temperature": 0}
    first = served.client.chat.completions.create(**args)
    second = served.client.chat.completions.create(**args)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert extension(second, "cached_response") is True


def test_a_cached_chat_stream_equals_the_original_through_the_client(served: Served) -> None:
    args = {
        "model": TARGET_NAME,
        "messages": [{"role": "user", "content": "stream me, twice"}],
        "max_tokens": 10,
        "temperature": 0,
        "stream": True,
    }
    streams = [list(served.client.chat.completions.create(**args)) for _ in range(2)]

    deltas = [[c.choices[0].delta.content for c in chunks if c.choices] for chunks in streams]
    assert deltas[1] == deltas[0] and "".join(filter(None, deltas[0]))
    last = [chunks[-1] for chunks in streams]
    assert last[0].model_extra is not None and "cached_response" not in last[0].model_extra
    assert extension(last[1], "cached_response") is True
    assert extension(last[1], "speculative") == extension(last[0], "speculative")


@pytest.mark.parametrize("change", sorted(VARIANTS))
def test_a_different_request_is_never_answered_from_the_cache(served: Served, change: str) -> None:
    complete(served, BASE)  # cached now
    assert complete(served, BASE).get("cached_response") is True
    assert "cached_response" not in complete(served, {**BASE, **VARIANTS[change]})


def test_seeded_sampling_is_keyed_by_the_speculation_settings(served: Served) -> None:
    body = {**BASE, "temperature": 0.9, "seed": 11, "speculative": {"k": 2}}
    complete(served, body)
    assert complete(served, body).get("cached_response") is True
    assert "cached_response" not in complete(served, {**body, "speculative": {"k": 3}})
    assert "cached_response" not in complete(served, {**body, "speculative": {"enabled": False}})


def test_unseeded_sampling_is_never_cached(served: Served) -> None:
    body = {**BASE, "temperature": 0.9, "prompt": "import random"}
    misses = counter(served, "response_cache_misses")
    for _ in range(2):
        assert "cached_response" not in complete(served, body)
    assert counter(served, "response_cache_misses") == misses  # not even looked up


def test_a_request_can_opt_out_of_the_response_cache(served: Served) -> None:
    body = {**BASE, "prompt": "while True:", "cache": {"response": False}}
    complete(served, body)
    assert "cached_response" not in complete(served, body)
    # Nothing was stored either: the first request allowed to use the cache misses.
    assert "cached_response" not in complete(served, {**body, "cache": {"response": True}})


def test_shared_system_prompt_reports_cached_tokens_and_moves_the_metrics(served: Served) -> None:
    queries = counter(served, "prefix_cache_queries")
    hits = counter(served, "prefix_cache_hits")
    usages = []
    for question in ("What does this do?", "Is it fast?"):
        chat = served.client.chat.completions.create(
            model=TARGET_NAME,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            max_tokens=4,
            temperature=0,
            extra_body={"cache": {"response": False}},
        )
        assert chat.usage is not None
        usages.append(chat.usage)

    cached = usages[1].prompt_tokens_details.cached_tokens
    assert cached >= len(SYSTEM)  # one token per byte; the template adds a few more
    assert counter(served, "prefix_cache_queries") - queries == sum(u.prompt_tokens for u in usages)
    assert (
        counter(served, "prefix_cache_hits") - hits
        == usages[0].prompt_tokens_details.cached_tokens + cached
    )
    assert metric_value(served.http, f"{PREFIX}prefix_cache_hit_rate") > 0


def test_a_request_can_opt_out_of_the_prefix_cache(served: Served) -> None:
    body = {**BASE, "prompt": SYSTEM, "cache": {"response": False}}
    complete(served, body)
    private = complete(served, {**body, "cache": {"response": False, "prefix": False}})
    assert private["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert complete(served, body)["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_response_cache_size_and_evictions_are_exported(served: Served) -> None:
    for index in range(CACHE_SIZE + 2):
        complete(served, {**BASE, "prompt": f"x = {index}", "max_tokens": 2})
    assert metric_value(served.http, f"{PREFIX}response_cache_entries") == CACHE_SIZE
    assert metric_value(served.http, f"{PREFIX}response_cache_bytes") > 0
    assert counter(served, "response_cache_evictions") >= 2


def _client_args(body: dict[str, Any]) -> dict[str, Any]:
    """Split a raw body into the openai client's arguments and its `extra_body`."""
    known = {"model", "prompt", "max_tokens", "temperature", "seed", "stop", "logprobs"}
    args = {name: value for name, value in body.items() if name in known}
    args["extra_body"] = {name: value for name, value in body.items() if name not in known}
    return args


def _content(events: list[Any]) -> list[str]:
    return [c["text"] for e in events[:-1] for c in e["choices"] if c["text"]]


def _finish_chunk(events: list[Any]) -> dict[str, Any]:
    (chunk,) = [e for e in events[:-1] if any(c["finish_reason"] for c in e["choices"])]
    return chunk
