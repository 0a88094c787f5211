"""Subgroups of the default process group (``new_group``) and the 2-D mesh of tensor- (or
pipeline-) parallel and data-parallel groups.

A subgroup's collectives run among its members only: its control messages go over the pair
links between members (on the subgroup's own channel, so they never mix with point-to-point
messages), gathered by its first member, which answers each member with the list of all of
them; its shared-memory slots are its members' own. Two disjoint subgroups therefore share
no channel and no memory and can run collectives at the same time.

Ranks, as in ``torch.distributed``: ``get_rank(group)`` is the rank within the group (its
position in the sorted ``ranks``), but the ``src`` and ``dst`` arguments of ``broadcast``,
``gather``, ``scatter``, ``send`` and ``recv`` are global ranks (ranks of the default group),
which must belong to the group.

A 2-D mesh of ``world_size = dp * tp`` ranks: rank r sits at row r // tp, column r % tp. The
ranks of a row form a tensor-parallel group (neighbouring ranks), those of a column a
data-parallel group: each data-parallel replica is a whole tensor-parallel model.
"""

from __future__ import annotations

import pickle
from typing import Any

from lamina.distributed.group import GroupMember, ProcessGroup, _group, resolve_group

__all__ = ["DeviceMesh", "Subgroup", "device_mesh_groups", "get_process_group_ranks", "new_group"]


class Subgroup:
    """Some ranks of the default group, made by :func:`new_group` (every rank calls it); used
    as ``group=`` of the collectives. ``rank`` and ``world_size`` are within the group."""

    fence_last_chunk = True

    def __init__(self, base: ProcessGroup, ranks: list[int], number: int) -> None:
        self.base, self.ranks, self.number = base, ranks, number
        self.rank, self.world_size = ranks.index(base.rank), len(ranks)
        self.timeout, self.slot_bytes = base.timeout, base.slot_bytes
        self.destroyed = False
        self._channel = ("group", number)

    def global_rank(self, group_rank: int) -> int:
        return self.ranks[group_rank]

    def group_rank(self, global_rank: int) -> int | None:
        return self.ranks.index(global_rank) if global_rank in self.ranks else None

    def slot(self, rank: int, dtype: Any, count: int, offset: int = 0) -> Any:
        """Group rank ``rank``'s slot: its global rank's slot."""
        return self.base.slot(self.ranks[rank], dtype, count, offset)

    def items_per_slot(self, dtype: Any) -> int:
        return self.base.items_per_slot(dtype)

    def exchange(self, item: Any, what: str = "barrier") -> list[Any]:
        """Every member's ``item``, in group-rank order, on every member. Items are pickled
        here, so that a caller changing one afterwards cannot change what is sent."""
        if self.world_size == 1:
            return [item]
        base, leader = self.base, self.ranks[0]
        if self.rank == 0:
            items = [item] + [pickle.loads(base.receive_from(peer, what, self._channel)) for peer in self.ranks[1:]]
            message = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
            for peer in self.ranks[1:]:
                base.send_to(peer, message, what, self._channel)
            return items
        base.send_to(leader, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL), what, self._channel)
        return pickle.loads(base.receive_from(leader, what, self._channel))

    def __deepcopy__(self, memo: dict) -> Subgroup:
        return self

    def destroy(self) -> None:
        self.destroyed = True

    def __repr__(self) -> str:
        return f"Subgroup(ranks={self.ranks})"


def new_group(ranks: list[int] | None = None, timeout: Any = None, backend: Any = None) -> Subgroup | Any:
    """A group of the global ``ranks`` (all of them when None), as ``torch.distributed``'s:
    every rank of the default group calls it, in the same order, with the same ranks; ranks
    not in it get ``GroupMember.NON_GROUP_MEMBER``. ``timeout`` and ``backend`` are accepted
    for PyTorch's signature (the default group's are used)."""
    base = _group("new_group")
    chosen = list(range(base.world_size)) if ranks is None else _checked_ranks(ranks, base.world_size)
    calls = base.exchange(("new_group", chosen), "new_group")
    for rank, call in enumerate(calls):
        if call != calls[0]:
            raise ValueError(f"lamina.distributed.new_group: the ranks called it with different ranks: rank 0 with "
                             f"{calls[0][1]}, rank {rank} with {call[1]}; every rank calls new_group, in the same "
                             "order, with the same ranks")
    base.subgroups_made += 1
    base.fence_last_chunk = True
    if base.rank not in chosen:
        return GroupMember.NON_GROUP_MEMBER
    return Subgroup(base, chosen, base.subgroups_made)


def get_process_group_ranks(group: Any = None) -> list[int]:
    """The global ranks of ``group`` (the default group when None), in group-rank order."""
    return list(resolve_group(group, "get_process_group_ranks").ranks)


def _checked_ranks(ranks: Any, world_size: int) -> list[int]:
    values = list(ranks)
    wrong = [r for r in values if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < world_size]
    if not values or wrong or len(set(values)) != len(values):
        raise ValueError(f"lamina.distributed.new_group: ranks must be distinct ranks in [0, {world_size}), at "
                         f"least one; got {ranks!r}")
    return sorted(values)


class DeviceMesh:
    """The 2-D mesh of ``world_size`` ranks, ``world_size // tp_size`` data-parallel replicas of
    ``tp_size`` tensor-parallel (or pipeline) ranks each; see the module's text. Every rank builds
    it (it calls :func:`new_group` for every row and column). ``tp_group`` and ``dp_group`` are
    this rank's; ``tp_rank`` and ``dp_rank`` its ranks within them."""

    def __init__(self, world_size: int, tp_size: int) -> None:
        base = _group("DeviceMesh")
        if world_size != base.world_size:
            raise ValueError(f"DeviceMesh: world_size={world_size}, but the default group holds {base.world_size} "
                             "ranks")
        if isinstance(tp_size, bool) or not isinstance(tp_size, int) or tp_size < 1 or world_size % tp_size:
            raise ValueError(f"DeviceMesh: tp_size must be a positive divisor of world_size = {world_size}; got "
                             f"{tp_size!r}")
        self.world_size, self.tp_size, self.dp_size = world_size, tp_size, world_size // tp_size
        self.mesh = [[row * tp_size + column for column in range(tp_size)] for row in range(self.dp_size)]
        rows = [new_group(row) for row in self.mesh]
        columns = [new_group([row[column] for row in self.mesh]) for column in range(tp_size)]
        self.dp_rank, self.tp_rank = divmod(base.rank, tp_size)
        self.tp_group, self.dp_group = rows[self.dp_rank], columns[self.tp_rank]

    def __repr__(self) -> str:
        return f"DeviceMesh(mesh={self.mesh}, dp_size={self.dp_size}, tp_size={self.tp_size})"


def device_mesh_groups(world_size: int, tp_size: int) -> tuple[Subgroup, Subgroup]:
    """(data-parallel group, tensor-parallel group) of this rank in the 2-D mesh (every rank calls it)."""
    mesh = DeviceMesh(world_size, tp_size)
    return mesh.dp_group, mesh.tp_group
