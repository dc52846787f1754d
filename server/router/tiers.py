"""The ways a request can be served, as named by its `model` field."""

from __future__ import annotations

import enum


class Tier(str, enum.Enum):
    """A serving tier, or `auto` for "let the router choose one"."""

    SMALL = "small"  # the draft model alone, plain decoding
    LARGE = "large"  # the target, speculating with the draft
    AUTO = "auto"  # the router picks small or large per request, before generating

    @property
    def is_served(self) -> bool:
        """Whether an engine answers for this tier directly (`auto` only chooses one)."""
        return self is not Tier.AUTO


SERVED_TIERS = (Tier.SMALL, Tier.LARGE)
