"""``vmap``: a function of one sample mapped over a batch, under ``torch.func.vmap``'s name.

lamina has no batching rules for its ops: ``vmap(f)(x)`` runs ``f`` once per slice x[i] along
the mapped axis and stacks the results, ``stack([f(x[0]), f(x[1]), ...])``. It is a loop, no
faster than writing the loop, and its worth is the interface: code written for one sample
(``vmap(grad(loss))`` for per-sample gradients, ``vmap(functional_call)`` over stacked
weights for an ensemble) runs over a batch unchanged. The slicing and the stacking are ops on
the graph, so gradients flow through a vmap to its inputs.

An output with ``out_dims`` None is not stacked: torch refuses one that depends on a mapped
input; here, with no batching rules to tell, the samples' values must agree (one that differs
between samples raises). A mapped axis of length 0 runs ``f`` once on zeros of one sample's
shape to learn the outputs' shapes, and gives empty outputs (an ``out_dims`` None output is
that call's value).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.func._tree import broadcast_prefix, flatten, unflatten
from lamina.functional.shape import getitem, stack

__all__ = ["vmap"]


_RANDOMNESS = ("error", "different", "same")


def _dims_per_argument(in_dims, n_args: int) -> tuple:
    if isinstance(in_dims, tuple):
        if len(in_dims) != n_args:
            raise ValueError(f"vmap: in_dims {in_dims!r} has {len(in_dims)} entries for {n_args} arguments")
        return in_dims
    return (in_dims,) * n_args


def _check_dim(dim, where: str):
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise TypeError(f"vmap: {where} must be ints or None, got {dim!r}")


def _is_array(value) -> bool:
    return isinstance(value, (Tensor, numpy.ndarray, numpy.generic, backend.xp.ndarray))


def _slice(leaf, dim: int, i: int):
    index = (slice(None),) * dim + (i,)
    return getitem(leaf, index) if isinstance(leaf, Tensor) else leaf[index]


def _zeros_sample(leaf, dim: int):
    """Zeros shaped as one sample of ``leaf`` along ``dim`` (for a mapped axis of length 0)."""
    shape = tuple(leaf.shape[:dim]) + tuple(leaf.shape[dim + 1:])
    zeros = backend.xp.zeros(shape, dtype=leaf.dtype)
    return Tensor._wrap(zeros) if isinstance(leaf, Tensor) else zeros


def _stack(results: list, dim: int):
    if all(isinstance(r, Tensor) for r in results):
        return stack(results, axis=dim)
    arrays = [r.data if isinstance(r, Tensor) else backend.xp.asarray(r) for r in results]
    return Tensor._wrap(backend.xp.stack(arrays, axis=dim))


def _batched(column: list, dim: int, k: int, n: int):
    """The samples' values of output ``k`` stacked along ``dim`` (an empty tensor when n is 0)."""
    for r in column:
        if not _is_array(r):
            raise ValueError(f"vmap: the function must return only tensors where out_dims is not None; output {k} "
                             f"is a {type(r).__name__} (give it out_dims None to return it as it is)")
    first = column[0].data if isinstance(column[0], Tensor) else backend.xp.asarray(column[0])
    if not -first.ndim - 1 <= dim <= first.ndim:
        raise ShapeError(f"vmap: out_dims {dim} of output {k} is out of range for an output of {first.ndim} "
                         f"dimensions per sample (expected {-first.ndim - 1} to {first.ndim})")
    dim %= first.ndim + 1
    if n == 0:
        return Tensor._wrap(backend.xp.zeros(first.shape[:dim] + (0,) + first.shape[dim:], dtype=first.dtype))
    return _stack(column, dim)


def _same_for_every_sample(column: list, k: int):
    """Output ``k`` (out_dims None): its one value, which every sample must give."""
    first = column[0]
    for r in column[1:]:
        if r is first:
            continue
        if _is_array(first) and _is_array(r):
            a, b = getattr(first, "data", first), getattr(r, "data", r)
            same = a.shape == b.shape and bool(backend.xp.array_equal(a, b))
        else:
            same = type(r) is type(first) and r == first
        if not same:
            raise ValueError(f"vmap: output {k} has out_dims None but differs between samples: it depends on the "
                             "mapped inputs, so it needs an out_dims that is an int")
    return first


def _out_dims_per_leaf(out_dims, output) -> list:
    if isinstance(out_dims, tuple) and len(out_dims) == 1 and not isinstance(output, (dict, list, tuple)):
        out_dims = out_dims[0]                  # torch takes a 1-tuple for a single output
    return broadcast_prefix(out_dims, output, "vmap: out_dims")


def vmap(fn: Callable, in_dims=0, out_dims=0, randomness: str = "error", chunk_size: int | None = None) -> Callable:
    """``fn`` mapped over an axis of its inputs, as ``torch.func.vmap``: ``vmap(f)(x)[i] ==
    f(x[i])``. ``in_dims``: the mapped axis of each positional argument (an int or None for all
    of them, or a tuple with one entry per argument; an entry may be a dict, list or tuple
    matching that argument's structure); None leaves an argument whole. ``out_dims``: where the
    batch axis goes in the outputs (an int, or a tuple per output; None returns an output as it
    is, one value for all samples). Keyword arguments are passed whole. ``randomness`` ('error',
    'different' or 'same') and ``chunk_size`` (None or a positive int) are checked and accepted
    for torch's signature: the function runs once per sample anyway, so random draws differ
    between samples, and chunks change nothing."""
    _check_dim(in_dims if not isinstance(in_dims, (tuple, list, dict)) else None, "in_dims")
    if randomness not in _RANDOMNESS:
        raise ValueError(f"vmap: randomness must be one of {', '.join(map(repr, _RANDOMNESS))}, got {randomness!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"vmap: chunk_size must be None or a positive int, got {chunk_size!r}")

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
                    if not _is_array(leaf):
                        raise ValueError(f"vmap: in_dims {d} for a {type(leaf).__name__} in argument {k}: only "
                                         "tensors and arrays can be mapped; give it in_dims None")
                    ndim = len(leaf.shape)
                    if not -ndim <= d < ndim:
                        raise ShapeError(f"vmap: in_dims {d} of argument {k} is out of range for its shape "
                                         f"{tuple(leaf.shape)}")
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
        results = []
        for i in range(max(n, 1)):
            sliced = [leaf if d is None else _slice(leaf, d, i) if n else _zeros_sample(leaf, d)
                      for leaf, d in zip(leaves, dims)]
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
        per_leaf = _out_dims_per_leaf(out_dims, results[0])
        stacked = []
        for k, (column, d) in enumerate(zip(out_leaves, per_leaf)):
            _check_dim(d, "out_dims")
            stacked.append(_same_for_every_sample(list(column), k) if d is None else _batched(list(column), d, k, n))
        return unflatten(out_spec, stacked)

    return mapped
