"""``ZeroRedundancyOptimizer``: the optimizer state sharded over the ranks (ZeRO stages 1 and 2,
as DeepSpeed's and ``torch.distributed.optim.ZeroRedundancyOptimizer``).

The parameters are split into ``world_size`` shards of about equal size (largest first, each
to the rank holding the fewest numbers so far). Rank r builds ``optimizer_class`` over shard r
only, so it keeps the state (Adam's two moments: twice the parameters) of about 1 / R of the
model, and steps only that shard. The updated shards are then all-gathered, so every rank holds
the whole updated model again.

Stage 1 expects the gradients already averaged over the ranks (wrap the model in
:class:`~lamina.distributed.DistributedDataParallel`). Stage 2 averages them itself: each
rank's gradients, laid out shard by shard, are reduce-scattered, so rank r receives only the
average g = (1 / R) sum_r g_r of its own shard and every other gradient is dropped (use the
plain model, not DDP). In both, the step equals one optimizer's step on the averaged gradient.

``consolidate_state_dict(to)`` collects the shards' states on rank ``to``, whose
``state_dict()`` then has the layout of one ``optimizer_class`` over all the parameters (the
same indices), and ``load_state_dict`` takes such a dict on every rank, each keeping its shard.
``process_group`` (or ``group``): shard over a subgroup (the data-parallel group of a 2-D
mesh) instead of the default group; ranks are then ranks within it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from lamina.autograd import Tensor
from lamina.distributed.collectives import ReduceOp, all_gather, all_gather_object, broadcast, reduce_scatter
from lamina.distributed.group import ProcessGroup, pick_group, resolve_group
from lamina.nn.module import Module

__all__ = ["ZeroRedundancyOptimizer", "partition_parameters"]


def partition_parameters(sizes: list[int], world_size: int) -> list[list[int]]:
    """The indices of the parameters each rank owns: largest first, each to the rank with the
    smallest total so far (ties to the lowest rank); each rank's indices in increasing order."""
    totals = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = totals.index(min(totals))
        shards[rank].append(index)
        totals[rank] += sizes[index]
    return [sorted(shard) for shard in shards]


class ZeroRedundancyOptimizer:
    """Wrap ``optimizer_class(shard, **defaults)`` so that each rank of the default process
    group keeps and steps only its shard of the parameters; see the module's text.

    ``params``: a built module or an iterable of parameters (one dtype). ``stage``: 1 (the
    gradients are averaged already) or 2 (``step`` reduce-scatters them). Rank 0's parameter
    values are copied to every rank here, so all start equal.
    """

    def __init__(self, params: Module | Iterable[Tensor], optimizer_class: Callable, process_group: Any = None,
                 stage: int = 1, group: Any = None, **defaults: Any) -> None:
        group = resolve_group(pick_group(process_group, group, "ZeroRedundancyOptimizer"), "ZeroRedundancyOptimizer")
        if stage not in (1, 2):
            raise ValueError(f"ZeroRedundancyOptimizer: stage must be 1 (optimizer state sharded) or 2 (optimizer "
                             f"state and gradients sharded); got {stage!r}")
        self.params = _parameter_list(params)
        dtypes = sorted({str(p.dtype) for p in self.params})
        if len(dtypes) != 1:
            raise TypeError(f"ZeroRedundancyOptimizer: the parameters must share one dtype (they travel in one flat "
                            f"array); got {dtypes}")
        self.group: ProcessGroup = group
        self.stage, self.rank, self.world_size = stage, group.rank, group.world_size
        self.dtype = self.params[0].dtype
        self.shards = partition_parameters([p.size for p in self.params], self.world_size)
        self.shard_sizes = [sum(self.params[i].size for i in shard) for shard in self.shards]
        self.local_indices = self.shards[self.rank]
        local = [self.params[i] for i in self.local_indices]
        self.optim = optimizer_class(local, **defaults) if local else None
        self.defaults = dict(defaults)
        self._consolidated: dict | None = None
        flat = np.concatenate([p.data.reshape(-1) for p in self.params])
        broadcast(flat, src=group.global_rank(0), group=group)
        self._unpack(flat, range(len(self.params)))

    # -- the step -----------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Average this rank's shard of the gradients (stage 2), step the shard, and all-gather
        the updated shards. Every rank calls it."""
        loss = closure() if closure is not None else None
        if self.stage == 2:
            self._reduce_scatter_gradients()
        if self.optim is not None:
            self.optim.step()
        width = max(self.shard_sizes)
        mine = np.zeros(width, dtype=self.dtype)
        mine[:self.shard_sizes[self.rank]] = self._pack(self.local_indices, "data")
        shards = [np.empty(width, dtype=self.dtype) for _ in range(self.world_size)]
        all_gather(shards, mine, group=self.group)
        for rank, shard in enumerate(self.shards):
            if rank != self.rank:
                self._unpack(shards[rank], shard)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def _reduce_scatter_gradients(self) -> None:
        width = max(self.shard_sizes)
        inputs = []
        for rank, shard in enumerate(self.shards):
            flat = np.zeros(width, dtype=self.dtype)
            flat[:self.shard_sizes[rank]] = self._pack(shard, "grad")
            inputs.append(flat)
        mine = np.empty(width, dtype=self.dtype)
        reduce_scatter(mine, inputs, ReduceOp.AVG, group=self.group)
        for p in self.params:
            p.grad = None                       # only this rank's shard keeps a gradient
        start = 0
        for i in self.local_indices:
            p = self.params[i]
            p.grad = mine[start:start + p.size].reshape(p.shape).copy()
            start += p.size

    def _pack(self, indices: Iterable[int], what: str) -> np.ndarray:
        parts = []
        for i in indices:
            p = self.params[i]
            value = p.data if what == "data" else p.grad
            parts.append(np.zeros(p.size, self.dtype) if value is None else np.asarray(value).reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)

    def _unpack(self, flat: np.ndarray, indices: Iterable[int]) -> None:
        start = 0
        for i in indices:
            p = self.params[i]
            p.data[...] = flat[start:start + p.size].reshape(p.shape)
            start += p.size

    # -- learning rate (for the schedules) ----------------------------------------------
    @property
    def lr(self) -> float:
        return self.optim.lr if self.optim is not None else self.defaults["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.defaults["lr"] = value
        if self.optim is not None:
            self.optim.lr = value

    @property
    def param_groups(self) -> list[dict]:
        """This rank's shard's parameter groups."""
        return self.optim.param_groups if self.optim is not None else []

    # -- state --------------------------------------------------------------------------
    def consolidate_state_dict(self, to: int = 0) -> None:
        """Collect every shard's optimizer state on rank ``to`` (every rank calls it)."""
        local = self.optim.state_dict() if self.optim is not None else None
        states: list[Any] = [None] * self.world_size
        all_gather_object(states, local, group=self.group)
        self._consolidated = self._merge(states) if self.rank == to else None

    def state_dict(self) -> dict[str, Any]:
        """The consolidated state, laid out as one ``optimizer_class`` over every parameter;
        only on the rank given to :meth:`consolidate_state_dict`, after it."""
        if self._consolidated is None:
            raise RuntimeError(f"ZeroRedundancyOptimizer.state_dict on rank {self.rank}: no consolidated state here; "
                               "call consolidate_state_dict(to=rank) on every rank first, then state_dict() on that "
                               "rank")
        return self._consolidated

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a whole state dict (from :meth:`state_dict`, or from one ``optimizer_class`` over
        the same parameters); each rank keeps its shard's entries."""
        if self.optim is None:
            return
        state = {int(key): entry for key, entry in state_dict["state"].items()}
        local_of = {global_index: local for local, global_index in enumerate(self.local_indices)}
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: expected one parameter group; the state dict "
                             f"has {len(groups)}")
        hyperparameters = {key: value for key, value in groups[0].items() if key != "params"}
        local = {**state_dict, "state": {local_of[i]: entry for i, entry in state.items() if i in local_of},
                 "param_groups": [{**hyperparameters, "params": list(range(len(self.local_indices)))}]}
        self.optim.load_state_dict(local)

    def _merge(self, states: list[dict | None]) -> dict[str, Any]:
        first = next(state for state in states if state is not None)
        merged: dict[int, Any] = {}
        for rank, state in enumerate(states):
            if state is not None:
                for local, entry in state["state"].items():
                    merged[self.shards[rank][int(local)]] = entry
        hyperparameters = {key: value for key, value in first["param_groups"][0].items() if key != "params"}
        return {**first, "state": dict(sorted(merged.items())),
                "param_groups": [{**hyperparameters, "params": list(range(len(self.params)))}]}

    def __repr__(self) -> str:
        return (f"ZeroRedundancyOptimizer(stage={self.stage}, rank={self.rank}, world_size={self.world_size}, "
                f"shard={len(self.local_indices)} of {len(self.params)} parameters, optim={self.optim!r})")


def _parameter_list(params: Module | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, Module):
        found = params.parameters()
        if not found:
            raise ValueError(f"ZeroRedundancyOptimizer: {params._label()} has no weights yet; build it first (call "
                             "it on an input, or build(input_shape))")
        return list(found)
    found = list(params)
    if not found or not all(isinstance(p, Tensor) for p in found):
        raise TypeError("ZeroRedundancyOptimizer: params must be a built module or a non-empty iterable of "
                        "parameters (parameter groups are not supported)")
    return found
