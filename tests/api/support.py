"""Test support: a real uvicorn server on 127.0.0.1 serving a tiny float32 engine, and helpers.

The engine's target and draft are tiny random models with the same weights, so the draft's
proposals are accepted and speculation shows in the statistics; outputs are random bytes, which
exercises UTF-8 hold-back in the streaming path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx
import openai
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from server.api.app import create_app
from server.api.config import ServedModels, ServerConfig
from server.engine.engine import LLMEngine
from server.engine.params import EngineConfig
from tests.tiny import tiny_model, tiny_tokenizer

TARGET_NAME = "tiny-target"
DRAFT_NAME = "tiny-draft"
LOOPBACK = "127.0.0.1"
# Room for 16 concurrent sequences of the whole context in both pools (fp32, 2 layers).
TEST_KV_CACHE_BYTES = 16 << 20
TEST_BLOCK_SIZE = 16
# Random heads are nearly flat; sharpening them makes greedy choices robust to batching noise.
HEAD_SCALE = 4.0
# Every prefix lives in one request here, and blocks must return to the pool on cancel.
# The draft drafts up to k tokens whatever its confidence, so multi-token drafts get verified.
ENGINE_CONFIG = EngineConfig(
    kv_cache_bytes=TEST_KV_CACHE_BYTES,
    block_size=TEST_BLOCK_SIZE,
    enable_prefix_cache=False,
    draft_confidence_threshold=0.0,
)
SERVER_START_TIMEOUT_S = 10.0
POLL_S = 0.02
HTTP_TIMEOUT_S = 60.0
DUMMY_API_KEY = "sk-test"


def build_tiny_engine(
    config: EngineConfig = ENGINE_CONFIG,
    engine_class: type[LLMEngine] = LLMEngine,
    with_draft: bool = True,
) -> LLMEngine:
    tokenizer = tiny_tokenizer()
    vocab_size = len(tokenizer)
    target = tiny_model(vocab_size, seed=0, head_scale=HEAD_SCALE)
    draft = tiny_model(vocab_size, seed=0, head_scale=HEAD_SCALE) if with_draft else None
    return engine_class(target, tokenizer, [tokenizer.eos_token_id], config, draft=draft)


class ServerThread:
    """uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, host=LOOPBACK, port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(POLL_S)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{LOOPBACK}:{port}"


@dataclass
class Served:
    """A running test server and clients pointed at it."""

    server: ServerThread
    engine: LLMEngine
    http: httpx.Client
    client: openai.OpenAI

    @property
    def url(self) -> str:
        return self.server.url


# Starts another server for one test (the `serve_engine` fixture).
StartServer = Callable[[LLMEngine, ServerConfig], Served]


def serve(
    engine: LLMEngine,
    config: ServerConfig | None = None,
    models: ServedModels | None = None,
    http_timeout_s: float = HTTP_TIMEOUT_S,
) -> Served:
    models = models or ServedModels(TARGET_NAME, DRAFT_NAME if engine.draft else None)
    app = create_app(engine, models, config or ServerConfig())
    server = ServerThread(app)
    server.start()
    http = httpx.Client(base_url=server.url, timeout=http_timeout_s)
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=DUMMY_API_KEY, max_retries=0, timeout=http_timeout_s
    )
    return Served(server, engine, http, client)


def shut_down(served: Served) -> None:
    served.http.close()
    served.client.close()
    served.server.stop()


# ---------------------------------------------------------------------- raw HTTP helpers

SSE_PREFIX = "data: "
SSE_DONE = "[DONE]"


def stream_events(http: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    """POST a streaming request; return its decoded events, "[DONE]" kept as the string."""
    events: list[Any] = []
    with http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == HTTPStatus.OK, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith(SSE_PREFIX), line
            payload = line[len(SSE_PREFIX) :]
            events.append(payload if payload == SSE_DONE else json.loads(payload))
    return events


def metric_value(http: httpx.Client, name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one series in /metrics; 0 when it is not exported yet."""
    text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return sample.value
    return 0.0


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL_S)
    return condition()


def extension(response: BaseModel, name: str) -> Any:
    """A field the OpenAI client does not know (e.g. `speculative`), from its extras."""
    extra = response.model_extra
    assert extra is not None and name in extra, f"no {name!r} in the response"
    return extra[name]
