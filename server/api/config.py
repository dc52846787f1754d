"""Settings of the HTTP layer and the names of the models it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogLevel = Literal["debug", "info", "warning", "error"]

# Highest TCP port number.
MAX_PORT = 65535


@dataclass(frozen=True)
class ServedModels:
    """The models behind the engine, by the names clients use in the `model` field."""

    target_name: str
    draft_name: str | None = None
    # The model answering requests that name none; None: the target.
    default_model: str | None = None

    def __post_init__(self) -> None:
        if not self.target_name:
            raise ValueError("the target model needs a name")
        if self.default_model is None or self.default_model == self.target_name:
            return
        if self.default_model == self.draft_name:
            raise ValueError(
                f"default model {self.default_model!r} is the draft; serving the draft alone is "
                f"not supported yet, so the default must be the target {self.target_name!r}"
            )
        raise ValueError(
            f"default model {self.default_model!r} is not loaded (models: {', '.join(self.names)})"
        )

    @property
    def default_name(self) -> str:
        return self.default_model or self.target_name

    @property
    def names(self) -> tuple[str, ...]:
        return (self.target_name,) + ((self.draft_name,) if self.draft_name else ())


@dataclass(frozen=True)
class ServerConfig:
    """How the HTTP server listens and admits requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Requests allowed to wait for a batch slot; beyond this the server answers 503.
    max_queued: int = 64
    # Whole responses kept for repeated deterministic requests; 0 keeps none.
    response_cache_size: int = 0
    log_level: LogLevel = "info"

    def __post_init__(self) -> None:
        if not 1 <= self.port <= MAX_PORT:
            raise ValueError(f"port must be in [1, {MAX_PORT}], got {self.port}")
        if self.max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {self.max_queued}")
        if self.response_cache_size < 0:
            raise ValueError(
                f"response_cache_size must be >= 0 (0 disables it), got {self.response_cache_size}"
            )
