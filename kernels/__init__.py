"""Sampling and acceptance kernels: Triton kernels on CUDA, their plain-torch twins elsewhere.

Each module holds one kernel family: the Triton kernel, a launcher that checks ndim, dtype,
contiguity and device, and a torch twin with the same signature and the same results. The
functions here pick the kernel when the tensors live on a CUDA device and Triton is importable,
and the twin otherwise (CPU, macOS, machines without Triton).

Dimension names used throughout the package:

- B: sequences in the batch;
- K: draft tokens per sequence in this step, padded to the longest; sequence b has
  num_draft_tokens[b] <= K real ones and the rest of its row is padding, never read as tokens;
- V: vocabulary size, any positive integer;
- N: rows of a flat batch of distributions (one per sequence for plain sampling).
"""

import torch

from kernels import greedy_acceptance, inverse_cdf, rejection_sampling
from kernels._triton import TRITON_AVAILABLE
from kernels.sampling_transform import logits_to_probs

__all__ = [
    "greedy_accept",
    "logits_to_probs",
    "rejection_sample",
    "sample_from_probs",
    "target_argmax",
    "use_triton",
]


def use_triton(device: torch.device) -> bool:
    """Whether tensors on `device` go to the Triton kernels (CUDA with Triton installed)."""
    return device.type == "cuda" and TRITON_AVAILABLE


def target_argmax(target_logits: torch.Tensor) -> torch.Tensor:
    """[B, K+1, V] logits -> [B, K+1] int64 argmax, lowest index on ties."""
    if use_triton(target_logits.device):
        return greedy_acceptance.target_argmax_triton(target_logits)
    return greedy_acceptance.target_argmax_torch(target_logits)


def greedy_accept(
    draft_token_ids: torch.Tensor, num_draft_tokens: torch.Tensor, target_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification; see `kernels.greedy_acceptance.greedy_accept_triton`."""
    if use_triton(target_logits.device):
        accept = greedy_acceptance.greedy_accept_triton
    else:
        accept = greedy_acceptance.greedy_accept_torch
    return accept(draft_token_ids, num_draft_tokens, target_logits)


def rejection_sample(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    accept_uniforms: torch.Tensor,
    recover_uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative rejection sampling; see `kernels.rejection_sampling.rejection_sample_triton`."""
    if use_triton(target_probs.device):
        sample = rejection_sampling.rejection_sample_triton
    else:
        sample = rejection_sampling.rejection_sample_torch
    return sample(
        draft_token_ids,
        num_draft_tokens,
        draft_probs,
        target_probs,
        accept_uniforms,
        recover_uniforms,
    )


def sample_from_probs(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """[N, V] probabilities, [N] uniforms in [0, 1) -> [N] int64 tokens by inverse CDF."""
    if use_triton(probs.device):
        return inverse_cdf.sample_from_probs_triton(probs, uniforms)
    return inverse_cdf.sample_from_probs_torch(probs, uniforms)
