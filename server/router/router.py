"""The router: scores an `auto` request before generation and picks the tier that answers it.

Deciding costs one small-model forward over the prompt (see `uncertainty`) plus a regular
expression pass over the request's text; nothing is sampled, so the decision is deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from models.transformer import Transformer
from server.router.config import RouterConfig
from server.router.features import request_features
from server.router.policy import RouteDecision, ScoreTerms, decide, route_score
from server.router.uncertainty import PromptScorer


@dataclass(frozen=True)
class Assessment:
    """What the router knows of a request before deciding: its score terms, and their cost."""

    terms: ScoreTerms
    # Wall time of the scoring forward and the text features.
    scoring_s: float


class Router:
    """Routes requests between the small and the large model (see `policy` for the score)."""

    def __init__(self, small_model: Transformer, config: RouterConfig) -> None:
        self.config = config
        self.scorer = PromptScorer(small_model, config.max_scored_tokens)

    def assess(self, prompt_ids: Sequence[int], text: str, max_tokens: int) -> Assessment:
        """Score terms of a request; `text` is its instruction (the user's words)."""
        started = time.perf_counter()
        features = request_features(text, len(prompt_ids), max_tokens)
        uncertainty = self.scorer.score(prompt_ids)
        return Assessment(ScoreTerms.of(features, uncertainty), time.perf_counter() - started)

    def decide(self, assessment: Assessment) -> RouteDecision:
        score = route_score(assessment.terms, self.config.weights)
        return decide(score, self.config.threshold)

    def route(self, prompt_ids: Sequence[int], text: str, max_tokens: int) -> RouteDecision:
        """Assess and decide in one call (blocking: run it off the event loop)."""
        return self.decide(self.assess(prompt_ids, text, max_tokens))
