"""Paged attention in plain torch: every sequence reads its own blocks through its block table.

All sequences of a forward share one batched attention computation: queries are gathered into
a padded [B, Q, H, D] batch, each sequence's blocks into a padded [B, C, Hkv, D] batch, and a mask
hides what lies past a query's own position (causality) or past the sequence's own context
(padding). The index tensors and the mask are built once per forward and shared by every layer.
B sequences, Q = most new tokens of any sequence, C = longest context rounded up to whole blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

    Written as two matmuls around a float32 softmax rather than a fused kernel because each query
    row's result must not depend on how many rows share the call: a verify step scores k + 1
    positions at once and must give the same logits as k + 1 single-token steps, or greedy
    speculative output drifts from target-only output in bfloat16. The fused CPU kernel splits
    its work by the number of queries; plain matmuls here compute every row the same way.
    """
    num_seqs, max_blocks = batch.block_tables.shape
    _, block_size, num_kv_heads, head_dim = k_cache.shape
    context = max_blocks * block_size
    num_heads = q.shape[1]
    group = num_heads // num_kv_heads
    # [B, max_blocks, S, Hkv, D] -> [B, Hkv, C, D]
    keys = k_cache[batch.block_tables].view(num_seqs, context, num_kv_heads, head_dim)
    values = v_cache[batch.block_tables].view(num_seqs, context, num_kv_heads, head_dim)
    keys, values = keys.transpose(1, 2), values.transpose(1, 2)
    queries = q[batch.query_index]  # [B, Q, H, D]
    max_query = queries.shape[1]
    # Query heads grouped under their KV head: [B, Hkv, G * Q, D], row g * Q + j.
    grouped = queries.view(num_seqs, max_query, num_kv_heads, group, head_dim)
    grouped = grouped.permute(0, 2, 3, 1, 4).reshape(num_seqs, num_kv_heads, group * max_query, -1)
    mask = batch.mask.expand(num_seqs, group, max_query, context)
    mask = mask.reshape(num_seqs, 1, group * max_query, context)

    out = torch.empty_like(grouped)
    for start in range(0, group * max_query, QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        scores = torch.matmul(grouped[:, :, rows], keys.transpose(-1, -2)).float() * scale
        scores = scores.masked_fill(~mask[:, :, rows], float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        out[:, :, rows] = torch.matmul(probs, values)  # [B, Hkv, rows, D]

    # [B, Hkv, G, Q, D] -> [B, Q, H, D] -> rows of T
    out = out.view(num_seqs, num_kv_heads, group, max_query, head_dim).permute(0, 3, 1, 2, 4)
    return out.reshape(num_seqs * max_query, num_heads, head_dim)[batch.output_rows]


# Query rows scored per matmul: bounds the float32 score matrix on long prefills.
QUERY_CHUNK = 1024
