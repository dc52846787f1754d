"""One model with its KV pool: turns per-sequence token lists into one flattened forward."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from models.attention import AttentionBatch
from models.kv_cache import BlockAllocator, BlockTable, KVCacheSpec, KVPool
from models.transformer import Transformer


@dataclass(frozen=True)
class ForwardItem:
    """Append `token_ids` to the sequence cached in `table`; score the last `num_logits` of them."""

    table: BlockTable
    token_ids: list[int]
    num_logits: int


class ModelRunner:
    """Owns a model, its KV pool and block allocator; counts the tokens it computes."""

    def __init__(
        self, model: Transformer, kv_cache_bytes: int, block_size: int, device: torch.device
    ) -> None:
        config = model.config
        dtype = model.embed_tokens.weight.dtype
        self.spec = KVCacheSpec(
            config.num_layers, config.num_kv_heads, config.head_dim, dtype, block_size
        )
        self.model = model
        self.device = device
        self.pool = KVPool(self.spec, self.spec.num_blocks_for_budget(kv_cache_bytes), device)
        self.allocator = BlockAllocator(self.pool.num_blocks)
        self.num_computed_tokens = 0
        self.busy_s = 0.0

    @property
    def block_size(self) -> int:
        return self.spec.block_size

    def new_table(self) -> BlockTable:
        return BlockTable(self.spec.block_size)

    def forward(self, items: list[ForwardItem]) -> list[torch.Tensor]:
        """Run all items in one forward; return logits [num_logits_i, V_head] per item."""
        started = time.perf_counter()
        input_ids, positions, slots, starts, rows = [], [], [], [0], []
        for item in items:
            first = item.table.num_tokens
            last = first + len(item.token_ids)
            item.table.reserve(last, self.allocator)
            item.table.num_tokens = last
            input_ids += item.token_ids
            positions += range(first, last)
            slots += item.table.slots(first, last)
            starts.append(starts[-1] + len(item.token_ids))
            rows += range(starts[-1] - item.num_logits, starts[-1])

        device = self.device
        batch = AttentionBatch.build(
            slots=slots,
            query_lens=[len(item.token_ids) for item in items],
            context_lens=[item.table.num_tokens for item in items],
            block_ids=[item.table.block_ids for item in items],
            block_size=self.spec.block_size,
            device=device,
        )
        logits = self.model(
            torch.tensor(input_ids, device=device),
            torch.tensor(positions, device=device),
            batch,
            self.pool,
            torch.tensor(rows, device=device, dtype=torch.long),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.num_computed_tokens += len(input_ids)
        self.busy_s += time.perf_counter() - started
        return list(logits.split([item.num_logits for item in items]))
