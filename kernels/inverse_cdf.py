"""Inverse-CDF sampling from a probability row, exact to the last bit on every device.

A token is drawn from weights w [V] with a uniform u in [0, 1) as

    token = the smallest i with cumsum(w)[i] > floor(u * sum(w)),

which is the standard inverse-CDF draw. Three choices make it reproducible and safe:

- Fixed point. Each fp32 probability p becomes the integer trunc(p * 2**PROB_FIXED_POINT_BITS)
  (an exact scaling, then truncation), and prefix sums run in int64. Integer addition is
  associative, so a Triton scan, a chunked loop and torch.cumsum give bit-identical sums whatever
  order they add in; fp32 prefix sums would differ between the GPU scan, the interpreter and torch.
- The threshold floor(u * sum(w)) is computed in float64 from the fp32 u and the int64 total
  (both converted exactly), then truncated to int64: one correctly rounded multiplication.
- Strict ">" on a nondecreasing integer prefix sum means the chosen token always has w[i] > 0:
  for i > 0, w[i] == 0 would give cumsum[i] == cumsum[i-1] <= threshold; for i == 0,
  cumsum[0] > threshold >= 0. And threshold < sum(w) whenever u < 1 and sum(w) > 0, so a
  token is always found.

Probabilities below 2**-PROB_FIXED_POINT_BITS are dropped by the truncation; over V=151936 tokens
that is at most 1.4e-7 of the mass, below fp32's own rounding of a sum of that many terms.

The speculative recovery step (see kernels.rejection_sampling) draws from the residual
max(0, target - draft) through the same helper, so plain and speculative sampling share one
definition of "sample a token".
"""

import torch

from kernels._checks import check_contiguous, check_same_device, check_shape, check_tensor
from kernels._triton import VOCAB_BLOCK, check_launch_device, tl, triton

# 2**-40 resolution per token: fine enough that the dropped mass is negligible (see above), coarse
# enough that a row of V <= 2**22 probabilities, each <= 1, sums to at most 2**62 without int64
# overflow, and that a normalized row's total (about 2**40 < 2**53) converts to float64 exactly.
PROB_FIXED_POINT_BITS = 40
PROB_FIXED_POINT_SCALE = float(2**PROB_FIXED_POINT_BITS)
_FIXED_POINT_SCALE = tl.constexpr(PROB_FIXED_POINT_SCALE)  # Triton reads globals only as constexpr


@triton.jit
def sample_residual(
    target_row_ptr,  # [V] fp32
    draft_row_ptr,  # [V] fp32, read only where subtract_draft
    subtract_draft,  # scalar bool: sample max(0, target - draft) instead of target
    uniform,  # scalar fp32 in [0, 1)
    V: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Inverse-CDF draw from the fixed-point residual max(0, target - draft), or from target when
    subtract_draft is false or the residual is all zero (see kernels.rejection_sampling)."""
    offsets = tl.arange(0, BLOCK_V)

    # Pass 1: totals of the residual and of the target, to pick the weights and the threshold.
    residual_total = tl.zeros((), tl.int64)
    target_total = tl.zeros((), tl.int64)
    for chunk_start in range(0, V, BLOCK_V):
        in_vocab = chunk_start + offsets < V
        target_weights = _load_fixed_point(target_row_ptr + chunk_start + offsets, in_vocab)
        draft_weights = _load_fixed_point(
            draft_row_ptr + chunk_start + offsets, in_vocab & subtract_draft
        )
        residual_total += tl.sum(tl.maximum(target_weights - draft_weights, 0), axis=0)
        target_total += tl.sum(target_weights, axis=0)
    use_residual = subtract_draft & (residual_total > 0)
    total = tl.where(use_residual, residual_total, target_total)
    threshold = (uniform.to(tl.float64) * total.to(tl.float64)).to(tl.int64)

    # Pass 2: count prefix sums <= threshold; that count is the first index whose sum exceeds it.
    prefix_total = tl.zeros((), tl.int64)
    num_below = tl.zeros((), tl.int64)
    for chunk_start in range(0, V, BLOCK_V):
        in_vocab = chunk_start + offsets < V
        weights = _load_fixed_point(target_row_ptr + chunk_start + offsets, in_vocab)
        draft_weights = _load_fixed_point(
            draft_row_ptr + chunk_start + offsets, in_vocab & use_residual
        )
        weights = tl.maximum(weights - draft_weights, 0)
        prefix_sums = prefix_total + tl.cumsum(weights, axis=0)
        num_below += tl.sum((in_vocab & (prefix_sums <= threshold)).to(tl.int64), axis=0)
        prefix_total += tl.sum(weights, axis=0)

    # Only an out-of-contract uniform (>= 1) or an all-zero row leaves every sum <= threshold;
    # the clamp keeps even that output a valid token id.
    return tl.minimum(num_below, V - 1)


@triton.jit
def _load_fixed_point(probs_ptr, mask):
    probs = tl.load(probs_ptr, mask=mask, other=0.0)
    return (probs * _FIXED_POINT_SCALE).to(tl.int64)


@triton.jit
def _sample_from_probs_kernel(
    probs_ptr,  # [N, V] fp32
    uniforms_ptr,  # [N] fp32
    token_ids_ptr,  # [N] int64
    V: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_probs_ptr = probs_ptr + row * V
    uniform = tl.load(uniforms_ptr + row)
    # Subtraction is off, so the draft pointer is never read.
    subtract_draft = tl.zeros((), tl.int1)
    token_id = sample_residual(row_probs_ptr, row_probs_ptr, subtract_draft, uniform, V, BLOCK_V)
    tl.store(token_ids_ptr + row, token_id)


def probs_to_fixed_point(probs: torch.Tensor) -> torch.Tensor:
    """fp32 probabilities [..., V] -> int64 weights trunc(p * 2**PROB_FIXED_POINT_BITS)."""
    return (probs * PROB_FIXED_POINT_SCALE).to(torch.int64)


def sample_fixed_point(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from int64 weights [N, V] with uniforms [N]; returns [N] int64."""
    prefix_sums = weights.cumsum(dim=-1)  # [N, V], exact in int64
    totals = prefix_sums[:, -1]
    thresholds = (uniforms.to(torch.float64) * totals.to(torch.float64)).to(torch.int64)
    num_below = (prefix_sums <= thresholds.unsqueeze(1)).sum(dim=-1)
    return num_below.clamp_max(weights.shape[-1] - 1)


def _check_sampling_inputs(probs: torch.Tensor, uniforms: torch.Tensor) -> None:
    check_tensor("probs", probs, ("N", "V"), (torch.float32,))
    check_tensor("uniforms", uniforms, ("N",), (torch.float32,))
    check_shape("uniforms", uniforms, ("N",), (probs.shape[0],))
    if probs.shape[1] == 0:
        raise ValueError("probs must have a non-empty vocabulary dimension V")
    check_same_device({"probs": probs, "uniforms": uniforms})


def sample_from_probs_triton(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one token per row by inverse CDF (Triton kernel).

    Args:
        probs: [N, V] fp32, nonnegative, each row summing to about 1 (normalization is implicit,
            so unnormalized nonnegative weights work too).
        uniforms: [N] fp32 in [0, 1), one per row.

    Returns:
        [N] int64 token ids; a token whose probability is 0 is never returned for a row with
        positive mass.
    """
    _check_sampling_inputs(probs, uniforms)
    check_contiguous({"probs": probs, "uniforms": uniforms})
    check_launch_device(probs.device)
    num_rows, vocab_size = probs.shape

    token_ids = torch.empty(num_rows, dtype=torch.int64, device=probs.device)
    if num_rows > 0:
        _sample_from_probs_kernel[(num_rows,)](
            probs, uniforms, token_ids, V=vocab_size, BLOCK_V=VOCAB_BLOCK
        )
    return token_ids


def sample_from_probs_torch(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Plain-torch twin of `sample_from_probs_triton`: same arguments, bit-identical tokens."""
    _check_sampling_inputs(probs, uniforms)
    return sample_fixed_point(probs_to_fixed_point(probs), uniforms)
