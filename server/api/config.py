"""Settings of the HTTP layer and the names of the models it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.router.tiers import Tier

LogLevel = Literal["debug", "info", "warning", "error"]

# Highest TCP port number.
MAX_PORT = 65535
# A few thousand typical answers, with logprobs for some.
DEFAULT_RESPONSE_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class ServedModels:
    """The models behind the engines, by the names clients use in the `model` field.

    The target answers to its own name and to the tier name `large`. With routing, the draft also
    answers alone, to its own name and to `small`, and `auto` lets the router choose per request.
    """

    target_name: str
    draft_name: str | None = None
    # The model or tier answering requests that name none; None: the target.
    default_model: str | None = None
    # Whether the draft serves alone (the small tier) and `auto` routes between the two.
    routing: bool = False

    def __post_init__(self) -> None:
        if not self.target_name:
            raise ValueError("the target model needs a name")
        if self.routing and self.draft_name is None:
            raise ValueError("routing serves the draft model alone, and none is loaded")
        if self.default_model is None or self.tier_of(self.default_model) is not None:
            return
        if self.default_model == self.draft_name:
            raise ValueError(
                f"default model {self.default_model!r} is the draft; it serves alone only with "
                f"routing, so without it the default must be the target {self.target_name!r}"
            )
        raise ValueError(
            f"default model {self.default_model!r} is not served (models: {', '.join(self.names)})"
        )

    @property
    def default_name(self) -> str:
        return self.default_model or self.target_name

    @property
    def names(self) -> tuple[str, ...]:
        """The models' own names, target first."""
        return (self.target_name,) + ((self.draft_name,) if self.draft_name else ())

    @property
    def tier_names(self) -> tuple[str, ...]:
        """The tier names requests may use besides the models' own."""
        if not self.routing:
            return (Tier.LARGE.value,)
        return tuple(tier.value for tier in Tier)

    @property
    def request_names(self) -> tuple[str, ...]:
        """Every name a request's `model` field may use here."""
        own = self.names if self.routing else (self.target_name,)
        return own + self.tier_names

    def tier_of(self, name: str) -> Tier | None:
        """The tier a `model` field names; None when nothing served here has that name."""
        if name == self.target_name:
            return Tier.LARGE
        if self.routing and name == self.draft_name:
            return Tier.SMALL
        if name in self.tier_names:
            return Tier(name)
        return None

    def model_name(self, tier: Tier) -> str:
        """The name of the model that answers for a served tier."""
        if tier is Tier.SMALL and self.draft_name is not None:
            return self.draft_name
        if tier is Tier.LARGE:
            return self.target_name
        raise ValueError(f"no model answers for tier {tier.value!r} here")


@dataclass(frozen=True)
class ServerConfig:
    """How the HTTP server listens and admits requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Requests allowed to wait for a batch slot; beyond this the server answers 503.
    max_queued: int = 64
    # Whole responses kept for repeated deterministic requests; 0 keeps none.
    response_cache_size: int = 0
    # Bound on the response cache's (estimated) memory, whatever its number of entries.
    response_cache_bytes: int = DEFAULT_RESPONSE_CACHE_BYTES
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
        if self.response_cache_bytes < 1:
            raise ValueError(
                f"response_cache_bytes must be positive (disable the cache with "
                f"response_cache_size 0), got {self.response_cache_bytes}"
            )
