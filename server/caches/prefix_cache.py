"""Prefix caching: a new sequence reuses the KV of full blocks that hold exactly its first tokens.

Keys. Block i of a sequence (tokens [i * S, (i + 1) * S)) is named by a chained hash

    key(-1) = H(salt),    key(i) = H(key(i - 1) || token ids of block i)

so a key stands for the block's tokens *and* every token before them. That is what makes reuse
sound: the K and V at a position depend on the whole prefix, not on the block's own tokens alone.
The salt names the model and its role, so the target's pool and the draft's pool, which hold
different models' KV, never answer each other's keys even when both models are the same network.

When a block gets its key (registration). Only when it is full and its content is final: every
token in it is accepted and will never be rolled back. The engine states the bound: positions
below `num_final_tokens` are final (for the target, everything before the newest token once the
step's rejected drafts are rolled back; the draft's cached prefix is at most that). A registered
block is then read-only for everybody, its owner included, because a sequence only ever writes at
positions at or past its table's `num_tokens`, which lies past its last full block.

Reuse. An admitted sequence walks its keys from the first block and retains every block found,
stopping at the first miss (a later block cannot be reused without all blocks before it). Blocks
are retained before anything else allocates in that step, so eviction cannot take them between
the lookup and the prefill. At least one token is always left to compute: its logits (or, for a
resumed sequence, the next forward's input position) must exist.

Eviction is the allocator's: a released block that carries a key becomes idle-cached instead of
free, still findable, and is taken back least recently used first only when no free block is left.

This module knows blocks and token ids only (it imports nothing above `models/`), so the engine,
which decides when content is final, can use it without depending on the server's upper layers.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

from models.kv_cache import BlockAllocator, BlockTable

# 256-bit keys: a collision would silently serve another prompt's KV, so make it unthinkable.
KEY_BYTES = 32


def block_key(parent_key: bytes, token_ids: Sequence[int]) -> bytes:
    """The key of a full block holding `token_ids`, after the prefix named by `parent_key`."""
    digest = hashlib.blake2b(parent_key, digest_size=KEY_BYTES)
    # Fixed-width 64-bit ids: a byte string of ids can be read back one way only.
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


def root_key(salt: str) -> bytes:
    """The key "before block 0" of one pool; `salt` names the model and its role."""
    return hashlib.blake2b(salt.encode(), digest_size=KEY_BYTES).digest()


class PrefixCache:
    """Looks up and registers full blocks of one model's KV pool by content key."""

    def __init__(self, allocator: BlockAllocator, block_size: int, salt: str) -> None:
        self.allocator = allocator
        self.block_size = block_size
        self.root_key = root_key(salt)

    def attach_prefix(self, table: BlockTable, token_ids: list[int], max_tokens: int) -> int:
        """Fill an empty `table` with the longest cached run of full blocks of `token_ids`.

        Only blocks lying wholly within the first `max_tokens` tokens are considered. Each block
        found is retained (shared, read-only). Returns the number of tokens reused.
        """
        if table.block_ids:
            raise ValueError("a prefix can only be attached to an empty block table")
        size = self.block_size
        parent = self.root_key
        for start in range(0, max_tokens - size + 1, size):
            key = block_key(parent, token_ids[start : start + size])
            block_id = self.allocator.lookup(key)
            if block_id is None:
                break
            # Retain at once: a later lookup never allocates, but the caller's next step does.
            self.allocator.retain(block_id)
            table.block_ids.append(block_id)
            table.block_keys.append(key)
            parent = key
        table.num_tokens = len(table.block_ids) * size
        return table.num_tokens

    def register_final_blocks(
        self, table: BlockTable, token_ids: list[int], num_final_tokens: int
    ) -> None:
        """Key and register the table's full blocks whose tokens all lie below `num_final_tokens`.

        `token_ids` is the sequence's text; position p of the table holds the KV of
        `token_ids[p]` for every p below `num_final_tokens` (the caller's guarantee). Blocks
        already keyed are skipped, so calling this after every step costs only the new blocks.
        """
        size = self.block_size
        # Bounded by what the table holds too: the draft's cache may trail the text.
        num_full = min(table.num_tokens, num_final_tokens) // size
        parent = table.block_keys[-1] if table.block_keys else self.root_key
        for index in range(len(table.block_keys), num_full):
            key = block_key(parent, token_ids[index * size : (index + 1) * size])
            # If another block already holds this content, the allocator keeps that one and
            # leaves ours unregistered (it is freed, not cached, when released); the key is still
            # recorded here because the next block's key chains on it.
            self.allocator.register_key(table.block_ids[index], key)
            table.block_keys.append(key)
            parent = key
