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
from server.api.routing import SmallTier, Tiers
from server.caches.response_cache import ResponseCache
from server.engine.async_engine import AsyncEngine
from server.engine.engine import LLMEngine
from server.metrics import ServerMetrics, chain_steps
from server.router.config import RouterConfig
from server.router.router import Router
from server.router.small_tier import build_small_engine
from server.router.tiers import Tier

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
    router_config: RouterConfig | None = None,
) -> FastAPI:
    """An app serving `engine`; the engine threads run while the app's lifespan does.

    When `models.routing` is set, the draft model also serves alone (the small tier, with an
    engine and a thread of its own) and `router_config` (default: `RouterConfig()`) routes
    `auto` requests.
    """
    if models.draft_name is not None and engine.draft is None:
        raise ValueError(f"a draft model is named ({models.draft_name!r}) but none is loaded")
    config = config or ServerConfig()
    metrics = metrics or ServerMetrics()
    small = None
    on_step = metrics.on_step
    if models.routing:
        small = _small_tier(engine, config, metrics, router_config or RouterConfig())
        on_step = chain_steps(metrics.on_step, metrics.tier_tokens(Tier.LARGE.value))
    async_engine = AsyncEngine(engine, config.max_queued, on_step=on_step)
    metrics.bind_engine(engine, lambda: async_engine.num_waiting)
    engines = [async_engine] + ([small.async_engine] if small is not None else [])
    response_cache = None
    if config.response_cache_size > 0:
        response_cache = ResponseCache(config.response_cache_size, config.response_cache_bytes)
        metrics.bind_response_cache(response_cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for running in engines:
            running.start()
        try:
            yield
        finally:
            logger.info("stopping the engine thread")
            for running in engines:
                running.shutdown(ENGINE_SHUTDOWN_TIMEOUT_S)

    app = FastAPI(title="specserve", lifespan=lifespan)
    app.state.serving = ServingState(
        engine=engine,
        async_engine=async_engine,
        models=models,
        config=config,
        metrics=metrics,
        started=int(time.time()),
        tiers=Tiers(models, engine, async_engine, metrics, small),
        response_cache=response_cache,
    )
    install_error_handlers(app)
    app.include_router(router)
    endpoints = frozenset(route.path for route in router.routes if hasattr(route, "path"))
    # Added last, so outermost: it sees the status of every answer, 500s included.
    app.add_middleware(RequestCounter, metrics=metrics, endpoints=endpoints)
    return app


def _small_tier(
    engine: LLMEngine, config: ServerConfig, metrics: ServerMetrics, router_config: RouterConfig
) -> SmallTier:
    """The draft model serving alone, on its own engine thread, and the router choosing it."""
    small_engine = build_small_engine(engine)
    metrics.bind_small_engine(small_engine)
    on_step = metrics.tier_tokens(Tier.SMALL.value)
    async_engine = AsyncEngine(small_engine, config.max_queued, on_step=on_step)
    router = Router(small_engine.target.model, router_config)
    return SmallTier(small_engine, async_engine, router)


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
