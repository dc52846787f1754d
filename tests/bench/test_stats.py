import numpy as np
import pytest

from server.bench.stats import (
    bootstrap_ratio_ci,
    expected_tokens_per_step,
    mean_acceptance_length,
    percentile,
    theoretical_speedup,
)

NUM_PROMPTS = 200


def synthetic_run(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt generated tokens and seconds of a baseline run, lengths and speeds varying."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(32, 512, NUM_PROMPTS).astype(np.float64)
    seconds = tokens / rng.uniform(20.0, 40.0, NUM_PROMPTS)
    return tokens, seconds


def test_percentile_interpolates_linearly():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(101)), 90) == 90.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_identical_methods_have_speedup_one():
    tokens, seconds = synthetic_run(seed=1)
    point, low, high = bootstrap_ratio_ci(tokens, seconds, tokens, seconds)
    assert point == 1.0 and low <= 1.0 <= high


def test_twice_as_fast_on_every_prompt_gives_a_degenerate_interval():
    tokens, seconds = synthetic_run(seed=2)
    point, low, high = bootstrap_ratio_ci(tokens, seconds / 2, tokens, seconds)
    assert point == pytest.approx(2.0, rel=1e-12)
    assert low == pytest.approx(2.0, rel=1e-12) and high == pytest.approx(2.0, rel=1e-12)


def test_interval_is_reproducible_and_covers_a_noisy_speedup():
    tokens, seconds = synthetic_run(seed=3)
    noise = np.random.default_rng(4).uniform(0.8, 1.2, NUM_PROMPTS)
    seconds_a = seconds / 1.5 * noise
    point, low, high = bootstrap_ratio_ci(tokens, seconds_a, tokens, seconds, seed=7)
    assert low < point < high and low < 1.5 < high
    assert high - low < 0.1  # 200 prompts with 20% noise pin the ratio down well
    assert bootstrap_ratio_ci(tokens, seconds_a, tokens, seconds, seed=7) == (point, low, high)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_ratio_ci([1.0], [1.0], [1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive token count and time"):
        bootstrap_ratio_ci([1.0], [0.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ratio_ci([1.0], [1.0], [1.0], [1.0], confidence=1.0)


@pytest.mark.parametrize("num_draft_tokens", [1, 4, 8])
@pytest.mark.parametrize("cost_ratio", [0.0, 0.05, 0.5])
def test_theoretical_speedup_at_the_extremes(num_draft_tokens, cost_ratio):
    step_cost = num_draft_tokens * cost_ratio + 1
    assert theoretical_speedup(0.0, num_draft_tokens, cost_ratio) == pytest.approx(1 / step_cost)
    expected_at_one = (num_draft_tokens + 1) / step_cost
    assert theoretical_speedup(1.0, num_draft_tokens, cost_ratio) == pytest.approx(expected_at_one)
    # The closed form tends to the alpha = 1 value continuously.
    near_one = theoretical_speedup(1 - 1e-9, num_draft_tokens, cost_ratio)
    assert near_one == pytest.approx(expected_at_one, rel=1e-6)


def test_expected_tokens_per_step_matches_the_geometric_sum():
    # Step emits 1 + (accepted prefix length); P(prefix >= i) = alpha^i.
    alpha, num_draft_tokens = 0.7, 5
    geometric_sum = sum(alpha**i for i in range(num_draft_tokens + 1))
    assert expected_tokens_per_step(alpha, num_draft_tokens) == pytest.approx(geometric_sum)
    assert theoretical_speedup(alpha, num_draft_tokens, 0.1) == pytest.approx(geometric_sum / 1.5)
    with pytest.raises(ValueError):
        expected_tokens_per_step(1.5, 4)


def test_mean_acceptance_length_counts_the_targets_token():
    assert mean_acceptance_length([3, 5], [2, 2]) == 3.0
    assert mean_acceptance_length([0, 0], [7, 1]) == 1.0
    with pytest.raises(ValueError):
        mean_acceptance_length([1], [0])
