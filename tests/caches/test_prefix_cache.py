"""PrefixCache on a bare allocator: chained keys, longest-run lookup, registration rules."""

from __future__ import annotations

import pytest

from models.kv_cache import BlockAllocator, BlockTable
from server.caches.prefix_cache import PrefixCache, block_key, root_key

BLOCK_SIZE = 4
NUM_BLOCKS = 8


def filled_table(allocator: BlockAllocator, num_tokens: int) -> BlockTable:
    """A table that holds `num_tokens` tokens, as if a forward had computed them."""
    table = BlockTable(BLOCK_SIZE)
    table.reserve(num_tokens, allocator)
    table.num_tokens = num_tokens
    return table


@pytest.fixture
def allocator() -> BlockAllocator:
    return BlockAllocator(NUM_BLOCKS)


def test_a_key_names_the_whole_prefix_and_the_salt() -> None:
    root = root_key("target|m")
    first = block_key(root, [1, 2, 3, 4])
    assert block_key(root, [1, 2, 3, 4]) == first
    # Same block tokens after a different prefix, or in another pool: different keys.
    assert block_key(block_key(root, [9, 9, 9, 9]), [1, 2, 3, 4]) != first
    assert block_key(root_key("draft|m"), [1, 2, 3, 4]) != first
    # Fixed-width ids: [1, 2] and [258] must not collide through their bytes.
    assert block_key(root, [1, 2]) != block_key(root, [258])


def test_registers_only_full_final_blocks(allocator: BlockAllocator) -> None:
    cache = PrefixCache(allocator, BLOCK_SIZE, "target")
    tokens = list(range(10, 21))  # 11 tokens: blocks [0, 4), [4, 8) full, [8, 11) partial
    table = filled_table(allocator, len(tokens))

    cache.register_final_blocks(table, tokens, num_final_tokens=7)
    assert len(table.block_keys) == 1  # block 1 holds position 7, not yet final
    cache.register_final_blocks(table, tokens, num_final_tokens=len(tokens))
    assert len(table.block_keys) == 2  # block 2 is not full
    assert [allocator.lookup(key) for key in table.block_keys] == table.block_ids[:2]


def test_attach_reuses_the_longest_run_and_retains_it(allocator: BlockAllocator) -> None:
    cache = PrefixCache(allocator, BLOCK_SIZE, "target")
    tokens = list(range(10, 22))  # three full blocks
    owner = filled_table(allocator, len(tokens))
    cache.register_final_blocks(owner, tokens, len(tokens))

    # Diverges inside block 1 (position 6): only block 0 can be reused.
    other = tokens[:6] + [99] + tokens[7:]
    table = BlockTable(BLOCK_SIZE)
    assert cache.attach_prefix(table, other, max_tokens=len(other) - 1) == BLOCK_SIZE
    assert table.block_ids == owner.block_ids[:1]
    assert allocator.ref_counts[owner.block_ids[0]] == 2

    # The cap keeps the last token to compute: 12 tokens, at most 11 reused -> two blocks.
    same = BlockTable(BLOCK_SIZE)
    assert cache.attach_prefix(same, tokens, max_tokens=len(tokens) - 1) == 2 * BLOCK_SIZE
    assert same.num_tokens == 2 * BLOCK_SIZE


def test_released_blocks_stay_findable_until_evicted(allocator: BlockAllocator) -> None:
    cache = PrefixCache(allocator, BLOCK_SIZE, "target")
    tokens = list(range(10, 18))
    owner = filled_table(allocator, len(tokens))
    cache.register_final_blocks(owner, tokens, len(tokens))
    owner.free(allocator)
    assert allocator.num_free == NUM_BLOCKS  # idle cached blocks count as free

    reuse = BlockTable(BLOCK_SIZE)
    assert cache.attach_prefix(reuse, tokens + [1], max_tokens=len(tokens)) == len(tokens)
    reuse.free(allocator)

    # Fill the pool: the cached blocks are taken back, least recently used first.
    hog = filled_table(allocator, NUM_BLOCKS * BLOCK_SIZE)
    assert allocator.num_evictions == 2
    hog.free(allocator)
    assert cache.attach_prefix(BlockTable(BLOCK_SIZE), tokens + [1], len(tokens)) == 0


def test_duplicate_content_keeps_the_first_copy(allocator: BlockAllocator) -> None:
    cache = PrefixCache(allocator, BLOCK_SIZE, "target")
    tokens = list(range(10, 15))
    first, second = filled_table(allocator, 5), filled_table(allocator, 5)
    cache.register_final_blocks(first, tokens, len(tokens))
    cache.register_final_blocks(second, tokens, len(tokens))
    assert second.block_keys == first.block_keys  # the chain goes on from the same key
    assert allocator.lookup(first.block_keys[0]) == first.block_ids[0]
    # The unregistered copy goes back to the free list, not to the cache.
    second.free(allocator)
    assert second.block_ids == [] and not allocator.idle_cached


def test_attach_refuses_a_table_in_use(allocator: BlockAllocator) -> None:
    cache = PrefixCache(allocator, BLOCK_SIZE, "target")
    with pytest.raises(ValueError, match="empty"):
        cache.attach_prefix(filled_table(allocator, 3), [1, 2, 3, 4, 5], 4)
