"""The routing score (a logistic model over the terms) and the tier it leads to."""

from __future__ import annotations

import dataclasses
import math

import pytest

from server.router.features import RequestFeatures
from server.router.policy import (
    REFERENCE_PROMPT_TOKENS,
    FeatureWeights,
    RouteDecision,
    ScoreTerms,
    decide,
    log_scaled,
    route_score,
)
from server.router.tiers import Tier
from server.router.uncertainty import PromptUncertainty

ZERO_TERMS = ScoreTerms(**{field.name: 0.0 for field in dataclasses.fields(ScoreTerms)})
ZERO_WEIGHTS = FeatureWeights(**{field.name: 0.0 for field in dataclasses.fields(FeatureWeights)})


def test_score_is_the_sigmoid_of_the_weighted_sum() -> None:
    terms = dataclasses.replace(ZERO_TERMS, code_task=1.0, prompt_entropy=2.0)
    weights = dataclasses.replace(ZERO_WEIGHTS, bias=-1.0, code_task=0.5, prompt_entropy=0.25)
    logit = -1.0 + 0.5 * 1.0 + 0.25 * 2.0
    assert route_score(terms, weights) == pytest.approx(1 / (1 + math.exp(-logit)))
    assert route_score(ZERO_TERMS, ZERO_WEIGHTS) == 0.5


def test_extreme_logits_do_not_overflow() -> None:
    terms = dataclasses.replace(ZERO_TERMS, prompt_surprisal=1.0)
    assert route_score(terms, dataclasses.replace(ZERO_WEIGHTS, prompt_surprisal=1e4)) == 1.0
    assert route_score(terms, dataclasses.replace(ZERO_WEIGHTS, prompt_surprisal=-1e4)) == 0.0


def test_simple_tasks_lower_the_score_and_reasoning_raises_it() -> None:
    weights = FeatureWeights()
    base = route_score(ZERO_TERMS, weights)
    assert route_score(dataclasses.replace(ZERO_TERMS, simple_task=1.0), weights) < base
    assert route_score(dataclasses.replace(ZERO_TERMS, reasoning_task=1.0), weights) > base


def test_decision_is_small_strictly_below_the_threshold() -> None:
    assert decide(0.42, 0.5) == RouteDecision(Tier.SMALL, 0.42, 0.5)
    assert decide(0.5, 0.5).tier is Tier.LARGE
    assert decide(0.0, 0.0).tier is Tier.LARGE  # threshold 0: everything large
    assert decide(0.999, 1.0).tier is Tier.SMALL  # threshold 1: everything small
    with pytest.raises(ValueError, match="small or large"):
        RouteDecision(Tier.AUTO, 0.1, 0.5)


def test_terms_from_features_and_uncertainty() -> None:
    features = RequestFeatures(REFERENCE_PROMPT_TOKENS, 7, True, False, True)
    uncertainty = PromptUncertainty(100, 2.5, 3.5, 1.25)
    terms = ScoreTerms.of(features, uncertainty)
    assert terms == ScoreTerms(
        prompt_length=1.0,
        answer_budget=log_scaled(7, 1024),
        simple_task=1.0,
        code_task=0.0,
        reasoning_task=1.0,
        prompt_entropy=2.5,
        prompt_surprisal=3.5,
        next_token_entropy=1.25,
    )
    assert log_scaled(0, 1024) == 0.0 and log_scaled(10**6, 1024) == 1.0


def test_weights_by_name() -> None:
    weights = FeatureWeights().with_values({"bias": 1.5, "code_task": -2.0})
    assert (weights.bias, weights.code_task) == (1.5, -2.0)
    with pytest.raises(ValueError, match="unknown routing weight"):
        FeatureWeights().with_values({"vibes": 1.0})
    with pytest.raises(ValueError, match="finite"):
        FeatureWeights(bias=math.inf)
