"""The padded draft batch both acceptance rules read, and the accepted-prefix count they share.

Sequence b proposes num_draft_tokens[b] tokens, stored left-aligned in row b of draft_token_ids
[B, K]; entries past the count are padding whose values are never read as tokens.
"""

import torch

from kernels._checks import check_shape, check_tensor

DRAFT_COUNT_DTYPES = (torch.int32, torch.int64)


def check_draft_batch(draft_token_ids: torch.Tensor, num_draft_tokens: torch.Tensor) -> None:
    """Check ndim, dtype and shape of the draft batch (not the counts' values)."""
    check_tensor("draft_token_ids", draft_token_ids, ("B", "K"), (torch.int64,))
    check_tensor("num_draft_tokens", num_draft_tokens, ("B",), DRAFT_COUNT_DTYPES)
    check_shape("num_draft_tokens", num_draft_tokens, ("B",), (draft_token_ids.shape[0],))


def check_draft_counts(num_draft_tokens: torch.Tensor, max_draft_tokens: int) -> None:
    """Check 0 <= num_draft_tokens <= K.

    Only the torch twins call this: on a GPU it would stall the stream to read the values back,
    so the Triton kernels instead clamp counts into range, which keeps their memory accesses in
    bounds but gives no meaningful result for out-of-range counts.
    """
    if num_draft_tokens.numel() == 0:
        return
    low, high = int(num_draft_tokens.min()), int(num_draft_tokens.max())
    if low < 0 or high > max_draft_tokens:
        raise ValueError(
            f"num_draft_tokens must lie in [0, K={max_draft_tokens}], got values in [{low}, {high}]"
        )


def accepted_prefix_length(rejected: torch.Tensor, num_draft_tokens: torch.Tensor) -> torch.Tensor:
    """Position of the first rejected draft token, or num_draft_tokens[b] if none was rejected.

    Args:
        rejected: [B, K] bool, True where a real (non-padding) draft token was rejected.
        num_draft_tokens: [B] draft tokens per sequence.

    Returns:
        [B] int64, the number of draft tokens accepted.
    """
    batch_size, max_draft_tokens = rejected.shape
    positions = torch.arange(max_draft_tokens, device=rejected.device).expand(batch_size, -1)
    counts = num_draft_tokens.to(torch.int64).unsqueeze(1)  # [B, 1]

    # The count column makes the minimum well defined when K == 0 or nothing was rejected.
    stop_positions = torch.cat([torch.where(rejected, positions, counts), counts], dim=1)
    return stop_positions.amin(dim=1)
