"""Configuration of the router, as it enters at the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.router.escalation import EscalationConfig
from server.router.policy import FeatureWeights
from server.router.uncertainty import DEFAULT_MAX_SCORED_TOKENS

# Half way: requests the score finds more likely than not to need the large model get it.
DEFAULT_ROUTE_THRESHOLD = 0.5


@dataclass(frozen=True)
class RouterConfig:
    """How `auto` requests are routed, and whether unsure small answers are redone."""

    # Route to the small model when the score is below this; in [0, 1].
    threshold: float = DEFAULT_ROUTE_THRESHOLD
    weights: FeatureWeights = field(default_factory=FeatureWeights)
    # The last prompt tokens the small model scores (bounds the routing cost).
    max_scored_tokens: int = DEFAULT_MAX_SCORED_TOKENS
    # None: a small answer is final.
    escalation: EscalationConfig | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"route threshold must be in [0, 1], got {self.threshold}")
        if self.max_scored_tokens < 1:
            raise ValueError(f"max_scored_tokens must be positive, got {self.max_scored_tokens}")
