import math

import pytest
import torch

from kernels.sampling_transform import NUCLEUS_SEARCH_WIDTH, logits_to_probs

DISABLED = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
# Logits of these probabilities make every expected result below a ratio of small integers.
BASE_PROBS = [0.1, 0.2, 0.3, 0.4]


def transform(logits, **settings) -> torch.Tensor:
    """logits_to_probs on one row or a list of rows, with each setting a scalar or a list."""
    logits = torch.as_tensor(logits, dtype=torch.float32)
    rows = logits.unsqueeze(0) if logits.ndim == 1 else logits
    num_rows = rows.shape[0]
    per_row = {}
    for name, default in DISABLED.items():
        value = settings.get(name, default)
        values = value if isinstance(value, list) else [value] * num_rows
        dtype = torch.int64 if name == "top_k" else torch.float32
        per_row[name] = torch.tensor(values, dtype=dtype)
    probs = logits_to_probs(rows, **per_row)
    return probs[0] if logits.ndim == 1 else probs


def log_of(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def assert_probs(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_everything_disabled_is_softmax():
    assert_probs(transform(log_of(BASE_PROBS)), BASE_PROBS)


def test_temperature_scales_logits():
    # p ** (1 / T), renormalized: T = 2 takes square roots, T = 0.5 squares.
    roots = [math.sqrt(p) for p in BASE_PROBS]
    assert_probs(transform(log_of(BASE_PROBS), temperature=2.0), [r / sum(roots) for r in roots])
    squares = [p * p for p in BASE_PROBS]
    assert_probs(
        transform(log_of(BASE_PROBS), temperature=0.5), [s / sum(squares) for s in squares]
    )


def test_top_k_keeps_the_k_largest():
    logits = log_of(BASE_PROBS)
    assert_probs(transform(logits, top_k=1), [0.0, 0.0, 0.0, 1.0])
    assert_probs(transform(logits, top_k=2), [0.0, 0.0, 3 / 7, 4 / 7])
    assert_probs(transform(logits, top_k=3), [0.0, 2 / 9, 3 / 9, 4 / 9])


@pytest.mark.parametrize("top_k", [0, 4, 5, 151936])
def test_top_k_zero_or_at_least_vocab_keeps_all(top_k: int):
    assert_probs(transform(log_of(BASE_PROBS), top_k=top_k), BASE_PROBS)


def test_top_k_keeps_every_token_tied_with_the_kth():
    # The 2nd largest logit is 1.0, shared by three tokens: all of them stay.
    expected = _softmax_of([3.0, 1.0, 1.0, 1.0], positions=[0, 1, 2, 4], vocab_size=5)
    assert_probs(transform([3.0, 1.0, 1.0, 0.0, 1.0], top_k=2), expected)


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    logits = log_of(BASE_PROBS)
    assert_probs(transform(logits, top_p=0.35), [0.0, 0.0, 0.0, 1.0])
    assert_probs(transform(logits, top_p=0.65), [0.0, 0.0, 3 / 7, 4 / 7])
    assert_probs(transform(logits, top_p=0.75), [0.0, 2 / 9, 3 / 9, 4 / 9])
    assert_probs(transform(logits, top_p=0.95), BASE_PROBS)


def test_top_p_always_keeps_the_most_probable_token():
    assert_probs(transform(log_of(BASE_PROBS), top_p=1e-6), [0.0, 0.0, 0.0, 1.0])


def test_top_p_keeps_every_token_tied_with_the_boundary():
    # The nucleus for 0.5 is {0.4, one 0.3}; the other 0.3 is equally probable and stays too.
    assert_probs(transform(log_of([0.3, 0.4, 0.3]), top_p=0.5), [0.3, 0.4, 0.3])


def test_min_p_drops_tokens_below_a_share_of_the_maximum():
    logits = log_of(BASE_PROBS)
    assert_probs(transform(logits, min_p=0.6), [0.0, 0.0, 3 / 7, 4 / 7])
    assert_probs(transform(logits, min_p=0.45), [0.0, 2 / 9, 3 / 9, 4 / 9])
    assert_probs(transform(logits, min_p=1.0), [0.0, 0.0, 0.0, 1.0])


def test_top_p_applies_to_the_top_k_renormalized_distribution():
    # After top_k=2 the probabilities are 3/7 and 4/7 = 0.571 >= 0.55, so top_p keeps one token
    # (on the original distribution 0.4 < 0.55 would have kept two).
    assert_probs(transform(log_of(BASE_PROBS), top_k=2, top_p=0.55), [0.0, 0.0, 0.0, 1.0])


def test_all_filters_and_temperature_combined():
    # T = 0.5 squares: (1, 4, 9, 16, 25, 36) / 91; top_k=5 drops the 1; top_p=0.9 of the
    # remaining 90 needs 36 + 25 + 16 + 9 = 86 >= 81; min_p=0.3 drops 9 < 0.3 * 36.
    probs = [i / 21 for i in range(1, 7)]
    expected = [0.0, 0.0, 0.0, 16 / 77, 25 / 77, 36 / 77]
    actual = transform(log_of(probs), temperature=0.5, top_k=5, top_p=0.9, min_p=0.3)
    assert_probs(actual, expected)


def test_rows_use_their_own_settings():
    logits = [log_of(BASE_PROBS)] * 4
    settings = {"top_k": [0, 2, 0, 0], "top_p": [1.0, 1.0, 0.35, 1.0], "min_p": [0, 0, 0, 0.6]}
    expected = [BASE_PROBS, [0, 0, 3 / 7, 4 / 7], [0, 0, 0, 1.0], [0, 0, 3 / 7, 4 / 7]]
    assert_probs(transform(logits, **settings), expected)


def test_half_precision_logits_give_fp32_probs():
    logits = torch.tensor([log_of(BASE_PROBS)], dtype=torch.bfloat16)
    ones = torch.ones(1)
    probs = logits_to_probs(logits, ones, torch.zeros(1, dtype=torch.int64), ones, 0 * ones)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.softmax(logits.float(), dim=1))


@pytest.mark.parametrize("seed", range(5))
def test_random_settings_keep_only_the_top_k_and_nucleus(seed: int):
    generator = torch.Generator().manual_seed(seed)
    num_rows, vocab_size = 6, 1000
    logits = 3 * torch.randn(num_rows, vocab_size, generator=generator)
    temperature = 0.5 + torch.rand(num_rows, generator=generator)
    top_k = torch.randint(0, 60, (num_rows,), generator=generator)
    top_p = 0.5 + 0.5 * torch.rand(num_rows, generator=generator)
    top_p[0] = 1.0
    min_p = torch.zeros(num_rows)
    probs = logits_to_probs(logits, temperature, top_k, top_p, min_p)

    torch.testing.assert_close(probs.sum(dim=1), torch.ones(num_rows))
    for row in range(num_rows):
        _assert_kept_set(
            logits[row] / temperature[row], int(top_k[row]), float(top_p[row]), probs[row]
        )


def test_nucleus_wider_than_the_search_width_falls_back_to_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    vocab_size = 4 * NUCLEUS_SEARCH_WIDTH + 3
    flat = 0.1 * torch.randn(vocab_size, generator=generator)  # nucleus: most of the vocabulary
    peaked = 20 * torch.randn(vocab_size, generator=generator)  # nucleus: a few tokens
    logits = torch.stack([flat, peaked])
    ones, top_p = torch.ones(2), torch.full((2,), 0.9)
    no_top_k, no_min_p = torch.zeros(2, dtype=torch.int64), torch.zeros(2)
    probs = logits_to_probs(logits, ones, no_top_k, top_p, no_min_p)

    assert (probs[0] > 0).sum() > NUCLEUS_SEARCH_WIDTH
    for row in range(2):
        _assert_kept_set(logits[row], 0, 0.9, probs[row])
        # Alone, the peaked row never leaves the top-k search; the result must not depend on it.
        alone = logits_to_probs(
            logits[row : row + 1], ones[:1], no_top_k[:1], top_p[:1], no_min_p[:1]
        )
        assert torch.equal(alone[0], probs[row])


def _assert_kept_set(scaled_logits, top_k, top_p, probs) -> None:
    """Check the kept tokens against the definitions, computed here without the module's code."""
    order = scaled_logits.argsort(descending=True)
    if 0 < top_k < scaled_logits.numel():
        in_top_k = scaled_logits >= scaled_logits[order[top_k - 1]]
    else:
        in_top_k = torch.ones_like(scaled_logits, dtype=torch.bool)
    assert (probs[~in_top_k] == 0).all()

    # On the top-k renormalized distribution, the kept tokens must be the most probable ones,
    # reach top_p together, and fall short of it without the least probable of them.
    top_k_probs = torch.softmax(scaled_logits.masked_fill(~in_top_k, float("-inf")), dim=0)
    kept = probs > 0
    if (~kept).any():
        assert top_k_probs[kept].min() >= top_k_probs[~kept].max()
    kept_mass = top_k_probs[kept].double().sum()
    assert kept_mass >= top_p - 1e-6
    least_kept = top_k_probs[kept].min()
    assert kept_mass - top_k_probs[kept & (top_k_probs == least_kept)].double().sum() < top_p + 1e-6


def _softmax_of(logits: list[float], positions: list[int], vocab_size: int) -> list[float]:
    """Softmax of `logits` placed at `positions` of a row of zeros."""
    weights = [math.exp(x) for x in logits]
    row = [0.0] * vocab_size
    for position, weight in zip(positions, weights, strict=True):
        row[position] = weight / sum(weights)
    return row


def test_input_checks():
    logits = torch.zeros(2, 5)
    ones = torch.ones(2)
    top_k = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="logits must have 2 dimensions"):
        logits_to_probs(logits[0], ones, top_k, ones, ones)
    with pytest.raises(ValueError, match=r"temperature must have shape \[N=2\]"):
        logits_to_probs(logits, ones[:1], top_k, ones, ones)
    with pytest.raises(ValueError, match="top_k must have dtype"):
        logits_to_probs(logits, ones, top_k.int(), ones, ones)
    with pytest.raises(ValueError, match="top_p must have dtype"):
        logits_to_probs(logits, ones, top_k, ones.double(), ones)
    with pytest.raises(ValueError, match="logits must have dtype"):
        logits_to_probs(logits.long(), ones, top_k, ones, ones)
