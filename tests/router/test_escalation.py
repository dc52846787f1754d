"""An answer's confidence from its tokens' log-probabilities, and when it escalates."""

from __future__ import annotations

import math

import pytest

from server.router.escalation import EscalationConfig, answer_confidence

LOGPROBS = [math.log(0.9), math.log(0.5), math.log(1.0)]


def test_mean_and_min_probability() -> None:
    assert answer_confidence(LOGPROBS, "mean") == pytest.approx((0.9 + 0.5 + 1.0) / 3)
    assert answer_confidence(LOGPROBS, "min") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="without tokens"):
        answer_confidence([], "mean")


def test_escalates_strictly_below_the_threshold() -> None:
    assert EscalationConfig(0.8).should_escalate(0.79)
    assert not EscalationConfig(0.8).should_escalate(0.8)
    assert EscalationConfig(1.0).should_escalate(0.999)  # 1.0 redoes every answer not certain
    assert not EscalationConfig(0.0).should_escalate(0.0)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_must_be_a_probability(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        EscalationConfig(threshold)
