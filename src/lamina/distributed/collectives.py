"""Collectives on NumPy arrays and lamina Tensors, in place, as ``torch.distributed``'s.

Every rank calls the same collective in the same order. A call first exchanges what each rank
passed (the collective, shapes, dtypes, op, root), so ranks that disagree get a clear error on
every rank rather than wrong numbers or a hang. Arrays then go through the shared-memory slots
(see :mod:`lamina.distributed.group`) a chunk at a time; small arrays of ``all_reduce`` and
``broadcast`` travel with the description instead (:data:`SMALL_ARRAY_BYTES`).

Reductions are deterministic and give every rank the same bits: the chunk is split into
``world_size`` segments, rank r combines segment r of every rank's slot in rank order,
``((x_0 op x_1) op x_2) ...``, and every rank copies the combined chunk (a small array is
combined by every rank, in the same order from the same values). ``AVG`` is the sum
divided by ``world_size`` (floating arrays only).

:func:`send` and :func:`recv` are point to point: only the two ranks take part, the array
going over their own link, in order (a ``recv`` gets the sender's oldest unreceived ``send``).

Every collective takes ``group=``: a subgroup from :func:`~lamina.distributed.new_group` (None:
the default group). ``src`` and ``dst`` are global ranks, as in ``torch.distributed``; the
lists (``tensor_list``, ...) hold one array per rank of the group, in group-rank order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import numpy as np

from lamina.autograd import Tensor
from lamina.distributed.group import ProcessGroup, resolve_group
from lamina.errors import ShapeError

__all__ = ["ReduceOp", "all_gather", "all_gather_object", "all_reduce", "barrier", "broadcast",
           "broadcast_object_list", "gather", "recv", "recv_array", "reduce_scatter", "scatter", "send"]


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"


SMALL_ARRAY_BYTES = 256 * 2**10
"""Arrays up to this size are all-reduced and broadcast through the control sockets, sent
along with the call's description (one exchange), rather than through shared memory (three)."""

_COMBINE: dict[ReduceOp, Callable] = {ReduceOp.SUM: np.add, ReduceOp.AVG: np.add, ReduceOp.MAX: np.maximum,
                                      ReduceOp.MIN: np.minimum, ReduceOp.PRODUCT: np.multiply}


def barrier(group: Any = None) -> None:
    """Return once every rank (of ``group``) has called it."""
    resolve_group(group, "barrier").exchange(("barrier",), "barrier")


def all_reduce(tensor: Any, op: ReduceOp = ReduceOp.SUM, group: Any = None) -> None:
    """Replace ``tensor`` (an array or Tensor, same shape and dtype on every rank) on every rank
    by ``op`` over the ranks' values, element by element."""
    group, op = resolve_group(group, "all_reduce"), _reduce_op(op, "all_reduce")
    array = _array(tensor, "all_reduce", "tensor")
    _check_average(op, array, "all_reduce")
    small = array.nbytes <= SMALL_ARRAY_BYTES
    calls = _agree(group, "all_reduce", (op.name, _describe(array)), payload=array.copy() if small else None)
    if small:                       # each rank combines every rank's copy, in rank order: the same bits
        out = np.array(calls[0][1], copy=True)
        for _, other in calls[1:]:
            _COMBINE[op](out, other, out=out)
        if op is ReduceOp.AVG:
            np.divide(out, group.world_size, out=out)
        array[...] = out
        return
    with _Flat(array) as flat:
        for start, stop in _chunks(flat.size, group.items_per_slot(flat.dtype)):
            count = stop - start
            group.slot(group.rank, flat.dtype, count)[:] = flat[start:stop]
            group.exchange(None, "all_reduce")
            low, high = count * group.rank // group.world_size, count * (group.rank + 1) // group.world_size
            _combine(group, op, flat.dtype, count, low, high, out=group.slot(0, flat.dtype, count)[low:high])
            group.exchange(None, "all_reduce")
            flat[start:stop] = group.slot(0, flat.dtype, count)
            _before_next_chunk(group, stop, flat.size, "all_reduce")


def reduce_scatter(output: Any, input_list: list, op: ReduceOp = ReduceOp.SUM, group: Any = None) -> None:
    """Rank r's ``output`` becomes ``op`` over the ranks of their ``input_list[r]`` (a list of
    ``world_size`` arrays shaped as ``output``)."""
    group, op = resolve_group(group, "reduce_scatter"), _reduce_op(op, "reduce_scatter")
    target = _array(output, "reduce_scatter", "output")
    inputs = _array_list(input_list, group.world_size, target, "reduce_scatter", "input_list")
    _check_average(op, target, "reduce_scatter")
    _agree(group, "reduce_scatter", (op.name, _describe(target)))
    world = group.world_size
    with _Flat(target) as flat:
        sources = [np.ascontiguousarray(a).reshape(-1) for a in inputs]
        for start, stop in _chunks(flat.size, group.items_per_slot(flat.dtype) // world):
            count = stop - start
            mine = group.slot(group.rank, flat.dtype, count * world)
            for part, source in enumerate(sources):
                mine[part * count:(part + 1) * count] = source[start:stop]
            group.exchange(None, "reduce_scatter")
            low = group.rank * count
            _combine(group, op, flat.dtype, count * world, low, low + count, out=flat[start:stop])
            _before_next_chunk(group, stop, flat.size, "reduce_scatter")


def broadcast(tensor: Any, src: int = 0, group: Any = None) -> None:
    """Copy (global) rank ``src``'s ``tensor`` into every rank's ``tensor``."""
    group = resolve_group(group, "broadcast")
    array = _array(tensor, "broadcast", "tensor")
    src = _check_root(src, group, "broadcast", "src")
    small = array.nbytes <= SMALL_ARRAY_BYTES
    sent = array.copy() if small and group.rank == src else None
    calls = _agree(group, "broadcast", (src, _describe(array)), payload=sent)
    if small:
        if group.rank != src:
            array[...] = calls[src][1]
        return
    with _Flat(array) as flat:
        for start, stop in _chunks(flat.size, group.items_per_slot(flat.dtype)):
            shared = group.slot(0, flat.dtype, stop - start)
            if group.rank == src:
                shared[:] = flat[start:stop]
            group.exchange(None, "broadcast")
            if group.rank != src:
                flat[start:stop] = shared
            _before_next_chunk(group, stop, flat.size, "broadcast")


def _root_arrays(arrays: list | None, group, root: int, like: np.ndarray, op: str, role: str,
                 use: str) -> list | None:
    """On rank ``root``, ``op``'s list of ``world_size`` arrays shaped as ``like`` (checked, and
    required there: the root ``use``s them); None on the other ranks."""
    if group.rank != root:
        return None
    if arrays is None:
        raise ValueError(f"lamina.distributed.{op}: rank {root} is {role} and needs a {op}_list of "
                         f"{group.world_size} arrays to {use}")
    return _array_list(arrays, group.world_size, like, op, f"{op}_list")


def all_gather(tensor_list: list, tensor: Any, group: Any = None) -> None:
    """Fill ``tensor_list`` (``world_size`` arrays shaped as ``tensor``) with every rank's ``tensor``."""
    group = resolve_group(group, "all_gather")
    array = _array(tensor, "all_gather", "tensor")
    outputs = _array_list(tensor_list, group.world_size, array, "all_gather", "tensor_list")
    _agree(group, "all_gather", (_describe(array),))
    _gather_into(group, array, outputs, "all_gather")


def gather(tensor: Any, gather_list: list | None = None, dst: int = 0, group: Any = None) -> None:
    """Fill (global) rank ``dst``'s ``gather_list`` (``world_size`` arrays shaped as ``tensor``;
    None on the other ranks) with every rank's ``tensor``."""
    group = resolve_group(group, "gather")
    array = _array(tensor, "gather", "tensor")
    dst = _check_root(dst, group, "gather", "dst")
    outputs = _root_arrays(gather_list, group, dst, array, "gather", "dst", "fill")
    _agree(group, "gather", (dst, _describe(array)))
    _gather_into(group, array, outputs, "gather")


def scatter(tensor: Any, scatter_list: list | None = None, src: int = 0, group: Any = None) -> None:
    """Copy ``scatter_list[r]`` of (global) rank ``src`` (``world_size`` arrays shaped as
    ``tensor``) into group rank r's ``tensor``."""
    group = resolve_group(group, "scatter")
    array = _array(tensor, "scatter", "tensor")
    src = _check_root(src, group, "scatter", "src")
    sources = _root_arrays(scatter_list, group, src, array, "scatter", "src", "send")
    if sources is not None:
        sources = [np.ascontiguousarray(a).reshape(-1) for a in sources]
    _agree(group, "scatter", (src, _describe(array)))
    with _Flat(array) as flat:
        for start, stop in _chunks(flat.size, group.items_per_slot(flat.dtype)):
            count = stop - start
            if sources is not None:
                for rank, source in enumerate(sources):
                    group.slot(rank, flat.dtype, count)[:] = source[start:stop]
            group.exchange(None, "scatter")
            flat[start:stop] = group.slot(group.rank, flat.dtype, count)
            _before_next_chunk(group, stop, flat.size, "scatter")


def all_gather_object(object_list: list, obj: Any, group: Any = None) -> None:
    """Fill ``object_list`` (of ``world_size`` items) with every rank's ``obj`` (pickled)."""
    group = resolve_group(group, "all_gather_object")
    if not isinstance(object_list, list) or len(object_list) != group.world_size:
        raise ValueError(f"lamina.distributed.all_gather_object: object_list must be a list of world_size = "
                         f"{group.world_size} items to fill; got {_length_of(object_list)}")
    object_list[:] = [item for _, item in _agree(group, "all_gather_object", (), payload=obj)]


def broadcast_object_list(object_list: list, src: int = 0, group: Any = None) -> None:
    """Replace the items of every rank's ``object_list`` by those of (global) rank ``src`` (pickled)."""
    group = resolve_group(group, "broadcast_object_list")
    src = _check_root(src, group, "broadcast_object_list", "src")
    if not isinstance(object_list, list):
        raise TypeError(f"lamina.distributed.broadcast_object_list: object_list must be a list; got "
                        f"{type(object_list).__name__}")
    sent = object_list if group.rank == src else None
    items = _agree(group, "broadcast_object_list", (src, len(object_list)), payload=sent)
    object_list[:] = items[src][1]


def send(tensor: Any, dst: int, group: Any = None, tag: int = 0) -> None:
    """Send ``tensor`` (an array or Tensor) to (global) rank ``dst``, which takes it with
    :func:`recv`. Returns once it is on its way (a large array: once ``dst`` has started reading
    it). With ``group``, both ranks must be members of it."""
    group = resolve_group(group, "send")
    array = _array(tensor, "send", "tensor")
    _check_peer(dst, group, "send", "dst")
    group.base.send_to(dst, ("send", int(tag), array.copy()), "send")


def recv(tensor: Any, src: int, group: Any = None, tag: int = 0) -> int:
    """Fill ``tensor`` (an array or Tensor) with the array that (global) rank ``src`` sent with
    :func:`send`; returns ``src``. The shape, dtype and tag must match the send's."""
    group = resolve_group(group, "recv")
    array = _array(tensor, "recv", "tensor")
    received = recv_array(src, tag, group)
    if received.shape != array.shape or received.dtype != array.dtype:
        raise ShapeError(f"lamina.distributed.recv: rank {src} sent an array of shape {received.shape} and dtype "
                         f"{received.dtype} to rank {group.rank}, which receives into shape {array.shape} and dtype "
                         f"{array.dtype}")
    array[...] = received
    return src


def recv_array(src: int, tag: int = 0, group: Any = None) -> np.ndarray:
    """The array that (global) rank ``src`` sent with :func:`send`, whatever its shape (a new array)."""
    group = resolve_group(group, "recv")
    _check_peer(src, group, "recv", "src")
    _, sent_tag, array = group.base.receive_from(src, "recv")
    if sent_tag != tag:
        raise ValueError(f"lamina.distributed.recv: rank {group.rank} expected tag {tag} from rank {src}, which "
                         f"sent tag {sent_tag}; sends and receives between two ranks must come in the same order")
    return array


# -- helpers ------------------------------------------------------------------------------

def _check_peer(peer: Any, group: ProcessGroup, what: str, name: str) -> None:
    _check_root(peer, group, what, name)
    if peer == group.base.rank:
        raise ValueError(f"lamina.distributed.{what}: {name}={peer} is this rank; point-to-point messages go to "
                         "another rank")


def _gather_into(group: ProcessGroup, array: np.ndarray, outputs: list | None, what: str) -> None:
    source = np.ascontiguousarray(array).reshape(-1)
    targets = None if outputs is None else [_Flat(out) for out in outputs]
    for start, stop in _chunks(source.size, group.items_per_slot(source.dtype)):
        count = stop - start
        group.slot(group.rank, source.dtype, count)[:] = source[start:stop]
        group.exchange(None, what)
        for rank, target in enumerate(targets or ()):
            target.flat[start:stop] = group.slot(rank, source.dtype, count)
        _before_next_chunk(group, stop, source.size, what)
    for target in targets or ():
        target.finish()


def _before_next_chunk(group: ProcessGroup, stop: int, size: int, what: str) -> None:
    """Wait until every rank has read the chunk before the slots are overwritten with the next.
    After the last chunk no wait is needed: the next collective starts with an exchange."""
    if stop < size or group.fence_last_chunk:
        group.exchange(None, what)


def _combine(group: ProcessGroup, op: ReduceOp, dtype: np.dtype, count: int, low: int, high: int,
             out: np.ndarray) -> None:
    """``op`` over the ranks' slots, items [low, high) of the first ``count``, in rank order, into ``out``."""
    combine = _COMBINE[op]
    first = group.slot(0, dtype, count)[low:high]
    if out is not first:
        out[:] = first
    for rank in range(1, group.world_size):
        combine(out, group.slot(rank, dtype, count)[low:high], out=out)
    if op is ReduceOp.AVG:
        np.divide(out, group.world_size, out=out)


def _agree(group: ProcessGroup, what: str, description: tuple, payload: Any = None) -> list[tuple]:
    """Exchange (what, description, payload) and raise on every rank if the calls differ."""
    calls = group.exchange(((what, *description), payload), what)
    first = calls[0][0]
    for rank, (call, _) in enumerate(calls):
        if call != first:
            raise ShapeError(f"lamina.distributed.{what}: the ranks called collectives that do not match: rank 0 "
                             f"called {_render(first)}, rank {rank} called {_render(call)}; every rank must call "
                             "the same collective, in the same order, with arrays of the same shape and dtype")
    return calls


def _render(call: tuple) -> str:
    return f"{call[0]}({', '.join(map(str, call[1:]))})"


def _describe(array: np.ndarray) -> str:
    return f"shape={tuple(array.shape)} dtype={array.dtype}"


def _reduce_op(op: Any, what: str) -> ReduceOp:
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str) and op.upper() in ReduceOp.__members__:
        return ReduceOp[op.upper()]
    raise ValueError(f"lamina.distributed.{what}: unknown op {op!r}; expected one of "
                     f"{[f'ReduceOp.{name}' for name in ReduceOp.__members__]}")


def _check_average(op: ReduceOp, array: np.ndarray, what: str) -> None:
    if op is ReduceOp.AVG and array.dtype.kind != "f":
        raise TypeError(f"lamina.distributed.{what}: ReduceOp.AVG needs a floating array (the mean of integers "
                        f"is not an integer); got dtype {array.dtype}; use ReduceOp.SUM and divide")


def _check_root(root: Any, group: ProcessGroup, what: str, name: str) -> int:
    """The group rank of global rank ``root``, which must belong to ``group``."""
    local = None
    if not isinstance(root, bool) and isinstance(root, (int, np.integer)):
        local = group.group_rank(int(root))
    if local is None:
        where = (f"a rank in [0, {group.world_size})" if group.base is group
                 else f"a (global) rank of the group, one of {group.ranks}")
        raise ValueError(f"lamina.distributed.{what}: {name} must be {where}; got {root!r}")
    return local


def _array(value: Any, what: str, name: str) -> np.ndarray:
    array = value.data if isinstance(value, Tensor) else value
    if not isinstance(array, np.ndarray):
        raise TypeError(f"lamina.distributed.{what}: {name} must be a NumPy array or a lamina Tensor (changed in "
                        f"place); got {type(value).__name__}")
    if array.dtype.hasobject:
        raise TypeError(f"lamina.distributed.{what}: {name} holds Python objects (dtype object); the collectives "
                        "move numbers: use all_gather_object or broadcast_object_list for objects")
    if not array.flags.writeable:
        raise ValueError(f"lamina.distributed.{what}: {name} is read-only; the collective writes its result into it")
    return array


def _array_list(values: Any, world_size: int, like: np.ndarray, what: str, name: str) -> list[np.ndarray]:
    if not isinstance(values, (list, tuple)) or len(values) != world_size:
        raise ValueError(f"lamina.distributed.{what}: {name} must be a list of world_size = {world_size} arrays; "
                         f"got {_length_of(values)}")
    arrays = [_array(v, what, f"{name}[{i}]") for i, v in enumerate(values)]
    for i, array in enumerate(arrays):
        if array.shape != like.shape or array.dtype != like.dtype:
            raise ShapeError(f"lamina.distributed.{what}: {name}[{i}] has shape {array.shape} and dtype "
                             f"{array.dtype}; expected shape {like.shape} and dtype {like.dtype}, as the tensor")
    return arrays


def _length_of(value: Any) -> str:
    return f"{len(value)} items" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"


def _chunks(size: int, per_chunk: int) -> list[tuple[int, int]]:
    return [(start, min(size, start + per_chunk)) for start in range(0, size, per_chunk)]


class _Flat:
    """An array as a flat contiguous array: a view when it is contiguous, else a copy written
    back by :meth:`finish`."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.view = array.flags.c_contiguous
        self.flat = array.reshape(-1) if self.view else np.ascontiguousarray(array).reshape(-1)

    def finish(self) -> None:
        if not self.view:
            self.array[...] = self.flat.reshape(self.array.shape)

    def __enter__(self) -> np.ndarray:
        return self.flat

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.finish()
