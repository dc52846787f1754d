"""One request's life in the HTTP layer: submit, wait (watching the client), collect, record.

Errors that can only show once the engine has seen the request (a full queue, a prompt over the
context) arrive with its first output, so handlers wait for that output before committing to a
status: a stream starts only once its first token exists, and every refusal is a proper error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Protocol, TypeVar

from fastapi import Request

from server.api.errors import OVERLOADED, APIError, invalid_request
from server.api.translate import EngineRequest
from server.caches.response_cache import CachedResponse
from server.engine.async_engine import AsyncEngine, QueueFullError
from server.engine.engine import RequestError, RequestOutput
from server.engine.params import FinishReason
from server.engine.sequence import TokenLogprob
from server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

# How often a handler waiting on the engine checks whether its client has gone.
DISCONNECT_POLL_S = 0.1
# Seconds a client told the queue is full should wait before retrying.
RETRY_AFTER_S = 1

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed its connection; its request has been aborted."""


@dataclass
class Generation:
    """Everything a request has produced so far."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    outputs: list[RequestOutput] = field(default_factory=list)

    def add(self, output: RequestOutput) -> None:
        self.text += output.new_text
        self.logprobs += output.new_logprobs
        self.outputs.append(output)

    @property
    def last(self) -> RequestOutput | None:
        return self.outputs[-1] if self.outputs else None

    @property
    def final(self) -> RequestOutput:
        if self.last is None or not self.last.finished:
            raise RuntimeError("the request has not finished")
        return self.last


class OutputSource(Protocol):
    """Where a handler's outputs come from: the engine, or the response cache."""

    request_id: str
    generation: Generation

    async def first(self, http_request: Request) -> RequestOutput: ...

    def rest(self) -> AsyncIterator[RequestOutput]: ...

    async def collect(self, http_request: Request) -> Generation: ...

    async def close(self) -> None: ...


class GenerationStream:
    """A request submitted to the engine; closing it aborts the request if still running.

    `on_complete` receives the generation once it has finished on its own (not aborted).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: ServerMetrics,
        request_id: str,
        engine_request: EngineRequest,
        prompt_param: str,
        on_complete: Callable[[Generation], None] | None = None,
    ) -> None:
        self.request_id = request_id
        self.engine_request = engine_request
        self.generation = Generation()
        self._metrics = metrics
        self._prompt_param = prompt_param
        self._on_complete = on_complete
        self._arrival_s = time.perf_counter()
        outputs = engine.generate(
            request_id, engine_request.prompt_ids, engine_request.sampling, engine_request.spec
        )
        # Closing the generator aborts the request in the engine.
        self._outputs = outputs
        self._closed = False

    async def first(self, http_request: Request) -> RequestOutput:
        """Wait for the first output, turning engine refusals into API errors."""
        try:
            output = await _unless_disconnected(anext(self._outputs), http_request)
        except QueueFullError as error:
            raise APIError(
                f"the server is busy ({error}); retry in {RETRY_AFTER_S} s",
                HTTPStatus.SERVICE_UNAVAILABLE,
                OVERLOADED,
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from error
        except RequestError as error:
            raise invalid_request(str(error), param=self._prompt_param) from error
        self.generation.add(output)
        return output

    async def rest(self) -> AsyncIterator[RequestOutput]:
        """The outputs after the first, until the request finishes."""
        if self.generation.last is not None and self.generation.last.finished:
            return
        async for output in self._outputs:
            self.generation.add(output)
            yield output

    async def collect(self, http_request: Request) -> Generation:
        """Run the request to the end; abort it if the client disconnects meanwhile."""
        await self.first(http_request)
        await _unless_disconnected(self._drain(), http_request)
        return self.generation

    async def _drain(self) -> None:
        async for _ in self.rest():
            pass

    async def close(self) -> None:
        """Abort the request if it is still running, and record it in the metrics once."""
        if self._closed:
            return
        self._closed = True
        await self._outputs.aclose()
        last = self.generation.last
        if last is None:
            return  # refused before it started: counted only as an HTTP error
        reason = (last.finished and last.finish_reason) or FinishReason.ABORT
        ttft_s = None if last.first_token_s is None else last.first_token_s - self._arrival_s
        latency_s = time.perf_counter() - self._arrival_s
        self._metrics.observe_finished(reason.value, last.num_prompt_tokens, ttft_s, latency_s)
        if reason is not FinishReason.ABORT and self._on_complete is not None:
            self._on_complete(self.generation)


class ReplayedGeneration:
    """A response from the response cache, handed out as the engine first produced it.

    The final output reports the whole prompt as cached: nothing was computed for it.
    """

    def __init__(self, request_id: str, cached: CachedResponse) -> None:
        self.request_id = request_id
        self.generation = Generation()
        final = cached.final
        self._outputs = list(cached.outputs[:-1])
        self._outputs.append(replace(final, num_cached_tokens=final.num_prompt_tokens))

    async def first(self, http_request: Request) -> RequestOutput:
        output = self._outputs[0]
        self.generation.add(output)
        return output

    async def rest(self) -> AsyncIterator[RequestOutput]:
        for output in self._outputs[len(self.generation.outputs) :]:
            self.generation.add(output)
            yield output

    async def collect(self, http_request: Request) -> Generation:
        await self.first(http_request)
        async for _ in self.rest():
            pass
        return self.generation

    async def close(self) -> None:
        """Nothing runs behind a replay; counted by the response-cache metrics only."""


async def _unless_disconnected(work: Awaitable[T], http_request: Request) -> T:
    """Await `work`, cancelling it and raising ClientDisconnected if the client goes away."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await http_request.is_disconnected():
                raise ClientDisconnected()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
