"""Runs the engine's step loop on its own thread and hands results to asyncio callers.

The event loop never waits on model math: requests and cancellations are queued to the engine
thread, which applies them between steps; each step's outputs are pushed back onto the event
loop, one asyncio queue per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from server.engine.engine import LLMEngine, RequestError, RequestOutput
from server.engine.params import SamplingParams, SpecParams

logger = logging.getLogger(__name__)

# How long the idle engine thread sleeps waiting for work before checking for shutdown.
IDLE_POLL_S = 0.05


class QueueFullError(RuntimeError):
    """More requests are waiting than the server accepts."""


@dataclass(frozen=True)
class _Submit:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    spec: SpecParams | None
    sink: asyncio.Queue[RequestOutput | BaseException]
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True)
class _Abort:
    request_id: str


class AsyncEngine:
    """Thread-backed front of an `LLMEngine` for the HTTP server."""

    def __init__(
        self,
        engine: LLMEngine,
        max_queued: int,
        on_step: Callable[[LLMEngine, list[RequestOutput]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_queued = max_queued
        self.on_step = on_step
        self._commands: queue.Queue[_Submit | _Abort] = queue.Queue()
        self._sinks: dict[str, _Submit] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        """Whether the engine thread is running (False before start and after shutdown)."""
        return self._thread.is_alive()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def num_waiting(self) -> int:
        return len(self.engine.waiting) + self._commands.qsize()

    async def generate(
        self,
        request_id: str,
        prompt_ids: list[int],
        sampling: SamplingParams,
        spec: SpecParams | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Yield the request's outputs step by step; cancelling the iterator aborts the request."""
        if self.num_waiting >= self.max_queued:
            raise QueueFullError(f"{self.num_waiting} requests are already waiting")
        loop = asyncio.get_running_loop()
        sink: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._commands.put(_Submit(request_id, prompt_ids, sampling, spec, sink, loop))
        finished = False
        try:
            while True:
                item = await sink.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self._commands.put(_Abort(request_id))

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    # ----------------------------------------------------------------- engine thread

    def _run(self) -> None:
        while not self._stop.is_set():
            self._apply_commands(block=not self.engine.has_unfinished())
            if not self.engine.has_unfinished():
                continue
            try:
                outputs = self.engine.step()
            except Exception as error:  # keep serving: fail the requests in flight, not the server
                logger.exception("engine step failed")
                self._fail_all(error)
                continue
            for output in outputs:
                self._deliver(output)
            if self.on_step is not None:
                try:
                    self.on_step(self.engine, outputs)
                except Exception:
                    logger.exception("step callback failed")

    def _apply_commands(self, block: bool) -> None:
        try:
            command = (
                self._commands.get(timeout=IDLE_POLL_S) if block else self._commands.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            self._apply(command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _apply(self, command: _Submit | _Abort) -> None:
        if isinstance(command, _Abort):
            self._sinks.pop(command.request_id, None)
            self.engine.abort(command.request_id)
            return
        try:
            self.engine.add_request(
                command.request_id, command.prompt_ids, command.sampling, command.spec
            )
        except RequestError as error:
            command.loop.call_soon_threadsafe(command.sink.put_nowait, error)
            return
        except Exception as error:  # a bad request must never take the engine thread down
            logger.exception("could not add request %s", command.request_id)
            failure = RuntimeError(f"could not start generation: {error}")
            command.loop.call_soon_threadsafe(command.sink.put_nowait, failure)
            return
        self._sinks[command.request_id] = command

    def _deliver(self, output: RequestOutput) -> None:
        submit = self._sinks.get(output.request_id)
        if submit is None:
            return
        if output.finished:
            del self._sinks[output.request_id]
        submit.loop.call_soon_threadsafe(submit.sink.put_nowait, output)

    def _fail_all(self, error: Exception) -> None:
        for request_id, submit in list(self._sinks.items()):
            self.engine.abort(request_id)
            failure = RuntimeError(f"generation failed: {error}")
            submit.loop.call_soon_threadsafe(submit.sink.put_nowait, failure)
        self._sinks.clear()
