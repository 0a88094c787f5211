"""``vmap``: a function of one sample mapped over a batch, under ``torch.func.vmap``'s name.

lamina has no batching rules for its ops: ``vmap(f)(x)`` runs ``f`` once per slice x[i] along
the mapped axis and stacks the results, ``stack([f(x[0]), f(x[1]), ...])``. It is a loop, no
faster than writing the loop, and its worth is the interface: code written for one sample
(``vmap(grad(loss))`` for per-sample gradients, ``vmap(functional_call)`` over stacked
weights for an ensemble) runs over a batch unchanged. The slicing and the stacking are ops on
the graph, so gradients flow through a vmap to its inputs.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.func._tree import broadcast_prefix, flatten, unflatten
from lamina.functional.shape import getitem, stack

__all__ = ["vmap"]


def _dims_per_argument(in_dims, n_args: int) -> tuple:
    if isinstance(in_dims, tuple):
        if len(in_dims) != n_args:
            raise ValueError(f"vmap: in_dims {in_dims!r} has {len(in_dims)} entries for {n_args} arguments")
        return in_dims
    return (in_dims,) * n_args


def _check_dim(dim, where: str):
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise TypeError(f"vmap: {where} must be ints or None, got {dim!r}")


def _slice(leaf, dim: int, i: int):
    index = (slice(None),) * dim + (i,)
    return getitem(leaf, index) if isinstance(leaf, Tensor) else leaf[index]


def _stack(results: list, dim: int):
    if all(isinstance(r, Tensor) for r in results):
        return stack(results, axis=dim)
    arrays = [r.data if isinstance(r, Tensor) else backend.xp.asarray(r) for r in results]
    return Tensor._wrap(backend.xp.stack(arrays, axis=dim))


def vmap(fn: Callable, in_dims=0, out_dims=0, randomness: str = "error", chunk_size: int | None = None) -> Callable:
    """``fn`` mapped over an axis of its inputs, as ``torch.func.vmap``: ``vmap(f)(x)[i] ==
    f(x[i])``. ``in_dims``: the mapped axis of each positional argument (an int or None for all
    of them, or a tuple with one entry per argument; an entry may be a dict, list or tuple
    matching that argument's structure); None leaves an argument whole. ``out_dims``: where the
    batch axis goes in the outputs (an int, or a tuple per output). Keyword arguments are passed
    whole. ``randomness`` and ``chunk_size`` are accepted for torch's signature: the function runs
    once per sample anyway, so random draws differ between samples, and chunks change nothing."""
    _check_dim(in_dims if not isinstance(in_dims, (tuple, list, dict)) else None, "in_dims")

    def mapped(*args, **kwargs):
        if not args:
            raise ValueError("vmap: the mapped function was called without positional arguments")
        leaves, dims, specs, counts = [], [], [], []
        for k, (arg, dim) in enumerate(zip(args, _dims_per_argument(in_dims, len(args)))):
            arg_leaves, spec = flatten(arg)
            arg_dims = broadcast_prefix(dim, arg, "vmap: in_dims")
            specs.append(spec)
            counts.append(len(arg_leaves))
            for leaf, d in zip(arg_leaves, arg_dims):
                _check_dim(d, "in_dims")
                if d is not None:
                    ndim = len(getattr(leaf, "shape", ()))
                    if not -ndim <= d < ndim:
                        raise ShapeError(f"vmap: in_dims {d} of argument {k} is out of range for its shape "
                                         f"{tuple(getattr(leaf, 'shape', ()))}")
                    d %= ndim
                leaves.append(leaf)
                dims.append(d)
        sizes = {int(leaf.shape[d]) for leaf, d in zip(leaves, dims) if d is not None}
        if not sizes:
            raise ValueError("vmap: no argument is mapped (every in_dims is None)")
        if len(sizes) > 1:
            shown = [(tuple(leaf.shape), d) for leaf, d in zip(leaves, dims) if d is not None]
            raise ShapeError(f"vmap: the mapped axes have different lengths {sorted(sizes)}: (shape, in_dim) "
                             f"{shown}")
        (n,) = sizes
        if n == 0:
            raise ShapeError("vmap: the mapped axis has length 0")
        results = []
        for i in range(n):
            sliced = [leaf if d is None else _slice(leaf, d, i) for leaf, d in zip(leaves, dims)]
            call, start = [], 0
            for spec, count in zip(specs, counts):
                call.append(unflatten(spec, sliced[start:start + count]))
                start += count
            results.append(fn(*call, **kwargs))
        flat = [flatten(r) for r in results]
        out_spec = flat[0][1]
        if any(spec != out_spec for _, spec in flat):
            raise ValueError("vmap: the function returned outputs of different structures for different samples")
        out_leaves = list(zip(*[f[0] for f in flat]))
        per_leaf = broadcast_prefix(out_dims, results[0], "vmap: out_dims")
        stacked = []
        for column, d in zip(out_leaves, per_leaf):
            _check_dim(d, "out_dims")
            stacked.append(column[0] if d is None else _stack(list(column), d))
        return unflatten(out_spec, stacked)

    return mapped
