"""The block manager's accounting: blocks on demand, freeing, reference counts with
copy-on-write, prefix caching (reuse without new blocks) and least-recently-freed eviction."""

from __future__ import annotations

import pytest

from lamina.text import BlockManager, NoFreeBlocksError


def test_allocation_takes_the_blocks_a_prompt_fills_and_slots_follow_the_table():
    manager = BlockManager(num_blocks=8, block_size=4)
    assert manager.allocate(0, list(range(10))) == 0
    table = manager.block_table(0)
    assert len(table) == 3 and manager.num_free_blocks == 5
    assert [manager.ref_counts[b] for b in table] == [1, 1, 1]
    assert manager.slot(0, 9) == table[2] * 4 + 1
    assert manager.slot(0, 4) == table[1] * 4


def test_append_takes_a_block_only_when_the_last_one_is_full():
    manager = BlockManager(num_blocks=4, block_size=2)
    manager.allocate(0, [5, 6, 7])
    slot, copy = manager.append_slot(0, 8)                     # fills block 2 of 2
    assert copy is None and manager.num_free_blocks == 2 and slot == manager.block_table(0)[1] * 2 + 1
    manager.append_slot(0, 9)                                  # opens a third block
    assert len(manager.block_table(0)) == 3 and manager.num_free_blocks == 1
    assert manager.can_append(0)
    for token in (10, 11, 12):
        manager.append_slot(0, token)
    assert manager.num_free_blocks == 0 and not manager.can_append(0)
    with pytest.raises(NoFreeBlocksError, match="4 blocks"):
        manager.append_slot(0, 13)


def test_free_returns_every_block():
    manager = BlockManager(num_blocks=6, block_size=3, enable_prefix_caching=False)
    manager.allocate(0, [1, 2, 3, 4])
    manager.allocate(1, [7])
    assert manager.num_free_blocks == 3
    manager.free(0)
    assert manager.num_free_blocks == 5 and manager.ref_counts.count(0) == 5
    manager.free(1)
    assert manager.num_free_blocks == 6
    with pytest.raises(KeyError, match="no sequence 1"):
        manager.block_table(1)


def test_fork_shares_blocks_and_writing_a_shared_block_copies_it():
    manager = BlockManager(num_blocks=8, block_size=4)
    manager.allocate(0, [1, 2, 3, 4, 5, 6])                   # one full block and a half-full one
    manager.fork(0, 1)
    full, partial = manager.block_table(0)
    assert manager.ref_counts[full] == manager.ref_counts[partial] == 2 and manager.num_free_blocks == 6
    slot, copy = manager.append_slot(1, 7)
    new = manager.block_table(1)[1]
    assert copy == (partial, new) and new != partial and slot == new * 4 + 2
    assert manager.block_table(1)[0] == full
    assert manager.ref_counts[partial] == 1 and manager.ref_counts[new] == 1 and manager.ref_counts[full] == 2
    _, copy = manager.append_slot(0, 9)                      # the parent's block is its own again: no copy
    assert copy is None and manager.block_table(0) == [full, partial]
    manager.free(1)
    assert manager.ref_counts[full] == 1 and manager.ref_counts[new] == 0


def test_a_second_request_with_the_same_prefix_takes_no_new_blocks_for_it():
    manager = BlockManager(num_blocks=8, block_size=4)
    prefix = [3, 1, 4, 1, 5, 9, 2, 6]
    assert manager.allocate(0, prefix + [5, 3]) == 0
    free = manager.num_free_blocks
    assert manager.blocks_needed(prefix + [8]) == 1
    assert manager.allocate(1, prefix + [8]) == 8              # both full blocks found cached
    assert manager.num_free_blocks == free - 1
    assert manager.block_table(1)[:2] == manager.block_table(0)[:2]
    assert manager.block_table(1)[2] != manager.block_table(0)[2]
    assert [manager.ref_counts[b] for b in manager.block_table(1)] == [2, 2, 1]
    assert manager.allocate(2, [3, 1, 4, 2] + prefix[4:]) == 0   # a different first block: nothing shared


def test_a_block_is_keyed_by_its_whole_prefix_not_its_own_tokens_alone():
    manager = BlockManager(num_blocks=8, block_size=2)
    manager.allocate(0, [1, 2, 3, 4])
    manager.allocate(1, [5, 6, 3, 4])                        # same second block, other first block
    assert manager.block_table(1)[1] != manager.block_table(0)[1]
    assert manager.allocate(2, [5, 6, 3, 4, 7]) == 4
    assert manager.block_table(2)[:2] == manager.block_table(1)[:2]


def test_a_wholly_cached_prompt_recomputes_its_last_block_in_a_block_of_its_own():
    manager = BlockManager(num_blocks=4, block_size=2)
    manager.allocate(0, [1, 2, 3, 4])
    head, tail = manager.block_table(0)
    manager.free(0)
    assert manager.num_free_blocks == 4                      # cached but evictable: the prefix survives its owner
    assert manager.blocks_needed([1, 2, 3, 4]) == 2
    assert manager.allocate(1, [1, 2, 3, 4]) == 2
    assert manager.block_table(1)[0] == head and tail not in manager.block_table(1)
    assert manager.num_free_blocks == 2 and manager.is_cached(tail)


def test_decoded_tokens_that_fill_a_block_are_cached_too():
    manager = BlockManager(num_blocks=6, block_size=2)
    manager.allocate(0, [1, 2, 3])
    manager.append_slot(0, 4)
    manager.free(0)
    assert manager.allocate(1, [1, 2, 3, 4, 5]) == 4


def test_prefix_caching_off_shares_nothing():
    manager = BlockManager(num_blocks=8, block_size=2, enable_prefix_caching=False)
    manager.allocate(0, [1, 2, 3, 4])
    assert manager.allocate(1, [1, 2, 3, 4, 5]) == 0
    assert set(manager.block_table(0)).isdisjoint(manager.block_table(1))


def test_eviction_takes_empty_blocks_first_then_the_least_recently_freed_cached_ones():
    manager = BlockManager(num_blocks=5, block_size=2)
    manager.allocate(0, [1, 2, 3, 4])                        # two cached blocks
    manager.allocate(1, [7, 8])                              # one cached block
    first, second = manager.block_table(0)
    (third,) = manager.block_table(1)
    manager.free(1)
    manager.free(0)                                          # freed later: its tail before its head
    assert all(manager.is_cached(b) for b in (first, second, third))
    manager.allocate(2, [9, 9, 9, 9])                        # two empty blocks, nothing evicted
    assert all(manager.is_cached(b) for b in (first, second, third))
    manager.allocate(3, [5])                                 # evicts the oldest: sequence 1's block
    assert manager.block_table(3) == [third] and not manager.is_cached(third)
    manager.allocate(4, [6])                                 # then sequence 0's tail
    assert manager.block_table(4) == [second] and manager.is_cached(first)
    manager.free(3)
    assert manager.allocate(5, [1, 2, 0]) == 2               # its head still serves a prefix
    assert manager.block_table(5) == [first, third]
    with pytest.raises(NoFreeBlocksError):
        manager.allocate(6, [1])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(4, 0)
    manager = BlockManager(2, 2)
    manager.allocate(0, [1])
    with pytest.raises(ValueError, match="already"):
        manager.allocate(0, [1])
    with pytest.raises(NoFreeBlocksError, match="need 3 blocks"):
        manager.allocate(1, [1, 2, 3, 4, 5])
    with pytest.raises(IndexError, match="position 1"):
        manager.slot(0, 1)
