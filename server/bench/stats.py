"""Statistics for the benchmark: percentiles, paired-bootstrap speedup intervals, and the expected
speedup of speculative decoding from its acceptance rate (Leviathan et al., 2023, "Fast
Inference from Transformers via Speculative Decoding").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Resamples for the bootstrap: the Monte-Carlo error of a 95% percentile bound is then
# well under a percent of the interval's width, and 10k x a few hundred prompts is a
# small matrix.
DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
# A fixed seed makes a report's interval reproducible from its recorded inputs.
DEFAULT_SEED = 0
PERCENT = 100.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) with linear interpolation between order statistics."""
    if len(values) == 0:
        raise ValueError("percentile of no values is undefined")
    if not 0.0 <= q <= PERCENT:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def bootstrap_ratio_ci(
    numerators_a: Sequence[float],
    denominators_a: Sequence[float],
    numerators_b: Sequence[float],
    denominators_b: Sequence[float],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float, float]:
    """Speedup of method A over B with a paired percentile-bootstrap interval: (point, low, high).

    With tokens as numerators and seconds as denominators, one entry per prompt for each
    method, speedup = (sum tokens_a / sum time_a) / (sum tokens_b / sum time_b): a ratio
    of aggregate throughputs, in which each prompt weighs by the tokens it generated.
    Each resample draws prompt indices with replacement and applies the same draw to
    both methods, keeping the pairing that cancels per-prompt difficulty; low and high
    are the (1 -/+ confidence) / 2 quantiles of the resampled speedups (Efron and
    Tibshirani, 1993, ch. 13).
    """
    columns = _paired_columns(numerators_a, denominators_a, numerators_b, denominators_b)
    if n_resamples <= 0:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    point = float(_speedup(columns.sum(axis=1)))

    num_prompts = columns.shape[1]
    rng = np.random.default_rng(seed)
    # How often each prompt is drawn in each resample, the same as drawing indices with
    # replacement: [n_resamples, num_prompts].
    draw_counts = rng.multinomial(num_prompts, np.full(num_prompts, 1.0 / num_prompts), n_resamples)
    resampled_sums = draw_counts @ columns.T  # [n_resamples, 4]
    speedups = _speedup(resampled_sums.T)  # [n_resamples]

    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(speedups, [tail, 1.0 - tail])
    return point, float(low), float(high)


def _paired_columns(*columns: Sequence[float]) -> np.ndarray:
    """The four per-prompt columns stacked as [4, num_prompts], checked for a usable bootstrap."""
    lengths = {len(column) for column in columns}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"need four equally long, non-empty columns, got lengths {sorted(lengths)}"
        )
    stacked = np.asarray(columns, dtype=np.float64)
    # Strictly positive entries keep every resampled sum positive: no ratio is inf or nan.
    if not np.all((stacked > 0) & np.isfinite(stacked)):
        raise ValueError("every prompt needs a finite, positive token count and time per method")
    return stacked


def _speedup(sums: np.ndarray) -> np.ndarray:
    """Throughput of A over throughput of B from sums [4, ...] = (tokens_a, s_a, tokens_b, s_b)."""
    tokens_a, time_a, tokens_b, time_b = sums
    speedup: np.ndarray = (tokens_a / time_a) / (tokens_b / time_b)
    return speedup


def expected_tokens_per_step(acceptance_rate: float, num_draft_tokens: int) -> float:
    """Expected tokens one draft-and-verify step emits, (1 - alpha^(k+1)) / (1 - alpha).

    Leviathan et al. 2023, eq. 1, with alpha the per-token acceptance rate (assumed
    i.i.d.) and k draft tokens per step; the count includes the target's own token, so
    it lies in [1, k + 1] and equals k + 1 at alpha = 1 (the limit of the formula).
    """
    if not 0.0 <= acceptance_rate <= 1.0:
        raise ValueError(f"acceptance rate must lie in [0, 1], got {acceptance_rate}")
    if num_draft_tokens < 0:
        raise ValueError(f"number of draft tokens must be non-negative, got {num_draft_tokens}")
    if acceptance_rate == 1.0:
        return float(num_draft_tokens + 1)
    return (1.0 - acceptance_rate ** (num_draft_tokens + 1)) / (1.0 - acceptance_rate)


def theoretical_speedup(acceptance_rate: float, num_draft_tokens: int, cost_ratio: float) -> float:
    """Expected walltime speedup of speculative decoding over plain decoding.

    Leviathan et al. 2023, theorem 3.8:

        (1 - alpha^(k+1)) / ((1 - alpha) (k c + 1)),

    with alpha the acceptance rate, k = `num_draft_tokens` per step and c = `cost_ratio`,
    the time of one draft forward pass over that of one target pass. It assumes that
    verifying k + 1 tokens takes one target pass. At alpha = 1 it is (k + 1) / (k c + 1).
    """
    if cost_ratio < 0:
        raise ValueError(f"cost ratio must be non-negative, got {cost_ratio}")
    tokens_per_step = expected_tokens_per_step(acceptance_rate, num_draft_tokens)
    return tokens_per_step / (num_draft_tokens * cost_ratio + 1.0)


def mean_acceptance_length(accepted: Sequence[int], steps: Sequence[int]) -> float:
    """Mean tokens emitted per draft-and-verify step, tau = (sum accepted + sum steps) / sum steps.

    `accepted` counts draft tokens the target accepted and `steps` the verify steps, per
    prompt (or per request). Every step also emits one token of the target's own (the
    correction or the bonus token), hence the added steps: tau is comparable to
    `expected_tokens_per_step`, and is what Spec-Bench reports as mean accepted tokens.
    """
    if len(accepted) != len(steps):
        raise ValueError(f"{len(accepted)} accepted counts but {len(steps)} step counts")
    total_steps = int(np.sum(steps))
    if total_steps <= 0:
        raise ValueError("mean acceptance length needs at least one step")
    return (float(np.sum(accepted)) + total_steps) / total_steps


# Bisection halves the bracket per step: 60 steps pin alpha far below float precision needs.
BISECTION_STEPS = 60


def implied_acceptance_rate(tokens_per_step: float, drafted_per_step: float) -> float:
    """The i.i.d. acceptance rate alpha at which eq. 1 yields the measured tokens per step.

    Inverts `expected_tokens_per_step`, (1 - alpha^(k+1)) / (1 - alpha) = tau, for alpha in
    [0, 1], with k = `drafted_per_step` allowed to be fractional (a mean over steps of
    varying length). The left side grows with alpha from 1 to k + 1, so bisection finds it;
    tau outside [1, k + 1] is an error.
    """
    if drafted_per_step <= 0:
        raise ValueError(f"drafted tokens per step must be positive, got {drafted_per_step}")
    if not 1.0 <= tokens_per_step <= drafted_per_step + 1.0:
        raise ValueError(
            f"tokens per step must lie in [1, k + 1] = [1, {drafted_per_step + 1}], "
            f"got {tokens_per_step}"
        )

    def tokens_at(alpha: float) -> float:
        if alpha >= 1.0:
            return drafted_per_step + 1.0
        return (1.0 - alpha ** (drafted_per_step + 1.0)) / (1.0 - alpha)

    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2.0
        if tokens_at(middle) < tokens_per_step:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0
