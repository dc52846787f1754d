"""Paged attention in plain torch: each sequence reads its own blocks through its block table."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionBatch:
    """Where the T new tokens of B sequences sit, flattened in one forward.

    Sequence i owns new tokens `query_starts[i]:query_starts[i + 1]`; after this forward it has
    `context_lens[i]` cached tokens (old plus new), stored in `block_tables[i]`.
    """

    slot_mapping: torch.Tensor  # [T] int64: flat KV slot each new token is written to
    query_starts: tuple[int, ...]  # B + 1 offsets into the T new tokens
    context_lens: tuple[int, ...]  # B totals, cached plus new
    block_tables: tuple[torch.Tensor, ...]  # B tensors [num_blocks_i] int64

    @property
    def num_seqs(self) -> int:
        return len(self.context_lens)


def write_kv(
    k_slots: torch.Tensor,
    v_slots: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: AttentionBatch,
) -> None:
    """Store the new tokens' keys and values. k_slots/v_slots: [N*S, Hkv, D]; k, v: [T, Hkv, D]."""
    k_slots.index_copy_(0, batch.slot_mapping, k)
    v_slots.index_copy_(0, batch.slot_mapping, v)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    batch: AttentionBatch,
    scale: float,
) -> torch.Tensor:
    """Causal attention of the new queries over each sequence's cached keys and values.

    q: [T, H, D]; k_cache, v_cache: one layer's pool, [N, S, Hkv, D] (new tokens already written).
    Returns [T, H, D].
    """
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    out = torch.empty_like(q)
    for i in range(batch.num_seqs):
        start, end = batch.query_starts[i], batch.query_starts[i + 1]
        num_new, context_len = end - start, batch.context_lens[i]
        # Gather this sequence's blocks: [blocks_i, S, Hkv, D] -> [context_len, Hkv, D].
        keys = k_cache[batch.block_tables[i]].view(-1, num_kv_heads, head_dim)[:context_len]
        values = v_cache[batch.block_tables[i]].view(-1, num_kv_heads, head_dim)[:context_len]
        mask = None
        if num_new > 1:
            # Query j sits at position context_len - num_new + j and sees keys up to it.
            query_pos = torch.arange(context_len - num_new, context_len, device=q.device)
            key_pos = torch.arange(context_len, device=q.device)
            mask = key_pos[None, :] <= query_pos[:, None]  # [num_new, context_len]
        attended = F.scaled_dot_product_attention(
            q[start:end].transpose(0, 1),  # [H, num_new, D]
            keys.transpose(0, 1),  # [Hkv, context_len, D]
            values.transpose(0, 1),
            attn_mask=mask,
            scale=scale,
            enable_gqa=True,
        )
        out[start:end] = attended.transpose(0, 1)
    return out
