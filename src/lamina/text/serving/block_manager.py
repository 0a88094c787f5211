"""A pool of fixed-size key/value cache blocks shared by the sequences a serving engine runs
(the memory manager of PagedAttention, Kwon et al. 2023).

Each sequence owns a block table: its i-th block holds the keys and values of its tokens
i * block_size .. (i + 1) * block_size - 1, so token p lives in slot
``table[p // block_size] * block_size + p % block_size`` of the flat cache. Blocks are taken
on demand, one when a sequence's last block fills, and given back when it finishes.

Blocks carry reference counts: a forked sequence shares its parent's blocks, and writing into
a shared block first copies it (copy-on-write). With prefix caching a full block is keyed by
the hash of every token up to its end, hash_i = hash(hash_{i-1}, tokens of block i), so a
request whose prompt starts with a cached prefix reuses those blocks instead of computing
them again. A cached block no sequence holds stays cached until its slot is needed: the least
recently freed one is evicted first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

__all__ = ["BlockManager", "NoFreeBlocksError"]


class NoFreeBlocksError(RuntimeError):
    """Raised when a block is needed and every block of the pool is held by a sequence."""


def _block_hash(parent: int | None, tokens: Sequence[int]) -> int:
    return hash((parent, tuple(int(t) for t in tokens)))


class BlockManager:
    """``num_blocks`` blocks of ``block_size`` token slots; ``enable_prefix_caching`` reuses full
    blocks across sequences with the same token prefix (see the module docstring).

    ``allocate(seq_id, token_ids)`` gives a new sequence the blocks of its prompt and returns how
    many leading tokens were found cached; ``append_slot(seq_id, token_id)`` adds one token and
    returns its slot and, when its block was shared, the (source, destination) block pair to
    copy first; ``fork``, ``free``, ``block_table``, ``slot``.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if int(num_blocks) < 1 or int(block_size) < 1:
            raise ValueError(f"BlockManager: num_blocks and block_size must be positive, got {num_blocks} and "
                             f"{block_size}")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.enable_prefix_caching = bool(enable_prefix_caching)
        self.ref_counts = [0] * self.num_blocks
        self._free: deque[int] = deque(range(self.num_blocks))      # blocks holding nothing worth keeping
        self._evictable: OrderedDict[int, int] = OrderedDict()     # hash -> free cached block, oldest first
        self._cached: dict[int, int] = {}                          # hash -> block, held or evictable
        self._hash_of: dict[int, int] = {}                         # block -> its hash
        self._tables: dict[int, list[int]] = {}
        self._tokens: dict[int, list[int]] = {}
        self._hashes: dict[int, list[int]] = {}                    # the hashes of each sequence's full blocks

    # -- queries ------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take: the empty ones and the evictable cached ones."""
        return len(self._free) + len(self._evictable)

    def block_table(self, seq_id: int) -> list[int]:
        return list(self._table(seq_id))

    def num_tokens(self, seq_id: int) -> int:
        return len(self._tokens[seq_id])

    def slot(self, seq_id: int, position: int) -> int:
        """The flat cache slot of the sequence's token at ``position``."""
        table = self._table(seq_id)
        if not 0 <= position < len(self._tokens[seq_id]):
            raise IndexError(f"BlockManager: position {position} outside sequence {seq_id}'s "
                             f"{len(self._tokens[seq_id])} tokens")
        return table[position // self.block_size] * self.block_size + position % self.block_size

    def is_cached(self, block: int) -> bool:
        return block in self._hash_of

    def _table(self, seq_id: int) -> list[int]:
        if seq_id not in self._tables:
            raise KeyError(f"BlockManager: no sequence {seq_id} (known: {sorted(self._tables)})")
        return self._tables[seq_id]

    def _prefix_hashes(self, token_ids: Sequence[int]) -> list[int]:
        hashes, parent = [], None
        for start in range(0, len(token_ids) - self.block_size + 1, self.block_size):
            parent = _block_hash(parent, token_ids[start:start + self.block_size])
            hashes.append(parent)
        return hashes

    def _cached_prefix(self, token_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """The hashes of the full blocks of ``token_ids`` and the cached blocks of its longest
        cached prefix, short of the last token: a wholly cached prompt recomputes its last
        block (in a block of its own, so no shared block is written) to score its last token."""
        hashes = self._prefix_hashes(token_ids)
        if not self.enable_prefix_caching:
            return hashes, []
        blocks = []
        for h in hashes:
            if h not in self._cached:
                break
            blocks.append(self._cached[h])
        if len(blocks) * self.block_size == len(token_ids):
            blocks.pop()
        return hashes, blocks

    def blocks_needed(self, token_ids: Sequence[int]) -> int:
        """The free blocks ``allocate(token_ids)`` would take (cached prefix blocks that are
        free count too: reusing them takes them out of the evictable pool)."""
        _, hits = self._cached_prefix(token_ids)
        total = -(-len(token_ids) // self.block_size)
        return total - len(hits) + sum(1 for b in hits if self.ref_counts[b] == 0)

    def can_allocate(self, token_ids: Sequence[int]) -> bool:
        return self.blocks_needed(token_ids) <= self.num_free_blocks

    # -- changes ------------------------------------------------------------------------------
    def _take_block(self) -> int:
        if self._free:
            block = self._free.popleft()
        elif self._evictable:
            h, block = self._evictable.popitem(last=False)     # the least recently freed cached block
            del self._cached[h], self._hash_of[block]
        else:
            raise NoFreeBlocksError(f"BlockManager: all {self.num_blocks} blocks are in use")
        self.ref_counts[block] = 1
        return block

    def _hold(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            del self._evictable[self._hash_of[block]]
        self.ref_counts[block] += 1

    def _register(self, block: int, h: int) -> None:
        if self.enable_prefix_caching and h not in self._cached and block not in self._hash_of:
            self._cached[h] = block
            self._hash_of[block] = h

    def allocate(self, seq_id: int, token_ids: Sequence[int]) -> int:
        """Blocks for a new sequence's ``token_ids``; returns the number of leading tokens whose
        keys and values are already cached (always fewer than len(token_ids): the last token
        is computed, to give the next-token scores)."""
        if seq_id in self._tables:
            raise ValueError(f"BlockManager: sequence {seq_id} already has blocks")
        if not token_ids:
            raise ValueError("BlockManager: allocate needs at least one token")
        if not self.can_allocate(token_ids):
            raise NoFreeBlocksError(f"BlockManager: {len(token_ids)} tokens need {self.blocks_needed(token_ids)} "
                                    f"blocks, {self.num_free_blocks} free")
        hashes, hits = self._cached_prefix(token_ids)
        for block in hits:
            self._hold(block)
        table = list(hits)
        for i in range(len(hits), -(-len(token_ids) // self.block_size)):
            block = self._take_block()
            table.append(block)
            if i < len(hashes):
                self._register(block, hashes[i])
        self._tables[seq_id] = table
        self._tokens[seq_id] = [int(t) for t in token_ids]
        self._hashes[seq_id] = hashes
        return len(hits) * self.block_size

    def can_append(self, seq_id: int) -> bool:
        """Whether one more token fits without a block the pool lacks."""
        n, table = len(self._tokens[seq_id]), self._table(seq_id)
        needs_block = n % self.block_size == 0 or self.ref_counts[table[-1]] > 1
        return not needs_block or self.num_free_blocks > 0

    def append_slot(self, seq_id: int, token_id: int) -> tuple[int, tuple[int, int] | None]:
        """Add ``token_id`` to the sequence; returns its slot and the (source, destination)
        blocks to copy first when the last block was shared (copy-on-write), else None."""
        table, tokens = self._table(seq_id), self._tokens[seq_id]
        copy = None
        if len(tokens) % self.block_size == 0:
            table.append(self._take_block())
        elif self.ref_counts[table[-1]] > 1:
            source = table[-1]
            table[-1] = self._take_block()
            self.ref_counts[source] -= 1
            copy = (source, table[-1])
        tokens.append(int(token_id))
        if len(tokens) % self.block_size == 0:          # the block just filled: cache it by its prefix
            hashes = self._hashes[seq_id]
            hashes.append(_block_hash(hashes[-1] if hashes else None, tokens[-self.block_size:]))
            self._register(table[-1], hashes[-1])
        return self.slot(seq_id, len(tokens) - 1), copy

    def fork(self, parent_id: int, child_id: int) -> None:
        """A child sequence sharing every block of its parent (each block's count goes up)."""
        if child_id in self._tables:
            raise ValueError(f"BlockManager: sequence {child_id} already has blocks")
        table = self._table(parent_id)
        for block in table:
            self.ref_counts[block] += 1
        self._tables[child_id] = list(table)
        self._tokens[child_id] = list(self._tokens[parent_id])
        self._hashes[child_id] = list(self._hashes[parent_id])

    def free(self, seq_id: int) -> None:
        """Give back the sequence's blocks: a block nobody holds becomes free, or evictable
        (newest last) when it is cached."""
        table = self._table(seq_id)
        for block in reversed(table):     # a prefix's tail is evicted before its head
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                if block in self._hash_of:
                    self._evictable[self._hash_of[block]] = block
                else:
                    self._free.append(block)
        del self._tables[seq_id], self._tokens[seq_id], self._hashes[seq_id]
