"""Paged attention in plain torch: every sequence reads its own blocks through its block table.

All sequences of a forward are handled by one batched attention call: queries are gathered into
a padded [B, Q, H, D] batch, each sequence's blocks into a padded [B, C, Hkv, D] batch, and a mask
hides what lies past a query's own position (causality) or past the sequence's own context
(padding). The index tensors and the mask are built once per forward and shared by every layer.
B sequences, Q = most new tokens of any sequence, C = longest context rounded up to whole blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionBatch:
    """Where the T new tokens of B sequences sit, and the gathers that batch their attention."""

    slot_mapping: torch.Tensor  # [T] int64: flat KV slot each new token is written to
    block_tables: torch.Tensor  # [B, max_blocks] int64, padded with block 0 (masked out)
    query_index: torch.Tensor  # [B, Q] int64 rows of T; padding repeats a valid row
    output_rows: torch.Tensor  # [T] int64 rows of the flattened [B * Q] result, in T order
    mask: torch.Tensor  # [B, 1, Q, C] bool: True where a query may attend a key

    @classmethod
    def build(
        cls,
        slots: list[int],
        query_lens: list[int],
        context_lens: list[int],
        block_ids: list[list[int]],
        block_size: int,
        device: torch.device,
    ) -> AttentionBatch:
        """Index tensors for sequences with `query_lens[i]` new tokens, `context_lens[i]` total."""
        num_seqs, max_query = len(query_lens), max(query_lens)
        max_blocks = max(len(ids) for ids in block_ids)
        tables = torch.zeros(num_seqs, max_blocks, dtype=torch.long)
        for i, ids in enumerate(block_ids):
            tables[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)

        query_lens_t = torch.tensor(query_lens)
        starts = torch.cumsum(query_lens_t, 0) - query_lens_t  # [B]
        offsets = torch.arange(max_query)  # [Q]
        valid = offsets[None, :] < query_lens_t[:, None]  # [B, Q]
        clamped = torch.minimum(offsets[None, :], query_lens_t[:, None] - 1)
        query_index = starts[:, None] + clamped
        output_rows = (torch.arange(num_seqs)[:, None] * max_query + offsets[None, :])[valid]

        # Query j of sequence i sits at position context_len - query_len + j.
        positions = torch.tensor(context_lens)[:, None] - query_lens_t[:, None] + clamped  # [B, Q]
        key_positions = torch.arange(max_blocks * block_size)  # [C]
        mask = key_positions[None, None, :] <= positions[:, :, None]  # [B, Q, C]
        return cls(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
            block_tables=tables.to(device),
            query_index=query_index.to(device),
            output_rows=output_rows.to(device),
            mask=mask.unsqueeze(1).to(device),
        )


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
    num_seqs, max_blocks = batch.block_tables.shape
    _, block_size, num_kv_heads, head_dim = k_cache.shape
    context = max_blocks * block_size
    # [B, max_blocks, S, Hkv, D] -> [B, Hkv, C, D]
    keys = k_cache[batch.block_tables].view(num_seqs, context, num_kv_heads, head_dim)
    values = v_cache[batch.block_tables].view(num_seqs, context, num_kv_heads, head_dim)
    queries = q[batch.query_index]  # [B, Q, H, D]
    attended = F.scaled_dot_product_attention(
        queries.transpose(1, 2),  # [B, H, Q, D]
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=batch.mask,
        scale=scale,
        enable_gqa=True,
    )  # [B, H, Q, D]
    flat = attended.transpose(1, 2).reshape(num_seqs * queries.shape[1], -1, head_dim)
    return flat[batch.output_rows]
