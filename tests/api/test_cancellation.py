"""Clients that leave free their KV blocks at once; a full queue answers 503 with Retry-After."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import httpx
import pytest

from server.api.config import ServerConfig
from server.engine.engine import LLMEngine, RequestOutput
from tests.api.support import (
    ENGINE_CONFIG,
    TARGET_NAME,
    Served,
    StartServer,
    build_tiny_engine,
    metric_value,
    wait_until,
)

KV_USED = "specserve_kv_cache_blocks_used"
TARGET_LABELS = {"model": "target"}
DRAFT_LABELS = {"model": "draft"}
ABORTED = ("specserve_request_success_total", {"finished_reason": "abort"})
# A request long enough to be still running when its client leaves (seconds of tiny-model steps).
LONG_BODY = {
    "model": TARGET_NAME,
    "prompt": "count with me:",
    "max_tokens": 480,
    "temperature": 0.0,
    "ignore_eos": True,
    "speculative": {"enabled": False},
}
# Cancellation must free blocks within a second or two: one disconnect poll plus one step.
FREED_WITHIN_S = 2.0
STARTED_WITHIN_S = 5.0
CLIENT_GIVES_UP_S = 0.5
NUM_CHUNKS_BEFORE_LEAVING = 3


def blocks_in_use(served: Served) -> float:
    target = metric_value(served.http, KV_USED, TARGET_LABELS)
    return target + metric_value(served.http, KV_USED, DRAFT_LABELS)


def test_closed_stream_frees_its_blocks(served: Served) -> None:
    aborted_before = metric_value(served.http, *ABORTED)
    with httpx.Client(base_url=served.url, timeout=STARTED_WITHIN_S) as client:
        with client.stream("POST", "/v1/completions", json={**LONG_BODY, "stream": True}) as events:
            lines = events.iter_lines()
            for _ in range(NUM_CHUNKS_BEFORE_LEAVING):
                next(lines)
            assert blocks_in_use(served) > 0
        # Leaving the block closes the connection mid-stream.
    assert wait_until(lambda: blocks_in_use(served) == 0, FREED_WITHIN_S)
    assert metric_value(served.http, *ABORTED) == aborted_before + 1


def test_client_that_gives_up_on_a_plain_request_frees_its_blocks(served: Served) -> None:
    aborted_before = metric_value(served.http, *ABORTED)
    with httpx.Client(base_url=served.url, timeout=CLIENT_GIVES_UP_S) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/completions", json=LONG_BODY)
    assert wait_until(lambda: blocks_in_use(served) == 0, FREED_WITHIN_S)
    assert metric_value(served.http, *ABORTED) == aborted_before + 1
    # The server is still fine.
    body = {"model": TARGET_NAME, "prompt": "ok", "max_tokens": 2}
    assert served.http.post("/v1/completions", json=body).status_code == HTTPStatus.OK


class GatedEngine(LLMEngine):
    """An engine whose steps wait for a gate: requests pile up in its queue."""

    gate: threading.Event

    def step(self) -> list[RequestOutput]:
        self.gate.wait()
        return super().step()


def test_full_queue_answers_503_with_retry_after(serve_engine: StartServer) -> None:
    engine = build_tiny_engine(ENGINE_CONFIG, engine_class=GatedEngine)
    assert isinstance(engine, GatedEngine)
    gate = engine.gate = threading.Event()
    served = serve_engine(engine, ServerConfig(max_queued=1))
    body = {"model": TARGET_NAME, "prompt": "hi", "max_tokens": 4, "temperature": 0.0}
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(served.http.post, "/v1/completions", json=body)
            # The first request waits in the engine's queue, filling it.
            assert wait_until(lambda: served.http.get("/health").json()["num_waiting"] >= 1, 5.0)

            refused = served.http.post("/v1/completions", json=body)
            assert refused.status_code == HTTPStatus.SERVICE_UNAVAILABLE
            assert int(refused.headers["retry-after"]) >= 1
            error = refused.json()["error"]
            assert error["code"] == "queue_full"
            assert set(error) == {"message", "type", "param", "code"}
            streamed = served.http.post("/v1/completions", json={**body, "stream": True})
            assert streamed.status_code == HTTPStatus.SERVICE_UNAVAILABLE

            gate.set()
            assert first.result().status_code == HTTPStatus.OK
        assert served.http.post("/v1/completions", json=body).status_code == HTTPStatus.OK
    finally:
        gate.set()
