"""Greedy verification of draft tokens.

Under greedy decoding the target model emits argmax(target_logits) at every position, so the
speculative output equals the target's own output when we keep the longest prefix of draft tokens
that match those argmaxes and then emit the target's argmax at the first position that did not
match (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding", in the
limit of temperature 0, where sampling becomes argmax). Terms used below:

- accepted tokens: the matching draft prefix, num_accepted[b] = a tokens;
- correction token: the target's argmax at the first mismatch, emitted at position a;
- bonus token: when all num_draft_tokens[b] drafts match, the target's argmax at position
  num_draft_tokens[b], which the verification pass computed for free.

Argmax ties resolve to the lowest token id, as torch.argmax does, so the kernel and its twin agree
exactly on finite logits (rows containing NaN give an unspecified argmax).
"""

import torch

from kernels._checks import check_contiguous, check_same_device, check_shape, check_tensor
from kernels._draft_batch import accepted_prefix_length, check_draft_batch, check_draft_counts
from kernels._triton import VOCAB_BLOCK, check_launch_device, next_power_of_2, tl, triton

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _target_argmax_kernel(
    target_logits_ptr,  # [num_rows, V] fp32/bf16/fp16, num_rows = B * (K + 1)
    target_argmax_ptr,  # [num_rows] int64
    V: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # V is a compile-time constant: it is fixed per model, so this costs one compilation, and a
    # static trip count also keeps the loop runnable in Triton's interpreter.
    row = tl.program_id(0).to(tl.int64)
    row_logits_ptr = target_logits_ptr + row * V
    offsets = tl.arange(0, BLOCK_V)

    best_logit = tl.full((), float("-inf"), tl.float32)
    best_index = tl.zeros((), tl.int64)
    for chunk_start in range(0, V, BLOCK_V):
        in_vocab = chunk_start + offsets < V
        # Widening to fp32 is exact, so comparisons match torch.argmax on the original dtype.
        logits = tl.load(row_logits_ptr + chunk_start + offsets, mask=in_vocab, other=float("-inf"))
        logits = logits.to(tl.float32)
        chunk_best = tl.max(logits, axis=0)
        chunk_index = chunk_start + tl.argmax(logits, axis=0, tie_break_left=True).to(tl.int64)
        # Strictly greater: on a tie between chunks the earlier (lower) index is kept.
        improved = chunk_best > best_logit
        best_index = tl.where(improved, chunk_index, best_index)
        best_logit = tl.where(improved, chunk_best, best_logit)
    tl.store(target_argmax_ptr + row, best_index)


@triton.jit
def _greedy_accept_kernel(
    draft_token_ids_ptr,  # [B, K] int64
    num_draft_tokens_ptr,  # [B] int32/int64
    target_argmax_ptr,  # [B, K + 1] int64
    output_token_ids_ptr,  # [B, K + 1] int64
    num_accepted_ptr,  # [B] int64
    K,
    BLOCK_K: tl.constexpr,  # power of two >= K + 1
):
    seq = tl.program_id(0).to(tl.int64)
    positions = tl.arange(0, BLOCK_K)
    # Clamping keeps out-of-contract counts from reading or writing past the row.
    num_drafts = tl.minimum(tl.maximum(tl.load(num_draft_tokens_ptr + seq).to(tl.int64), 0), K)
    is_draft = positions < num_drafts

    draft_ids = tl.load(draft_token_ids_ptr + seq * K + positions, mask=is_draft, other=0)
    argmax_ids = tl.load(
        target_argmax_ptr + seq * (K + 1) + positions, mask=positions <= K, other=0
    )
    rejected = is_draft & (draft_ids != argmax_ids)
    num_accepted = tl.min(tl.where(rejected, positions, num_drafts), axis=0)

    # Accepted drafts, then the correction or bonus token at position num_accepted.
    output_ids = tl.where(positions < num_accepted, draft_ids, argmax_ids)
    output_row_ptr = output_token_ids_ptr + seq * (K + 1)
    tl.store(output_row_ptr + positions, output_ids, mask=positions <= num_accepted)
    tl.store(num_accepted_ptr + seq, num_accepted)


def _check_target_logits(target_logits: torch.Tensor, batch_size: int, num_positions: int) -> None:
    check_tensor("target_logits", target_logits, ("B", "K+1", "V"), LOGIT_DTYPES)
    vocab_size = target_logits.shape[2]
    expected = (batch_size, num_positions, vocab_size)
    check_shape("target_logits", target_logits, ("B", "K+1", "V"), expected)
    if vocab_size == 0:
        raise ValueError("target_logits must have a non-empty vocabulary dimension V")


def _check_greedy_inputs(
    draft_token_ids: torch.Tensor, num_draft_tokens: torch.Tensor, target_logits: torch.Tensor
) -> None:
    check_draft_batch(draft_token_ids, num_draft_tokens)
    batch_size, max_draft_tokens = draft_token_ids.shape
    _check_target_logits(target_logits, batch_size, max_draft_tokens + 1)
    check_same_device(
        {
            "draft_token_ids": draft_token_ids,
            "num_draft_tokens": num_draft_tokens,
            "target_logits": target_logits,
        }
    )


def target_argmax_triton(target_logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the vocabulary, lowest index on ties, computed by a Triton kernel.

    Args:
        target_logits: [B, K+1, V] fp32, bf16 or fp16, contiguous.

    Returns:
        [B, K+1] int64.
    """
    check_tensor("target_logits", target_logits, ("B", "K+1", "V"), LOGIT_DTYPES)
    check_contiguous({"target_logits": target_logits})
    check_launch_device(target_logits.device)
    batch_size, num_positions, vocab_size = target_logits.shape
    if vocab_size == 0:
        raise ValueError("target_logits must have a non-empty vocabulary dimension V")

    target_argmax = torch.empty(
        (batch_size, num_positions), dtype=torch.int64, device=target_logits.device
    )
    if target_argmax.numel() > 0:
        grid = (batch_size * num_positions,)
        _target_argmax_kernel[grid](target_logits, target_argmax, V=vocab_size, BLOCK_V=VOCAB_BLOCK)
    return target_argmax


def target_argmax_torch(target_logits: torch.Tensor) -> torch.Tensor:
    """Plain-torch twin of `target_argmax_triton` (same signature, same result)."""
    check_tensor("target_logits", target_logits, ("B", "K+1", "V"), LOGIT_DTYPES)
    if target_logits.shape[2] == 0:
        raise ValueError("target_logits must have a non-empty vocabulary dimension V")
    return target_logits.argmax(dim=-1)


def greedy_accept_triton(
    draft_token_ids: torch.Tensor, num_draft_tokens: torch.Tensor, target_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept draft tokens while they equal the target's argmax (Triton kernels).

    Args:
        draft_token_ids: [B, K] int64; entries past num_draft_tokens[b] are padding.
        num_draft_tokens: [B] int32 or int64, each in [0, K] (not checked here: reading the
            values back would stall the GPU; out-of-range counts are clamped).
        target_logits: [B, K+1, V] fp32, bf16 or fp16; position j scores the token that follows
            the prefix ending in draft token j - 1.

    Returns:
        output_token_ids: [B, K+1] int64. Row b holds the num_accepted[b] accepted drafts followed
            by the correction or bonus token; entries after that are unspecified.
        num_accepted: [B] int64, accepted draft tokens per sequence (num_accepted[b] + 1 tokens
            are emitted).
    """
    _check_greedy_inputs(draft_token_ids, num_draft_tokens, target_logits)
    tensors = {
        "draft_token_ids": draft_token_ids,
        "num_draft_tokens": num_draft_tokens,
        "target_logits": target_logits,
    }
    check_contiguous(tensors)
    check_launch_device(target_logits.device)
    batch_size, max_draft_tokens = draft_token_ids.shape

    target_argmax = target_argmax_triton(target_logits)  # [B, K+1]
    output_token_ids = torch.empty_like(target_argmax)
    num_accepted = torch.empty(batch_size, dtype=torch.int64, device=target_logits.device)
    if batch_size > 0:
        _greedy_accept_kernel[(batch_size,)](
            draft_token_ids,
            num_draft_tokens,
            target_argmax,
            output_token_ids,
            num_accepted,
            max_draft_tokens,
            BLOCK_K=next_power_of_2(max_draft_tokens + 1),
        )
    return output_token_ids, num_accepted


def greedy_accept_torch(
    draft_token_ids: torch.Tensor, num_draft_tokens: torch.Tensor, target_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch twin of `greedy_accept_triton`: same arguments, same results.

    Unlike the kernel it checks that every num_draft_tokens[b] lies in [0, K].
    """
    _check_greedy_inputs(draft_token_ids, num_draft_tokens, target_logits)
    batch_size, max_draft_tokens = draft_token_ids.shape
    check_draft_counts(num_draft_tokens, max_draft_tokens)

    target_argmax = target_logits.argmax(dim=-1)  # [B, K+1]
    positions = torch.arange(max_draft_tokens, device=draft_token_ids.device)
    is_draft = positions < num_draft_tokens.unsqueeze(1)  # [B, K]
    rejected = is_draft & (draft_token_ids != target_argmax[:, :max_draft_tokens])
    num_accepted = accepted_prefix_length(rejected, num_draft_tokens)

    # Accepted drafts, then the correction or bonus token: the argmax at position num_accepted.
    output_token_ids = target_argmax.clone()
    is_accepted = positions < num_accepted.unsqueeze(1)  # [B, K]
    output_token_ids[:, :max_draft_tokens] = torch.where(
        is_accepted, draft_token_ids, target_argmax[:, :max_draft_tokens]
    )
    return output_token_ids, num_accepted
