"""/metrics: request, token, latency and speculation series, read back after real requests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import TARGET_NAME, Served, extension, metric_value

PREFIX = "specserve_"
SPEC_COUNTERS = (
    "spec_decode_num_drafts",
    "spec_decode_num_draft_tokens",
    "spec_decode_num_accepted_tokens",
)


def counter(served: Served, suffix: str, labels: dict[str, str] | None = None) -> float:
    return metric_value(served.http, f"{PREFIX}{suffix}_total", labels)


def test_speculative_request_moves_the_spec_decode_counters(served: Served) -> None:
    before = {name: counter(served, name) for name in SPEC_COUNTERS}
    first_position_before = counter(
        served, "spec_decode_num_accepted_tokens_per_pos", {"position": "0"}
    )
    response = served.client.completions.create(
        model=TARGET_NAME,
        prompt="speculate",
        max_tokens=20,
        temperature=0.0,
        extra_body={"ignore_eos": True, "speculative": {"drafter": "model", "k": 3}},
    )
    speculative = extension(response, "speculative")
    after = {name: counter(served, name) for name in SPEC_COUNTERS}

    assert (
        after["spec_decode_num_drafts"] - before["spec_decode_num_drafts"]
        == (speculative["draft_steps"])
    )
    assert (
        after["spec_decode_num_draft_tokens"] - before["spec_decode_num_draft_tokens"]
        == (speculative["drafted_tokens"])
    )
    accepted = after["spec_decode_num_accepted_tokens"] - before["spec_decode_num_accepted_tokens"]
    assert accepted == speculative["accepted_tokens"] > 0
    first_position = counter(served, "spec_decode_num_accepted_tokens_per_pos", {"position": "0"})
    assert first_position - first_position_before == speculative["accepted_per_position"][0]


def test_request_token_and_latency_series(served: Served) -> None:
    labels = {"endpoint": "/v1/chat/completions", "status": "200"}
    requests_before = counter(served, "http_requests", labels)
    finished_before = counter(served, "request_success", {"finished_reason": "length"})
    prompt_before = counter(served, "prompt_tokens")
    generated_before = counter(served, "generation_tokens")
    ttft_before = metric_value(served.http, f"{PREFIX}time_to_first_token_seconds_count")

    response = served.client.chat.completions.create(
        model=TARGET_NAME,
        messages=[{"role": "user", "content": "measure me"}],
        max_tokens=7,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    assert response.usage is not None

    assert counter(served, "http_requests", labels) == requests_before + 1
    assert counter(served, "request_success", {"finished_reason": "length"}) == finished_before + 1
    assert counter(served, "prompt_tokens") == prompt_before + response.usage.prompt_tokens
    assert counter(served, "generation_tokens") == generated_before + 7
    ttft_after = metric_value(served.http, f"{PREFIX}time_to_first_token_seconds_count")
    assert ttft_after == ttft_before + 1


def test_bad_requests_are_counted_by_status(served: Served) -> None:
    labels = {"endpoint": "/v1/completions", "status": "400"}
    before = counter(served, "http_requests", labels)
    served.http.post("/v1/completions", json={"prompt": "x", "max_tokens": 0})
    assert counter(served, "http_requests", labels) == before + 1


def test_engine_state_gauges_are_exported(served: Served) -> None:
    families = {f.name for f in text_string_to_metric_families(served.http.get("/metrics").text)}
    for name in (
        "num_requests_running",
        "num_requests_waiting",
        "kv_cache_blocks_used",
        "kv_cache_blocks_total",
        "e2e_request_latency_seconds",
    ):
        assert PREFIX + name in families
    total = metric_value(served.http, f"{PREFIX}kv_cache_blocks_total", {"model": "target"})
    assert total == served.engine.target.allocator.num_blocks
