"""Paged KV cache: a preallocated pool of fixed-size blocks per model, and per-sequence tables.

Dimension names used in this package:
    L  layers            Hkv  key/value heads      D  head dim
    N  blocks in a pool  S    tokens per block     T  new tokens in a forward (all sequences)

A token at logical position `p` of a sequence lives in block `table.block_ids[p // S]` at offset
`p % S`; its flat slot index is `block_id * S + offset`. Rolling back rejected draft tokens only
moves the sequence's length (and frees whole blocks past it): nothing is copied.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 16


class OutOfBlocksError(RuntimeError):
    """The pool has no free block left for an allocation."""


@dataclass(frozen=True)
class KVCacheSpec:
    """Geometry of one model's KV pool."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    block_size: int = DEFAULT_BLOCK_SIZE

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise ValueError(f"block_size must be positive, got {self.block_size}")

    @property
    def bytes_per_block(self) -> int:
        element_bytes = torch.empty((), dtype=self.dtype).element_size()
        per_token = self.num_kv_heads * self.head_dim * element_bytes
        return 2 * self.num_layers * self.block_size * per_token  # K and V in every layer

    def num_blocks_for_budget(self, budget_bytes: int) -> int:
        return max(budget_bytes // self.bytes_per_block, 1)


class KVPool:
    """The K and V tensors of one model: [L, N, S, Hkv, D] each."""

    def __init__(self, spec: KVCacheSpec, num_blocks: int, device: torch.device) -> None:
        shape = (spec.num_layers, num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim)
        self.spec = spec
        self.num_blocks = num_blocks
        self.k = torch.zeros(shape, dtype=spec.dtype, device=device)
        self.v = torch.zeros(shape, dtype=spec.dtype, device=device)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def layer_slots(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat views of one layer's K and V: [N * S, Hkv, D]."""
        spec = self.spec
        flat = (self.num_blocks * spec.block_size, spec.num_kv_heads, spec.head_dim)
        return self.k[layer].view(flat), self.v[layer].view(flat)


@dataclass
class BlockAllocator:
    """Reference-counted block ids, with a least-recently-used set of reusable cached blocks.

    A block is in exactly one of three states: free (in `free_ids`), used (ref count > 0), or
    cached-idle (ref count 0, content still valid and findable by its prefix key, kept in
    `idle_cached` in LRU order). Idle cached blocks are evicted only when no free block is left.
    """

    num_blocks: int
    free_ids: list[int] = field(default_factory=list)
    ref_counts: list[int] = field(default_factory=list)
    # block id -> content key, for blocks registered in the prefix cache.
    block_keys: dict[int, bytes] = field(default_factory=dict)
    key_to_block: dict[bytes, int] = field(default_factory=dict)
    idle_cached: OrderedDict[int, None] = field(default_factory=OrderedDict)
    # Idle cached blocks taken back for new content since start (prefix-cache evictions).
    num_evictions: int = 0

    def __post_init__(self) -> None:
        # Pop from the end, so hand out low ids first (easier to read in tests and dumps).
        self.free_ids = list(range(self.num_blocks - 1, -1, -1))
        self.ref_counts = [0] * self.num_blocks

    @property
    def num_free(self) -> int:
        """Blocks available to a new allocation (free plus evictable idle cached blocks)."""
        return len(self.free_ids) + len(self.idle_cached)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def allocate(self) -> int:
        if self.free_ids:
            block_id = self.free_ids.pop()
        elif self.idle_cached:
            block_id, _ = self.idle_cached.popitem(last=False)
            self._forget_key(block_id)
            self.num_evictions += 1
        else:
            raise OutOfBlocksError(f"KV pool exhausted ({self.num_blocks} blocks in use)")
        self.ref_counts[block_id] = 1
        return block_id

    def retain(self, block_id: int) -> None:
        if self.ref_counts[block_id] == 0:
            self.idle_cached.pop(block_id, None)
        self.ref_counts[block_id] += 1

    def release(self, block_id: int) -> None:
        count = self.ref_counts[block_id]
        if count <= 0:
            raise RuntimeError(f"block {block_id} released more times than retained")
        self.ref_counts[block_id] = count - 1
        if count > 1:
            return
        if block_id in self.block_keys:
            self.idle_cached[block_id] = None
        else:
            self.free_ids.append(block_id)

    def register_key(self, block_id: int, key: bytes) -> int:
        """Record that a full block holds the content named by `key`; return the block to use.

        If another block already holds the same content, that one is kept and the caller's block
        is returned unchanged (it simply stays unregistered).
        """
        if key in self.key_to_block or block_id in self.block_keys:
            return block_id
        self.block_keys[block_id] = key
        self.key_to_block[key] = block_id
        return block_id

    def lookup(self, key: bytes) -> int | None:
        return self.key_to_block.get(key)

    def _forget_key(self, block_id: int) -> None:
        key = self.block_keys.pop(block_id, None)
        if key is not None:
            del self.key_to_block[key]


@dataclass
class BlockTable:
    """The blocks holding one sequence's cached tokens, in order.

    `block_keys[i]` is the prefix-cache content key of block i, known for the leading blocks that
    are full and final (reused from the cache or registered since). Keys are kept even for blocks
    the allocator did not register (same content held elsewhere): the next block's key chains on
    them.
    """

    block_size: int
    block_ids: list[int] = field(default_factory=list)
    num_tokens: int = 0
    block_keys: list[bytes] = field(default_factory=list)

    def slot(self, position: int) -> int:
        return self.block_ids[position // self.block_size] * self.block_size + (
            position % self.block_size
        )

    def slots(self, start: int, end: int) -> list[int]:
        return [self.slot(p) for p in range(start, end)]

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size) - len(self.block_ids)

    def reserve(self, num_tokens: int, allocator: BlockAllocator) -> None:
        """Make room for `num_tokens` tokens in total (allocating blocks; length unchanged)."""
        for _ in range(self.blocks_needed(num_tokens)):
            self.block_ids.append(allocator.allocate())

    def truncate(self, num_tokens: int, allocator: BlockAllocator) -> None:
        """Drop tokens past `num_tokens` and release blocks no longer needed."""
        if num_tokens > self.num_tokens:
            raise ValueError(f"cannot truncate {self.num_tokens} tokens to {num_tokens}")
        self.num_tokens = num_tokens
        keep = -(-num_tokens // self.block_size)
        while len(self.block_ids) > keep:
            allocator.release(self.block_ids.pop())
        # A keyed block is full and final, so rollback never reaches one; trim anyway, so that
        # a key can never outlive the content it names.
        del self.block_keys[num_tokens // self.block_size :]

    def free(self, allocator: BlockAllocator) -> None:
        for block_id in reversed(self.block_ids):
            allocator.release(block_id)
        self.block_ids.clear()
        self.block_keys.clear()
        self.num_tokens = 0
