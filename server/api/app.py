"""The app factory: wires an already-built engine to the endpoints, metrics and error handlers.

The engine comes in built (dependency injection), so tests serve tiny models and the command
line serves loaded ones through the same code. The app's lifespan starts the engine thread and
stops it on shutdown (Ctrl-C included: uvicorn runs the lifespan's exit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.config import ServedModels, ServerConfig
from server.api.errors import install_error_handlers
from server.api.routes import ServingState, router
from server.engine.async_engine import AsyncEngine
from server.engine.engine import LLMEngine
from server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

# Seconds to wait for the engine thread to finish its step when the server stops.
ENGINE_SHUTDOWN_TIMEOUT_S = 10.0
# Label for paths that are not endpoints, so that stray URLs cannot grow the metric's series.
OTHER_ENDPOINT = "other"


def create_app(
    engine: LLMEngine,
    models: ServedModels,
    config: ServerConfig | None = None,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """An app serving `engine`; the engine thread runs while the app's lifespan does."""
    if models.draft_name is not None and engine.draft is None:
        raise ValueError(f"a draft model is named ({models.draft_name!r}) but none is loaded")
    config = config or ServerConfig()
    metrics = metrics or ServerMetrics()
    async_engine = AsyncEngine(engine, config.max_queued, on_step=metrics.on_step)
    metrics.bind_engine(engine, lambda: async_engine.num_waiting)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async_engine.start()
        try:
            yield
        finally:
            logger.info("stopping the engine thread")
            async_engine.shutdown(ENGINE_SHUTDOWN_TIMEOUT_S)

    app = FastAPI(title="specserve", lifespan=lifespan)
    app.state.serving = ServingState(
        engine=engine,
        async_engine=async_engine,
        models=models,
        config=config,
        metrics=metrics,
        started=int(time.time()),
    )
    install_error_handlers(app)
    app.include_router(router)
    endpoints = frozenset(route.path for route in router.routes if hasattr(route, "path"))
    # Added last, so outermost: it sees the status of every answer, 500s included.
    app.add_middleware(RequestCounter, metrics=metrics, endpoints=endpoints)
    return app


class RequestCounter:
    """ASGI middleware counting answered HTTP requests by endpoint and status code."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, endpoints: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = scope["path"] if scope["path"] in self.endpoints else OTHER_ENDPOINT
            # No status sent: the app raised past every handler, and Starlette answers 500.
            code = str(status[0]) if status else str(HTTPStatus.INTERNAL_SERVER_ERROR.value)
            self.metrics.http_requests.labels(endpoint=endpoint, status=code).inc()
