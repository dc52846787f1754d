"""Routing over HTTP: tiers by name, `auto` decisions in responses and /metrics, escalation.

The tiny engine's target and draft share their weights, so the tiers give the same text; which
engine answered shows in the routing block and in the per-tier token counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import httpx
import openai
import pytest

from server.api.app import create_app
from server.api.config import ServedModels, ServerConfig
from server.router.config import RouterConfig
from server.router.escalation import EscalationConfig
from tests.api.support import (
    DRAFT_NAME,
    DUMMY_API_KEY,
    HTTP_TIMEOUT_S,
    TARGET_NAME,
    Served,
    ServerThread,
    build_tiny_engine,
    metric_value,
    serve,
    shut_down,
    stream_events,
    wait_until,
)

PREFIX = "specserve_"
MAX_TOKENS = 6
METRIC_TIMEOUT_S = 5.0
CHAT = {
    "messages": [{"role": "user", "content": "Classify the mood of: what a day!"}],
    "max_tokens": MAX_TOKENS,
    "temperature": 0.0,
    "ignore_eos": True,
}
# Threshold 1 sends every auto request to the small model, 0 every one to the large model.
ALL_SMALL = RouterConfig(threshold=1.0)
ALL_LARGE = RouterConfig(threshold=0.0)
FORCED_ESCALATION = RouterConfig(threshold=1.0, escalation=EscalationConfig(threshold=1.0))


def serve_routing(router_config: RouterConfig, default_model: str | None = None) -> Served:
    """A tiny routing server (tests.api.support.serve, plus the router's configuration)."""
    engine = build_tiny_engine()
    models = ServedModels(TARGET_NAME, DRAFT_NAME, default_model, routing=True)
    app = create_app(engine, models, ServerConfig(), router_config=router_config)
    server = ServerThread(app)
    server.start()
    http = httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S)
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=DUMMY_API_KEY, max_retries=0, timeout=HTTP_TIMEOUT_S
    )
    return Served(server, engine, http, client)


@pytest.fixture(scope="module")
def all_small() -> Iterator[Served]:
    running = serve_routing(ALL_SMALL)
    yield running
    shut_down(running)


@pytest.fixture(scope="module")
def all_large() -> Iterator[Served]:
    running = serve_routing(ALL_LARGE, default_model="auto")
    yield running
    shut_down(running)


@pytest.fixture(scope="module")
def escalating() -> Iterator[Served]:
    running = serve_routing(FORCED_ESCALATION)
    yield running
    shut_down(running)


def chat(served: Served, **fields: Any) -> dict[str, Any]:
    response = served.http.post("/v1/chat/completions", json={**CHAT, **fields})
    assert response.status_code == HTTPStatus.OK, response.text
    return response.json()


def counter(served: Served, suffix: str, labels: dict[str, str] | None = None) -> float:
    return metric_value(served.http, f"{PREFIX}{suffix}_total", labels)


def tier_tokens(served: Served) -> dict[str, float]:
    return {
        tier: counter(served, "tier_generation_tokens", {"tier": tier})
        for tier in ("small", "large")
    }


def wait_for_tokens(served: Served, expected: dict[str, float]) -> dict[str, float]:
    """Per-tier token counts once they reach `expected` (counters update after each step)."""
    wait_until(lambda: tier_tokens(served) == expected, METRIC_TIMEOUT_S)
    return tier_tokens(served)


# ---------------------------------------------------------------------- explicit tiers


@pytest.mark.parametrize(
    ("model", "tier", "served_by"),
    [
        ("small", "small", DRAFT_NAME),
        (DRAFT_NAME, "small", DRAFT_NAME),
        ("large", "large", TARGET_NAME),
        (TARGET_NAME, "large", TARGET_NAME),
    ],
)
def test_explicit_tiers_are_served_by_their_engine(
    all_small: Served, model: str, tier: str, served_by: str
) -> None:
    before = tier_tokens(all_small)
    body = chat(all_small, model=model)
    requested = "small" if model in ("small", DRAFT_NAME) else "large"
    assert body["model"] == served_by
    assert body["routing"] == {
        "requested": requested,
        "tier": tier,
        "score": None,
        "threshold": None,
        "escalated": False,
    }
    expected = {**before, tier: before[tier] + MAX_TOKENS}
    assert wait_for_tokens(all_small, expected) == expected
    drafted = body["speculative"]["drafted_tokens"]
    assert drafted == 0 if tier == "small" else drafted > 0


def test_models_list_the_tiers(all_small: Served) -> None:
    cards = all_small.http.get("/v1/models").json()["data"]
    assert [(card["id"], card["role"]) for card in cards] == [
        (TARGET_NAME, "target"),
        (DRAFT_NAME, "draft"),
        ("small", "tier"),
        ("large", "tier"),
        ("auto", "tier"),
    ]


def test_unknown_model_lists_what_is_served(all_small: Served) -> None:
    response = all_small.http.post("/v1/chat/completions", json={**CHAT, "model": "huge"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    error = response.json()["error"]
    assert error["param"] == "model" and "'auto'" in error["message"]


def test_without_routing_the_small_tiers_are_refused() -> None:
    served = serve(build_tiny_engine())
    try:
        for model in ("small", "auto", DRAFT_NAME):
            response = served.http.post("/v1/chat/completions", json={**CHAT, "model": model})
            assert response.status_code == HTTPStatus.BAD_REQUEST, model
        assert "routing" not in chat(served, model="large")
    finally:
        shut_down(served)


# ---------------------------------------------------------------------- auto


def test_auto_below_the_threshold_goes_small_and_is_counted(all_small: Served) -> None:
    labels = {"requested": "auto", "tier": "small"}
    routed_before = counter(all_small, "routed_requests", labels)
    scored_before = metric_value(all_small.http, f"{PREFIX}routing_score_count")
    body = chat(all_small, model="auto")
    routing = body["routing"]
    assert (routing["requested"], routing["tier"], routing["escalated"]) == ("auto", "small", False)
    assert 0.0 < routing["score"] < routing["threshold"] == 1.0
    assert body["model"] == DRAFT_NAME
    assert counter(all_small, "routed_requests", labels) == routed_before + 1
    assert metric_value(all_small.http, f"{PREFIX}routing_score_count") == scored_before + 1


def test_auto_is_deterministic(all_small: Served, all_large: Served) -> None:
    first, second = chat(all_small, model="auto"), chat(all_small, model="auto")
    assert first["routing"] == second["routing"]
    assert first["choices"] == second["choices"]
    # Same request, same weights, another server: the same score.
    assert chat(all_large, model="auto")["routing"]["score"] == first["routing"]["score"]


def test_default_model_auto_at_threshold_zero_goes_large(all_large: Served) -> None:
    before = tier_tokens(all_large)
    body = chat(all_large)  # names no model: the default, auto
    assert body["routing"]["requested"] == "auto"
    assert body["routing"]["tier"] == "large" and body["model"] == TARGET_NAME
    expected = {**before, "large": before["large"] + MAX_TOKENS}
    assert wait_for_tokens(all_large, expected) == expected


def test_auto_with_a_model_drafter_is_pinned_to_large(all_small: Served) -> None:
    body = chat(all_small, model="auto", speculative={"drafter": "model"})
    assert body["routing"]["tier"] == "large" and body["routing"]["score"] is None


def test_streams_carry_the_routing_block_on_the_finish_chunk(all_small: Served) -> None:
    events = stream_events(all_small.http, "/v1/chat/completions", {**CHAT, "model": "auto"})
    finish = [event for event in events[:-1] if event["choices"][0]["finish_reason"]]
    assert finish[0]["routing"]["tier"] == "small"
    assert all("routing" not in event for event in events[:-1] if event not in finish)


# ---------------------------------------------------------------------- escalation


def test_forced_escalation_redoes_the_answer_on_the_large_model(escalating: Served) -> None:
    before_tokens = tier_tokens(escalating)
    before = counter(escalating, "routing_escalations")
    body = chat(escalating, model="auto")
    routing = body["routing"]
    assert (routing["tier"], routing["escalated"]) == ("large", True)
    assert 0.0 < routing["confidence"] < 1.0
    assert body["model"] == TARGET_NAME
    assert body["choices"][0]["logprobs"] is None  # asked for the check, not shown
    assert counter(escalating, "routing_escalations") == before + 1
    expected = {
        "small": before_tokens["small"] + MAX_TOKENS,
        "large": before_tokens["large"] + MAX_TOKENS,
    }
    assert wait_for_tokens(escalating, expected) == expected


def test_escalation_keeps_requested_logprobs(escalating: Served) -> None:
    body = chat(escalating, model="auto", logprobs=True, top_logprobs=2)
    assert body["routing"]["escalated"]
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == MAX_TOKENS and len(content[0]["top_logprobs"]) == 2


def test_streams_and_explicit_small_requests_never_escalate(escalating: Served) -> None:
    before = counter(escalating, "routing_escalations")
    events = stream_events(escalating.http, "/v1/chat/completions", {**CHAT, "model": "auto"})
    finish = [event for event in events[:-1] if event["choices"][0]["finish_reason"]]
    assert finish[0]["routing"]["tier"] == "small" and not finish[0]["routing"]["escalated"]
    assert chat(escalating, model="small")["routing"]["tier"] == "small"
    assert counter(escalating, "routing_escalations") == before


def test_escalation_off_reports_no_confidence(all_small: Served) -> None:
    assert "confidence" not in chat(all_small, model="auto")["routing"]
