"""Fixtures: the shared tiny test server, and extra servers with their own engine or limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.api.config import ServerConfig
from server.engine.engine import LLMEngine
from tests.api.support import Served, StartServer, build_tiny_engine, serve, shut_down


@pytest.fixture(scope="session")
def served() -> Iterator[Served]:
    """The shared server: tiny target with a tiny draft, default limits."""
    running = serve(build_tiny_engine())
    yield running
    shut_down(running)


@pytest.fixture
def serve_engine() -> Iterator[StartServer]:
    """Start extra servers (own engine or limits) for one test; all stop when it ends."""
    started: list[Served] = []

    def start(engine: LLMEngine, config: ServerConfig) -> Served:
        running = serve(engine, config)
        started.append(running)
        return running

    yield start
    for running in started:
        shut_down(running)
