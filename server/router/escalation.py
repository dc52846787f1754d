"""Escalation: a small-model answer the small model itself was unsure of is redone by the large one.

Confidence is read from the probability the small model gave each token it emitted, exp(logprob):
their mean ("mean") or their minimum ("min", stricter: one shaky token is enough). For greedy
decoding the emitted token is the most likely one, so this is the mean (or min) max-probability.

Only answers not yet shown to the client can be redone: escalation applies to non-streaming
requests, and a streamed small-model answer is final.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

ConfidenceStat = Literal["mean", "min"]


@dataclass(frozen=True)
class EscalationConfig:
    """Redo a small answer whose confidence is below `threshold` (1.0: nearly every answer)."""

    threshold: float
    stat: ConfidenceStat = "mean"

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"escalation threshold must be in [0, 1], got {self.threshold}")
        if self.stat not in get_args(ConfidenceStat):
            raise ValueError(f"confidence statistic must be mean or min, got {self.stat!r}")

    def should_escalate(self, confidence: float) -> bool:
        return confidence < self.threshold


def answer_confidence(token_logprobs: Sequence[float], stat: ConfidenceStat) -> float:
    """Mean or minimum probability of the answer's tokens, from their log-probabilities."""
    if not token_logprobs:
        raise ValueError("an answer without tokens has no confidence")
    probs = [math.exp(logprob) for logprob in token_logprobs]
    return min(probs) if stat == "min" else sum(probs) / len(probs)
