"""``DistributedDataParallel``: one model trained by several processes, each on its share of
every batch, as PyTorch's.

At construction rank 0's parameters and buffers are copied to every rank, so all start equal.
After ``backward`` every rank holds the gradients averaged over the ranks,
g = (1 / R) sum_r g_r, so the same optimizer step keeps the copies equal (bit for bit: the
average is computed once and copied, see :mod:`lamina.distributed.collectives`). With equal
shares, averaging the ranks' mean losses gives the gradient of the mean loss over the whole
batch.

Buckets: the trainable parameters, in reverse order of registration (the last layers' gradients
are known first), are packed into flat buckets of at most ``bucket_cap_mb`` megabytes (one
dtype each). A hook on every parameter fires when backward has computed its gradient; when a
bucket's last gradient arrives the bucket is averaged at once, during the rest of backward,
and buckets are averaged in order on every rank. What is averaged is the parameter's whole
gradient, including what earlier backward passes under :meth:`no_sync` accumulated.

A parameter that the forward pass did not use gets no gradient and would leave its bucket
waiting: with ``find_unused_parameters=True`` the forward pass walks the graph of the output,
and every parameter not on it contributes its current gradient (zeros if it has none) at once.
Without it, a forward pass after an incomplete reduction raises, naming the parameters.

``state_dict`` and ``load_state_dict`` are the wrapped module's, without PyTorch's ``module.``
prefix, so a checkpoint loads into the plain model; keys with the prefix (saved from PyTorch's
wrapper) are accepted too. Buffers (batch-norm statistics) are copied from rank 0 before each
forward pass in training mode with ``broadcast_buffers=True``. The hooks fire in any sweep
through the parameters: take ``lamina.autograd.grad`` of an output (a gradient penalty, say)
from a forward pass made under :meth:`no_sync`, whose gradients are left alone.

``process_group`` (or ``group``): a subgroup from :func:`~lamina.distributed.new_group` to
average over instead of the default group (the data-parallel group of a 2-D mesh); the
weights are then copied from the subgroup's first rank.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from lamina.autograd import Tensor, is_grad_enabled
from lamina.autograd.graph import topological_order
from lamina.distributed.collectives import ReduceOp, all_reduce, broadcast
from lamina.distributed.group import pick_group, resolve_group
from lamina.nn.module import Module

__all__ = ["DistributedDataParallel"]

MEGABYTE = 2**20


class _Bucket:
    """Parameters whose gradients are averaged together, through one flat array."""

    def __init__(self, indices: list[int], params: list[Tensor]) -> None:
        self.indices = indices
        self.offsets: dict[int, int] = {}
        size = 0
        for i in indices:
            self.offsets[i] = size
            size += params[i].size
        self.flat = np.zeros(size, dtype=params[indices[0]].dtype)
        self.pending = len(indices)

    def part(self, index: int, param: Tensor) -> np.ndarray:
        start = self.offsets[index]
        return self.flat[start:start + param.size].reshape(param.shape)


class DistributedDataParallel(Module):
    """Wrap a built ``module`` so that its gradients are averaged over the ranks of the default
    process group (or of ``process_group``) after each backward pass; see the module's text. Call it as the module.
    ``device_ids`` and ``output_device`` are accepted for PyTorch's signature (CPU only)."""

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 broadcast_buffers: bool = True, bucket_cap_mb: float = 25.0,
                 find_unused_parameters: bool = False, process_group: Any = None, group: Any = None) -> None:
        super().__init__()
        group = resolve_group(pick_group(process_group, group, "DistributedDataParallel"), "DistributedDataParallel")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected a lamina.nn.Module; got {type(module).__name__}")
        if not module.parameters() and not module.built:
            raise ValueError(f"DistributedDataParallel: {module._label()} has no weights yet; build it first (call "
                             "it once on an input, or call build(input_shape)) so that rank 0's weights can be "
                             "copied to every rank")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive; got {bucket_cap_mb!r}")
        self.module = module
        object.__setattr__(self, "world_size", group.world_size)
        object.__setattr__(self, "process_group", group)
        object.__setattr__(self, "broadcast_buffers", bool(broadcast_buffers))
        object.__setattr__(self, "find_unused_parameters", bool(find_unused_parameters))
        object.__setattr__(self, "bucket_cap_mb", float(bucket_cap_mb))
        object.__setattr__(self, "require_backward_grad_sync", True)
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_buckets", _make_buckets(params, int(bucket_cap_mb * MEGABYTE)))
        object.__setattr__(self, "_bucket_of", {i: b for b in self._buckets for i in b.indices})
        object.__setattr__(self, "_ready", [False] * len(params))
        object.__setattr__(self, "_next_bucket", len(self._buckets))
        object.__setattr__(self, "_armed", False)
        object.__setattr__(self, "_arrived", 0)
        _broadcast_arrays([p.data for p in module.parameters()], group)
        self._sync_buffers()
        hook_owner = weakref.ref(self)
        object.__setattr__(self, "_hook_handles",
                           [p.register_hook(_GradientReady(hook_owner, i)) for i, p in enumerate(params)])

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        self._check_previous_reduction()
        if self.broadcast_buffers and self.training:
            self._sync_buffers()
        output = self.module(*inputs, **kwargs)
        if is_grad_enabled() and self.require_backward_grad_sync and self._buckets:
            self._arm(output)
        return output

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Within the block, backward passes only accumulate each rank's own gradients (for
        gradient accumulation); the first backward after it averages the accumulated total."""
        before = self.require_backward_grad_sync
        object.__setattr__(self, "require_backward_grad_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "require_backward_grad_sync", before)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict:
        """The wrapped module's state dict (no ``module.`` prefix)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Load into the wrapped module; keys prefixed with ``module.`` (every one) are accepted too."""
        if state and all(key.startswith("module.") for key in state):
            state = OrderedDict((key.removeprefix("module."), value) for key, value in state.items())
        self.module.load_state_dict(state, strict=strict)

    def remove_hooks(self) -> None:
        """Stop averaging: take the hooks off the parameters (the model works alone again)."""
        for handle in self._hook_handles:
            handle.remove()
        object.__setattr__(self, "_armed", False)

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, buckets={len(self._buckets)}"

    # -- the reduction ------------------------------------------------------------------
    def _arm(self, output: Any) -> None:
        """Prepare to average the gradients of the backward pass through ``output``."""
        for bucket in self._buckets:
            bucket.pending = len(bucket.indices)
        self._ready[:] = [False] * len(self._params)
        object.__setattr__(self, "_next_bucket", 0)
        object.__setattr__(self, "_arrived", 0)
        object.__setattr__(self, "_armed", True)
        if self.find_unused_parameters:
            used = {id(t) for root in _tensors_in(output) if root.requires_grad for t in topological_order(root)}
            for i, param in enumerate(self._params):
                if id(param) not in used:
                    self._ready[i] = True
                    self._bucket_of[i].pending -= 1
            self._reduce_ready_buckets(current=None)

    def _gradient_ready(self, index: int, g: np.ndarray) -> np.ndarray | None:
        """The hook of parameter ``index``: its whole gradient (averaged once its bucket is) to
        store in ``grad``, which is emptied so that backward does not add ``g`` twice."""
        if not self._armed:
            return None
        param = self._params[index]
        if self._ready[index]:
            raise RuntimeError(f"DistributedDataParallel: parameter {index} ({param!r}) got a second gradient in one "
                               "backward pass after its average was taken; call backward once per forward pass")
        bucket = self._bucket_of[index]
        part = bucket.part(index, param)
        if param.grad is None:
            part[...] = g.reshape(param.shape)
        else:
            np.add(param.grad, g.reshape(param.shape), out=part)
        param.grad = None
        self._ready[index] = True
        object.__setattr__(self, "_arrived", self._arrived + 1)
        bucket.pending -= 1
        self._reduce_ready_buckets(current=index)
        return part

    def _reduce_ready_buckets(self, current: int | None) -> None:
        """Average, in order, every bucket whose gradients have all arrived. Each parameter's
        whole gradient goes in (zeros for one without); ``current``'s is in place already."""
        while self._next_bucket < len(self._buckets) and self._buckets[self._next_bucket].pending == 0:
            bucket = self._buckets[self._next_bucket]
            for i in bucket.indices:
                if i != current:
                    grad = self._params[i].grad
                    bucket.part(i, self._params[i])[...] = 0 if grad is None else grad
            all_reduce(bucket.flat, ReduceOp.AVG, group=self.process_group)
            for i in bucket.indices:
                if i != current:
                    self._params[i].grad = bucket.part(i, self._params[i]).copy()
            object.__setattr__(self, "_next_bucket", self._next_bucket + 1)
        if self._next_bucket == len(self._buckets):
            object.__setattr__(self, "_armed", False)

    def _check_previous_reduction(self) -> None:
        if not self._armed or not self._arrived:        # a forward pass without backward is fine
            return
        waiting = [i for i, ready in enumerate(self._ready) if not ready]
        names = {id(p): name for name, p in self.module.named_parameters()}
        missing = [names.get(id(self._params[i]), str(i)) for i in waiting]
        object.__setattr__(self, "_armed", False)
        raise RuntimeError(f"DistributedDataParallel: the previous backward pass gave no gradient to parameters "
                           f"{missing}, so their gradients were never averaged; pass find_unused_parameters=True "
                           "if the forward pass does not use every parameter")

    def _sync_buffers(self) -> None:
        buffers = [(owner, key, value) for owner in self.module.modules() for key, value in owner._buffers.items()
                   if isinstance(value, np.ndarray)]
        if not buffers:
            return
        arrays = [value if value.flags.writeable and value.flags.c_contiguous else np.array(value)
                  for _, _, value in buffers]
        _broadcast_arrays(arrays, self.process_group)
        for (owner, key, value), array in zip(buffers, arrays):
            if array is not value:
                owner._buffers[key] = array


class _GradientReady:
    """A parameter's hook, holding its wrapper weakly (the wrapper holds the parameters). A copy
    of the parameter (``copy.deepcopy`` of the model) gets a hook that does nothing."""

    def __init__(self, owner: weakref.ref, index: int) -> None:
        self.owner, self.index = owner, index

    def __call__(self, g: np.ndarray) -> np.ndarray | None:
        owner = self.owner()
        return None if owner is None else owner._gradient_ready(self.index, g)

    def __deepcopy__(self, memo: dict) -> _GradientReady:
        return _GradientReady(lambda: None, self.index)

    def __reduce__(self) -> tuple:
        return _detached_hook, (self.index,)


def _detached_hook(index: int) -> _GradientReady:
    return _GradientReady(lambda: None, index)


def _make_buckets(params: list[Tensor], cap_bytes: int) -> list[_Bucket]:
    """Buckets of at most ``cap_bytes`` (a larger parameter alone), of one dtype each, filled
    with the parameters in reverse order."""
    buckets, current, size = [], [], 0
    for i in reversed(range(len(params))):
        param = params[i]
        nbytes = param.size * param.dtype.itemsize
        if current and (size + nbytes > cap_bytes or params[current[0]].dtype != param.dtype):
            buckets.append(_Bucket(current, params))
            current, size = [], 0
        current.append(i)
        size += nbytes
    if current:
        buckets.append(_Bucket(current, params))
    return buckets


def _broadcast_arrays(arrays: list[np.ndarray], process_group: Any) -> None:
    """Copy the first rank's ``arrays`` into every rank's of ``process_group``, one flat transfer per dtype."""
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for array in arrays:
        by_dtype.setdefault(array.dtype, []).append(array)
    for dtype in sorted(by_dtype, key=str):
        group = by_dtype[dtype]
        flat = np.concatenate([a.reshape(-1) for a in group]) if group else np.zeros(0, dtype)
        broadcast(flat, src=process_group.global_rank(0), group=process_group)
        start = 0
        for array in group:
            array[...] = flat[start:start + array.size].reshape(array.shape)
            start += array.size


def _tensors_in(output: Any) -> list[Tensor]:
    """The tensors in a forward pass's output (a tensor, or lists, tuples and dicts of them)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors_in(item)]
    return []
