"""A minimal streaming client for the server's OpenAI-compatible endpoints (standard library only).

Each request streams (server-sent events) with usage included, so the client sees when the first
text arrives, when the last does, how many tokens the server generated, and the server's
`speculative` block. Text the server holds back (a possible stop string, half a character) makes
the first-text time slightly later than the first token's.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from server.bench.datasets import Prompt
from server.bench.options import check_loopback

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EVENT_PREFIX = b"data:"
DONE = "[DONE]"
HTTP_OK = 200
# Generous: a loaded CPU server may take minutes for a long answer.
REQUEST_TIMEOUT_S = 600.0
# How much of an error body is kept in the record.
ERROR_CHARS = 300


@dataclass(frozen=True)
class HttpResponse:
    """What one streamed request returned, with client-side timings in seconds."""

    ok: bool
    text: str
    num_output_tokens: int
    first_token_s: float | None
    latency_s: float
    speculative: dict[str, Any] | None = None
    error: str | None = None


def request_for(
    prompt: Prompt,
    max_tokens: int,
    temperature: float,
    seed: int | None,
    speculation: bool | None,
) -> tuple[str, dict[str, Any]]:
    """Endpoint path and body: chat for chat prompts, completions for text prompts.

    `speculation` None leaves the server's default; True or False sets `speculative.enabled`.
    """
    body: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        # Measure decoding: every phase sends the same prompts, which the caches would answer.
        "cache": {"prefix": False, "response": False},
    }
    if seed is not None:
        body["seed"] = seed
    if speculation is not None:
        body["speculative"] = {"enabled": speculation}
    if prompt.messages is not None:
        return CHAT_PATH, body | {"messages": [dict(message) for message in prompt.messages]}
    return COMPLETIONS_PATH, body | {"prompt": prompt.text}


def stream(base_url: str, path: str, body: dict[str, Any]) -> HttpResponse:
    """POST `body` to a loopback server and read its event stream to the end."""
    check_loopback(base_url)
    parts = urlsplit(base_url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
    started = time.perf_counter()
    try:
        connection.request(
            "POST",
            parts.path.rstrip("/") + path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        response = connection.getresponse()
        if response.status != HTTP_OK:
            detail = response.read().decode(errors="replace")[:ERROR_CHARS]
            return _failed(f"HTTP {response.status}: {detail}", started)
        return _read_events(response, started)
    except (OSError, http.client.HTTPException, ValueError) as error:
        return _failed(f"{type(error).__name__}: {error}", started)
    finally:
        connection.close()


def _failed(reason: str, started: float) -> HttpResponse:
    return HttpResponse(False, "", 0, None, time.perf_counter() - started, error=reason)


def _read_events(response: http.client.HTTPResponse, started: float) -> HttpResponse:
    pieces: list[str] = []
    first_token_at = None
    num_tokens = 0
    speculative = None
    while line := response.readline():
        if not line.startswith(EVENT_PREFIX):
            continue
        payload = line[len(EVENT_PREFIX) :].strip().decode()
        if payload == DONE:
            break
        event = json.loads(payload)
        if "error" in event:
            return _failed(str(event["error"]), started)
        text = _event_text(event)
        if text:
            first_token_at = first_token_at or time.perf_counter()
            pieces.append(text)
        if event.get("usage"):
            num_tokens = int(event["usage"]["completion_tokens"])
        speculative = event.get("speculative") or speculative
    finished_at = time.perf_counter()
    return HttpResponse(
        ok=True,
        text="".join(pieces),
        num_output_tokens=num_tokens,
        first_token_s=None if first_token_at is None else first_token_at - started,
        latency_s=finished_at - started,
        speculative=speculative,
    )


def _event_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""
