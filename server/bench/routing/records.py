"""What the routing evaluation records per prompt: the router's terms, and each tier's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.router.escalation import ConfidenceStat
from server.router.policy import ScoreTerms


@dataclass(frozen=True)
class TierRun:
    """One prompt's greedy answer on one tier, graded."""

    text: str
    correct: bool
    latency_s: float  # wall time from submission to the last token
    model_s: float  # forward time of the tier's models (target and draft for the large tier)
    num_output_tokens: int
    # Mean and minimum probability of the answer's tokens under the model that chose them.
    confidence_mean: float
    confidence_min: float

    def confidence(self, stat: ConfidenceStat) -> float:
        return self.confidence_min if stat == "min" else self.confidence_mean


@dataclass(frozen=True)
class PromptRecord:
    """A prompt's router score terms, and its answer on each tier."""

    id: str
    category: str
    terms: ScoreTerms
    scoring_s: float  # the router's cost: one small-model forward over the prompt
    small: TierRun
    large: TierRun

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptRecord:
        """The inverse of `dataclasses.asdict` on a record (one line of records.jsonl)."""
        return cls(
            id=data["id"],
            category=data["category"],
            terms=ScoreTerms(**data["terms"]),
            scoring_s=data["scoring_s"],
            small=TierRun(**data["small"]),
            large=TierRun(**data["large"]),
        )
