"""Bad requests: a prompt 400 with an OpenAI error body each, and the server keeps serving."""

from __future__ import annotations

import dataclasses
from http import HTTPStatus
from typing import Any

import openai
import pytest

from server.api.config import ServerConfig
from server.engine.engine import LLMEngine, RequestOutput
from server.engine.params import DrafterKind
from tests.api.support import (
    DRAFT_NAME,
    ENGINE_CONFIG,
    TARGET_NAME,
    Served,
    StartServer,
    build_tiny_engine,
    stream_events,
)

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
GOOD_COMPLETION = {"model": TARGET_NAME, "prompt": "ok", "max_tokens": 3, "temperature": 0}
GOOD_CHAT = {"model": TARGET_NAME, "messages": [{"role": "user", "content": "ok"}]}
# Longer than the tiny model's 512-token context (one token per byte).
TOO_LONG_PROMPT = "x" * 600
TINY_CONTEXT = 512

# (endpoint, body, parameter the error should name or None)
BAD_BODIES: list[tuple[str, Any, str | None]] = [
    (COMPLETIONS, {"model": TARGET_NAME}, "prompt"),
    (COMPLETIONS, {"prompt": 5}, "prompt"),
    (COMPLETIONS, {"prompt": ["a", "b"]}, "prompt"),
    (COMPLETIONS, {"prompt": ""}, "prompt"),
    (COMPLETIONS, {"prompt": [1, 10_000]}, "prompt"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": -3}, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "temperature": -0.5}, "temperature"),
    (COMPLETIONS, {"prompt": "x", "temperature": "hot"}, "temperature"),
    (COMPLETIONS, {"prompt": "x", "top_p": 0}, "top_p"),
    (COMPLETIONS, {"prompt": "x", "top_p": 1.5}, "top_p"),
    (COMPLETIONS, {"prompt": "x", "top_k": -1}, "top_k"),
    (COMPLETIONS, {"prompt": "x", "seed": -1}, "seed"),
    (COMPLETIONS, {"prompt": "x", "n": 2}, "n"),
    (COMPLETIONS, {"prompt": "x", "best_of": 3}, "best_of"),
    (COMPLETIONS, {"prompt": "x", "echo": True}, "echo"),
    (COMPLETIONS, {"prompt": "x", "logprobs": 50}, "logprobs"),
    (COMPLETIONS, {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (COMPLETIONS, {"prompt": "x", "stop": [""]}, "stop"),
    (COMPLETIONS, {"prompt": "x", "model": "gpt-4"}, "model"),
    (COMPLETIONS, {"prompt": "x", "model": DRAFT_NAME}, "model"),
    (COMPLETIONS, {"prompt": "x", "stream": "yes please"}, "stream"),
    (COMPLETIONS, {"prompt": "x", "speculative": {"k": 0}}, "speculative.k"),
    (COMPLETIONS, {"prompt": "x", "speculative": {"drafter": "magic"}}, "speculative.drafter"),
    (
        COMPLETIONS,
        {"prompt": "x", "speculative": {"enabled": False, "drafter": "model"}},
        "speculative",
    ),
    (CHAT, {"model": TARGET_NAME}, "messages"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"messages": "hello"}, "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    (CHAT, {"messages": [{"content": "hi"}]}, "messages[0].role"),
    (CHAT, {**GOOD_CHAT, "n": 3}, "n"),
    (CHAT, {**GOOD_CHAT, "top_logprobs": 2}, "top_logprobs"),
    (CHAT, {**GOOD_CHAT, "max_tokens": 0}, "max_tokens"),
    (CHAT, {**GOOD_CHAT, "presence_penalty": 1.0}, "presence_penalty"),
]


def assert_openai_error(response: Any, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    return error


@pytest.mark.parametrize(("path", "body", "param"), BAD_BODIES)
def test_bad_request_is_a_400_and_the_next_one_is_served(
    served: Served, path: str, body: Any, param: str | None
) -> None:
    response = served.http.post(path, json=body)
    assert_openai_error(response, HTTPStatus.BAD_REQUEST, param)
    assert served.http.post(COMPLETIONS, json=GOOD_COMPLETION).status_code == HTTPStatus.OK


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b"", b'"text"'], ids=["broken", "array", "empty", "string"]
)
def test_body_that_is_not_a_json_object(served: Served, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    response = served.http.post(COMPLETIONS, content=raw, headers=headers)
    assert_openai_error(response, HTTPStatus.BAD_REQUEST, None)
    assert served.http.post(COMPLETIONS, json=GOOD_COMPLETION).status_code == HTTPStatus.OK


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_the_context_names_the_limit(served: Served, stream: bool) -> None:
    body = {"prompt": TOO_LONG_PROMPT, "max_tokens": 4, "stream": stream}
    error = assert_openai_error(
        served.http.post(COMPLETIONS, json=body), HTTPStatus.BAD_REQUEST, "prompt"
    )
    assert str(TINY_CONTEXT) in error["message"]


def test_chat_prompt_over_the_context_without_max_tokens(served: Served) -> None:
    body = {"messages": [{"role": "user", "content": TOO_LONG_PROMPT}]}
    error = assert_openai_error(
        served.http.post(CHAT, json=body), HTTPStatus.BAD_REQUEST, "messages"
    )
    assert str(TINY_CONTEXT) in error["message"]


def test_openai_client_raises_bad_request(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        served.client.completions.create(model=TARGET_NAME, prompt="x", n=2)
    assert raised.value.param == "n"


def test_unknown_fields_are_ignored(served: Served) -> None:
    body = {**GOOD_COMPLETION, "frobnicate": True, "metadata": {"a": 1}, "user": "tester"}
    assert served.http.post(COMPLETIONS, json=body).status_code == HTTPStatus.OK


def test_unknown_path_and_method_have_error_bodies(served: Served) -> None:
    missing = served.http.get("/v1/nothing")
    assert missing.status_code == HTTPStatus.NOT_FOUND
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = served.http.get(COMPLETIONS)
    assert wrong_method.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert "error" in wrong_method.json()


class FailingEngine(LLMEngine):
    """An engine that fails one step, as a bug deep in the engine would."""

    # Steps that still succeed before the failing one; None: never fail.
    steps_before_failure: int | None = None

    def step(self) -> list[RequestOutput]:
        if self.steps_before_failure == 0:
            self.steps_before_failure = None
            raise RuntimeError("simulated engine failure")
        if self.steps_before_failure is not None:
            self.steps_before_failure -= 1
        return super().step()


def test_internal_errors_are_500s_with_error_bodies(
    serve_engine: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = build_tiny_engine(ENGINE_CONFIG, engine_class=FailingEngine)
    assert isinstance(engine, FailingEngine)
    served = serve_engine(engine, ServerConfig())

    # A failure in the HTTP layer itself (here: tokenizing the prompt).
    def broken_encode(*args: object, **kwargs: object) -> list[int]:
        raise RuntimeError("simulated tokenizer failure")

    monkeypatch.setattr(engine.tokenizer, "encode", broken_encode)
    response = served.http.post(COMPLETIONS, json=GOOD_COMPLETION)
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert response.json()["error"]["type"] == "server_error"
    assert "simulated" not in response.json()["error"]["message"]
    token_prompt = {**GOOD_COMPLETION, "prompt": [104, 105]}
    assert served.http.post(COMPLETIONS, json=token_prompt).status_code == HTTPStatus.OK

    # A failed engine step: the plain request gets a 500, the stream an in-band error event.
    engine.steps_before_failure = 0
    response = served.http.post(COMPLETIONS, json=token_prompt)
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert response.json()["error"]["type"] == "server_error"

    engine.steps_before_failure = 1  # the prefill succeeds, so the stream has started
    long_prompt = {**token_prompt, "max_tokens": 40, "ignore_eos": True, "stream": True}
    events = stream_events(served.http, COMPLETIONS, long_prompt)
    assert events[-1]["error"]["type"] == "server_error"
    assert served.http.post(COMPLETIONS, json=token_prompt).status_code == HTTPStatus.OK


def test_model_drafter_without_a_draft_model(serve_engine: StartServer) -> None:
    config = dataclasses.replace(ENGINE_CONFIG, drafter=DrafterKind.NGRAM)
    engine = build_tiny_engine(config, with_draft=False)
    served = serve_engine(engine, ServerConfig())
    body = {**GOOD_COMPLETION, "speculative": {"drafter": "model"}}
    assert_openai_error(
        served.http.post(COMPLETIONS, json=body), HTTPStatus.BAD_REQUEST, "speculative.drafter"
    )
    response = served.http.post(COMPLETIONS, json=GOOD_COMPLETION)
    assert response.json()["speculative"]["drafter"] == "ngram"
    models = served.http.get("/v1/models").json()["data"]
    assert [model["id"] for model in models] == [TARGET_NAME]
