"""Speculative rejection sampling: verify draft tokens so the output follows the target exactly.

Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding" (algorithm 1),
and Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling".
For sequence b with n = num_draft_tokens[b] drafts x_0..x_{n-1}, proposed from draft_probs:

- accepted tokens: x_j is accepted iff accept_uniforms[b, j] < target_probs[b, j, x_j] /
  draft_probs[b, j, x_j] and every earlier draft was accepted; a = num_accepted[b];
- recovered token: at the first rejection (a < n) a replacement is drawn from the residual
  distribution normalize(max(0, target_probs[b, a] - draft_probs[b, a])) with
  recover_uniforms[b, a];
- bonus token: when all n drafts are accepted, one more token is drawn from target_probs[b, n]
  with recover_uniforms[b, n], so every step emits a + 1 tokens.

Each emitted token is then distributed exactly as the target model would sample it.

Numerical choices, identical in the kernel and its twin:

- The acceptance test is evaluated as u * draft_prob < target_prob, one correctly rounded fp32
  product instead of a division. A draft token with draft_prob == 0 (the draft could not have
  proposed it, e.g. after the draft's own top-k) is accepted iff target_prob > 0: that is the limit
  of min(1, target/draft) as draft -> 0, and it never lets a token the target rules out through.
- Residual and bonus draws use kernels.inverse_cdf: fixed-point weights and int64 prefix sums, so
  the tokens agree bit for bit whatever order the sums run in, and the drawn token always has
  positive weight (for the residual: target_probs > draft_probs there).
- If the residual is zero everywhere (draft_probs >= target_probs for every token, which for two
  distributions means they are equal up to rounding), the recovered token is drawn from
  target_probs[b, a] itself. Mathematically a rejection then has probability zero; it can only
  come from rounding or from a draft token whose draft probability was 0. Sampling the target is
  the correct conditional in the equal-distributions limit, and it never emits a token with zero
  target probability.
"""

import torch

from kernels._checks import check_contiguous, check_same_device, check_shape, check_tensor
from kernels._draft_batch import accepted_prefix_length, check_draft_batch, check_draft_counts
from kernels._triton import VOCAB_BLOCK, check_launch_device, next_power_of_2, tl, triton
from kernels.inverse_cdf import probs_to_fixed_point, sample_fixed_point, sample_residual


@triton.jit
def _rejection_sample_kernel(
    draft_token_ids_ptr,  # [B, K] int64
    num_draft_tokens_ptr,  # [B] int32/int64
    draft_probs_ptr,  # [B, K, V] fp32
    target_probs_ptr,  # [B, K + 1, V] fp32
    accept_uniforms_ptr,  # [B, K] fp32
    recover_uniforms_ptr,  # [B, K + 1] fp32
    output_token_ids_ptr,  # [B, K + 1] int64
    num_accepted_ptr,  # [B] int64
    K,
    V: tl.constexpr,  # fixed per model: one compilation, and a static trip count for the V loops
    BLOCK_K: tl.constexpr,  # power of two >= K + 1
    BLOCK_V: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    positions = tl.arange(0, BLOCK_K)
    # Clamping keeps out-of-contract counts from reading or writing past the row.
    num_drafts = tl.minimum(tl.maximum(tl.load(num_draft_tokens_ptr + seq).to(tl.int64), 0), K)
    is_draft = positions < num_drafts

    # Gather the draft and target probabilities of each proposed token: [BLOCK_K] each.
    draft_ids = tl.load(draft_token_ids_ptr + seq * K + positions, mask=is_draft, other=0)
    draft_rows = seq * K + positions  # rows of draft_probs viewed as [B * K, V]
    target_rows = seq * (K + 1) + positions  # rows of target_probs viewed as [B * (K + 1), V]
    draft_token_probs = tl.load(draft_probs_ptr + draft_rows * V + draft_ids, mask=is_draft)
    target_token_probs = tl.load(target_probs_ptr + target_rows * V + draft_ids, mask=is_draft)
    accept_uniforms = tl.load(accept_uniforms_ptr + seq * K + positions, mask=is_draft)

    rejected = is_draft & (accept_uniforms * draft_token_probs >= target_token_probs)
    num_accepted = tl.min(tl.where(rejected, positions, num_drafts), axis=0)
    output_row_ptr = output_token_ids_ptr + seq * (K + 1)
    tl.store(output_row_ptr + positions, draft_ids, mask=positions < num_accepted)
    tl.store(num_accepted_ptr + seq, num_accepted)

    # Recovered token (a rejection happened) or bonus token (all drafts accepted).
    is_recovery = num_accepted < num_drafts
    target_row_ptr = target_probs_ptr + (seq * (K + 1) + num_accepted) * V
    # Past the last draft row when num_accepted == K, but then is_recovery is false and the
    # helper reads nothing through it.
    draft_row_ptr = draft_probs_ptr + (seq * K + num_accepted) * V
    uniform = tl.load(recover_uniforms_ptr + seq * (K + 1) + num_accepted)
    token_id = sample_residual(target_row_ptr, draft_row_ptr, is_recovery, uniform, V, BLOCK_V)
    tl.store(output_row_ptr + num_accepted, token_id)


def _check_rejection_inputs(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    accept_uniforms: torch.Tensor,
    recover_uniforms: torch.Tensor,
) -> dict[str, torch.Tensor]:
    check_draft_batch(draft_token_ids, num_draft_tokens)
    batch_size, max_draft_tokens = draft_token_ids.shape
    check_tensor("draft_probs", draft_probs, ("B", "K", "V"), (torch.float32,))
    check_tensor("target_probs", target_probs, ("B", "K+1", "V"), (torch.float32,))
    check_tensor("accept_uniforms", accept_uniforms, ("B", "K"), (torch.float32,))
    check_tensor("recover_uniforms", recover_uniforms, ("B", "K+1"), (torch.float32,))

    vocab_size = target_probs.shape[2]
    if vocab_size == 0:
        raise ValueError("target_probs must have a non-empty vocabulary dimension V")
    draft_shape = (batch_size, max_draft_tokens)
    target_shape = (batch_size, max_draft_tokens + 1)
    check_shape("draft_probs", draft_probs, ("B", "K", "V"), (*draft_shape, vocab_size))
    check_shape("target_probs", target_probs, ("B", "K+1", "V"), (*target_shape, vocab_size))
    check_shape("accept_uniforms", accept_uniforms, ("B", "K"), draft_shape)
    check_shape("recover_uniforms", recover_uniforms, ("B", "K+1"), target_shape)

    tensors = {
        "draft_token_ids": draft_token_ids,
        "num_draft_tokens": num_draft_tokens,
        "draft_probs": draft_probs,
        "target_probs": target_probs,
        "accept_uniforms": accept_uniforms,
        "recover_uniforms": recover_uniforms,
    }
    check_same_device(tensors)
    return tensors


def rejection_sample_triton(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    accept_uniforms: torch.Tensor,
    recover_uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify draft tokens by speculative rejection sampling (one Triton program per sequence).

    Args:
        draft_token_ids: [B, K] int64; entries past num_draft_tokens[b] are padding.
        num_draft_tokens: [B] int32 or int64, each in [0, K] (not checked here: reading the
            values back would stall the GPU; out-of-range counts are clamped).
        draft_probs: [B, K, V] fp32, the distribution each draft token was sampled from.
        target_probs: [B, K+1, V] fp32, the target's distribution at each position, after the
            same probability transform as the draft's.
        accept_uniforms: [B, K] fp32 in [0, 1), one per draft token.
        recover_uniforms: [B, K+1] fp32 in [0, 1), for the recovered or bonus token.

    Returns:
        output_token_ids: [B, K+1] int64. Row b holds the num_accepted[b] accepted drafts followed
            by the recovered or bonus token; entries after that are unspecified.
        num_accepted: [B] int64, accepted draft tokens per sequence (num_accepted[b] + 1 tokens
            are emitted).
    """
    tensors = _check_rejection_inputs(
        draft_token_ids,
        num_draft_tokens,
        draft_probs,
        target_probs,
        accept_uniforms,
        recover_uniforms,
    )
    check_contiguous(tensors)
    check_launch_device(target_probs.device)
    batch_size, max_draft_tokens = draft_token_ids.shape

    device = target_probs.device
    output_token_ids = torch.empty(
        (batch_size, max_draft_tokens + 1), dtype=torch.int64, device=device
    )
    num_accepted = torch.empty(batch_size, dtype=torch.int64, device=device)
    if batch_size > 0:
        _rejection_sample_kernel[(batch_size,)](
            draft_token_ids,
            num_draft_tokens,
            draft_probs,
            target_probs,
            accept_uniforms,
            recover_uniforms,
            output_token_ids,
            num_accepted,
            max_draft_tokens,
            V=target_probs.shape[2],
            BLOCK_K=next_power_of_2(max_draft_tokens + 1),
            BLOCK_V=VOCAB_BLOCK,
        )
    return output_token_ids, num_accepted


def rejection_sample_torch(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    accept_uniforms: torch.Tensor,
    recover_uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch twin of `rejection_sample_triton`: same arguments, bit-identical results.

    Unlike the kernel it checks that every num_draft_tokens[b] lies in [0, K].
    """
    _check_rejection_inputs(
        draft_token_ids,
        num_draft_tokens,
        draft_probs,
        target_probs,
        accept_uniforms,
        recover_uniforms,
    )
    batch_size, max_draft_tokens = draft_token_ids.shape
    check_draft_counts(num_draft_tokens, max_draft_tokens)

    num_accepted = _accept_drafts(
        draft_token_ids, num_draft_tokens, draft_probs, target_probs, accept_uniforms
    )
    token_ids = _recover_or_bonus(
        num_accepted, num_draft_tokens, draft_probs, target_probs, recover_uniforms
    )

    output_token_ids = torch.cat([draft_token_ids, token_ids.unsqueeze(1)], dim=1)  # [B, K+1]
    output_token_ids.scatter_(1, num_accepted.unsqueeze(1), token_ids.unsqueeze(1))
    return output_token_ids, num_accepted


def _accept_drafts(
    draft_token_ids: torch.Tensor,  # [B, K]
    num_draft_tokens: torch.Tensor,  # [B]
    draft_probs: torch.Tensor,  # [B, K, V]
    target_probs: torch.Tensor,  # [B, K+1, V]
    accept_uniforms: torch.Tensor,  # [B, K]
) -> torch.Tensor:
    """Number of drafts accepted per sequence: [B] int64."""
    max_draft_tokens = draft_token_ids.shape[1]
    positions = torch.arange(max_draft_tokens, device=draft_token_ids.device)
    is_draft = positions < num_draft_tokens.unsqueeze(1)  # [B, K]

    # Padding ids may be anything, so they are replaced before being used as indices.
    token_index = torch.where(is_draft, draft_token_ids, 0).unsqueeze(2)  # [B, K, 1]
    draft_token_probs = draft_probs.gather(2, token_index).squeeze(2)  # [B, K]
    target_token_probs = target_probs[:, :max_draft_tokens].gather(2, token_index).squeeze(2)

    rejected = is_draft & (accept_uniforms * draft_token_probs >= target_token_probs)
    return accepted_prefix_length(rejected, num_draft_tokens)


def _recover_or_bonus(
    num_accepted: torch.Tensor,  # [B]
    num_draft_tokens: torch.Tensor,  # [B]
    draft_probs: torch.Tensor,  # [B, K, V]
    target_probs: torch.Tensor,  # [B, K+1, V]
    recover_uniforms: torch.Tensor,  # [B, K+1]
) -> torch.Tensor:
    """The token emitted at position num_accepted[b]: recovered or bonus. Returns [B] int64."""
    batch_size, max_draft_tokens = draft_probs.shape[:2]
    seqs = torch.arange(batch_size, device=num_accepted.device)
    is_recovery = num_accepted < num_draft_tokens  # [B]
    target_weights = probs_to_fixed_point(target_probs[seqs, num_accepted])  # [B, V]

    if max_draft_tokens == 0:
        draft_weights = torch.zeros_like(target_weights)
    else:
        # Rows at num_accepted == K do not exist; their (clamped) row is masked out below.
        draft_rows = draft_probs[seqs, num_accepted.clamp_max(max_draft_tokens - 1)]  # [B, V]
        draft_weights = probs_to_fixed_point(draft_rows) * is_recovery.unsqueeze(1)
    residual = (target_weights - draft_weights).clamp_min(0)
    has_residual = residual.sum(dim=1, keepdim=True) > 0  # [B, 1]
    weights = torch.where(has_residual, residual, target_weights)

    uniforms = recover_uniforms.gather(1, num_accepted.unsqueeze(1)).squeeze(1)  # [B]
    return sample_fixed_point(weights, uniforms)
