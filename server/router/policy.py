"""The routing score, and the tier it sends a request to.

    score = sigmoid(bias + sum_f w_f * x_f)

is a logistic model of "the small model's answer would fall short of the large one's", over the
terms x_f of `ScoreTerms`. A request goes to the small model when score < threshold: threshold 0
sends everything to the large model, 1 everything to the small one. The score depends on the
request and the weights only, so the same request under the same configuration always takes the
same tier, and an evaluation can sweep the threshold over recorded scores without rerunning models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from server.router.features import RequestFeatures
from server.router.tiers import Tier
from server.router.uncertainty import PromptUncertainty

# Lengths are compared on a log scale against these: a prompt or answer budget this long (or
# longer) counts fully; 1k tokens is a long question and a long answer for a chat model.
REFERENCE_PROMPT_TOKENS = 1024
REFERENCE_ANSWER_TOKENS = 1024


def log_scaled(num_tokens: int, reference: int) -> float:
    """log(1 + n) / log(1 + reference), capped at 1: 0 for nothing, 1 at the reference."""
    return min(math.log1p(num_tokens) / math.log1p(reference), 1.0)


@dataclass(frozen=True)
class ScoreTerms:
    """The inputs x_f of the score; weights of the same names multiply them."""

    prompt_length: float  # log-scaled prompt tokens, in [0, 1]
    answer_budget: float  # log-scaled max_tokens, in [0, 1]
    simple_task: float  # 1 when the request asks for a simple task, else 0 (see features)
    code_task: float  # 1 when it asks for code
    reasoning_task: float  # 1 when it asks for multi-step reasoning or arithmetic
    prompt_entropy: float  # nats: the small model's mean next-token entropy over the prompt
    prompt_surprisal: float  # nats: mean surprisal of the prompt's tokens to the small model
    next_token_entropy: float  # nats: its entropy about the answer's first token

    @classmethod
    def of(cls, features: RequestFeatures, uncertainty: PromptUncertainty) -> ScoreTerms:
        return cls(
            prompt_length=log_scaled(features.num_prompt_tokens, REFERENCE_PROMPT_TOKENS),
            answer_budget=log_scaled(features.max_tokens, REFERENCE_ANSWER_TOKENS),
            simple_task=float(features.simple_task),
            code_task=float(features.code_task),
            reasoning_task=float(features.reasoning_task),
            prompt_entropy=uncertainty.mean_entropy_nats,
            prompt_surprisal=uncertainty.mean_surprisal_nats,
            next_token_entropy=uncertainty.next_token_entropy_nats,
        )


@dataclass(frozen=True)
class FeatureWeights:
    """Log-odds of needing the large model: a bias, and one weight per unit of each term.

    Set by hand, not fitted: the signs are what each term should mean, and the sizes put the
    terms on comparable footing. The bias centres typical prompts of the packaged pair (about
    2-3 nats of prompt entropy) near a score of 0.5.
    """

    bias: float = -3.0
    # A long prompt carries more to understand; a large budget invites a long, error-prone answer.
    prompt_length: float = 1.0
    answer_budget: float = 1.0
    # Classification, extraction, translation and one-word answers rarely need the larger model.
    simple_task: float = -2.0
    # Writing code and reasoning through arithmetic is where a 3x larger model gains most.
    code_task: float = 0.5
    reasoning_task: float = 1.0
    # Per nat: a prompt the small model finds surprising or cannot predict is one it knows less.
    prompt_entropy: float = 0.3
    prompt_surprisal: float = 0.2
    next_token_entropy: float = 0.3

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not math.isfinite(getattr(self, field.name)):
                raise ValueError(f"routing weight {field.name} must be finite")

    def with_values(self, values: Mapping[str, float]) -> FeatureWeights:
        """These weights with some replaced by name; an unknown name is a ValueError."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown routing weight(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **values)


def route_score(terms: ScoreTerms, weights: FeatureWeights) -> float:
    """sigmoid(bias + sum_f w_f * x_f), in (0, 1): higher means the large model is needed more."""
    logit = weights.bias + sum(
        getattr(weights, field.name) * getattr(terms, field.name)
        for field in dataclasses.fields(terms)
    )
    # The two forms avoid overflow of exp() for large |logit|.
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    odds = math.exp(logit)
    return odds / (1.0 + odds)


@dataclass(frozen=True)
class RouteDecision:
    """The tier chosen for one `auto` request, and the numbers behind the choice."""

    tier: Tier
    score: float
    threshold: float

    def __post_init__(self) -> None:
        if not self.tier.is_served:
            raise ValueError("a routing decision names the tier that serves: small or large")


def decide(score: float, threshold: float) -> RouteDecision:
    """Small when the score is below the threshold, large otherwise."""
    tier = Tier.SMALL if score < threshold else Tier.LARGE
    return RouteDecision(tier=tier, score=score, threshold=threshold)
