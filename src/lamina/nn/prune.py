"""Pruning: zeroing chosen weights of a layer through a fixed mask, as ``torch.nn.utils.prune`` does.

A pruned parameter w keeps its trainable values as ``w_orig`` and a mask M of zeros and ones,
and the layer computes with their product:

    w = w_orig * M                 (element-wise)
    dJ/dw_orig = dJ/dw * M         so a pruned entry gets a zero gradient

A pruned entry of w is therefore exactly zero at every call, whatever the optimizer does to
``w_orig`` (momentum or weight decay may still move the hidden value, as in PyTorch; it only
counts again after the entry is unpruned by hand). The methods choose M:

* :func:`l1_unstructured` prunes the k entries of smallest |w|;
* :func:`random_unstructured` prunes k entries drawn uniformly without replacement;
* :func:`ln_structured` prunes the k slices w_j along ``axis`` (whole output units or filters)
  of smallest L_n norm ||w_j||_n = (sum_i |w_ij|^n)^(1/n) (the largest |w_ij| for n = inf);
* :func:`global_unstructured` prunes the k entries of smallest |w| among several parameters
  taken together, so that layers lose different fractions of their weights;
* :func:`custom_from_mask` applies a mask given by the caller.

``amount``: an int is the number k of entries (or slices) to prune, a float in [0, 1] the
fraction, k = round(amount * available) with Python's rounding (half to even), as PyTorch.
Ties in |w| or in the norms are broken by position: among equal values the entry (or slice)
of lower index in lamina's row-major layout is pruned first. (PyTorch breaks ties in the order
``topk`` returns them, which it does not specify, and lays a Dense kernel out transposed.)

Pruning a parameter again works among what is left, as PyTorch's ``PruningContainer``: an
unstructured method counts (and ranks) only the entries the mask still keeps, a structured one
only the slices that still have a kept entry, and the new mask is the old one with more zeros.
The ranking uses w_orig * M.

How a pruned parameter is held (the hook that gives the layer w_orig * M at each call, inference
fusion, deep copies) is told in :mod:`lamina.nn.prune_masks`, beside :func:`remove`,
:func:`apply_masks` and :func:`is_pruned`; :func:`sparsity` is in :mod:`lamina.nn.prune_sparsity`.
All are importable from here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module
from lamina.nn.prune_masks import (  # noqa: F401  (moved there, importable from here too)
    _ApplyMask,
    _install,
    _pruned,
    _rename,
    _set_product,
    apply_masks,
    is_pruned,
    remove,
)
from lamina.nn.prune_sparsity import Sparsity, sparsity

__all__ = ["Sparsity", "apply_masks", "custom_from_mask", "global_unstructured", "is_pruned", "l1_unstructured",
           "ln_structured", "random_unstructured", "remove", "sparsity"]


# -- checks ------------------------------------------------------------------------------------

def _check_target(module, name, who: str) -> None:
    """``module`` is a Module with a parameter (or a pruned parameter) called ``name``."""
    if not isinstance(module, Module):
        raise ValueError(f"{who}: expected a lamina Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise ValueError(f"{who}: name must be the name of a parameter of {module._label()} (a str), got {name!r}")
    if name in _pruned(module):
        return
    if name not in module._parameters:
        hint = "" if module.built else "; it is not built yet: call it on an input or call build(input_shape) first"
        raise ValueError(f"{who}: {module._label()} has no parameter {name!r} "
                         f"(its parameters: {sorted(module._parameters)}){hint}")
    for taken, registry in ((name + "_orig", module._parameters), (name + "_mask", module._buffers)):
        if taken in registry:
            raise ValueError(f"{who}: {module._label()} already has an entry {taken!r}, the name pruning "
                             f"{name!r} would give its original values or its mask")


def _check_amount(amount, who: str, target: str) -> None:
    """``amount`` is a count >= 0 or a fraction in [0, 1]; ``target`` names what is pruned."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise ValueError(f"{who}: amount must be an int (how many to prune) or a float in [0, 1] (which "
                         f"fraction), got {amount!r} for {target}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"{who}: amount must be a non-negative count, got {amount} for {target}")
    elif not 0.0 <= amount <= 1.0:
        raise ValueError(f"{who}: a fractional amount must be in [0, 1], got {amount!r} for {target}")


def _count(amount, available: int, who: str, what: str) -> int:
    """How many of the ``available`` entries (or slices) to prune: k = amount, or round(amount * available)."""
    if isinstance(amount, numbers.Integral):
        if amount > available:
            raise ValueError(f"{who}: amount {amount} is more than the {available} unpruned {what}")
        return int(amount)
    return round(amount * available)


# -- masks -------------------------------------------------------------------------------------

def _state(module: Module, name: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The values that rank the entries (w_orig * M, or w before any pruning) and the boolean
    mask of the entries kept so far, both on the host."""
    if name in _pruned(module):
        orig = module._parameters[name + "_orig"].data
        mask = module._buffers[name + "_mask"]
        return backend.to_numpy(orig * mask), backend.to_numpy(mask) != 0
    data = backend.to_numpy(module._parameters[name].data)
    return data, numpy.ones(data.shape, dtype=bool)


def _prune_entries(values: numpy.ndarray, keep: numpy.ndarray, amount, choose: Callable, who: str,
                   what: str) -> numpy.ndarray:
    """``keep`` with k more entries set to False, chosen among the kept ones by
    ``choose(kept_values, k)`` (their positions in ``kept_values``)."""
    kept = numpy.flatnonzero(keep)
    k = _count(amount, kept.size, who, what)
    new_keep = keep.copy()
    if k:
        new_keep.reshape(-1)[kept[choose(values.reshape(-1)[kept], k)]] = False
    return new_keep


def _smallest_magnitudes(values: numpy.ndarray, k: int) -> numpy.ndarray:
    # a stable sort: among equal |w| the lower index comes first
    return numpy.argsort(numpy.abs(values), kind="stable")[:k]


def _target(module: Module, name: str) -> str:
    return f"parameter {name!r} of {module._label()}"


# -- pruning methods ---------------------------------------------------------------------------

def l1_unstructured(module: Module, name: str, amount: int | float) -> Module:
    """Prune the ``amount`` entries of ``module.<name>`` of smallest |w| (among those not pruned
    yet): an int is a count, a float in [0, 1] a fraction. Returns ``module``."""
    who = "prune.l1_unstructured"
    _check_target(module, name, who)
    _check_amount(amount, who, _target(module, name))
    values, keep = _state(module, name)
    _install(module, name, _prune_entries(values, keep, amount, _smallest_magnitudes, who,
                                          f"entries of {_target(module, name)}"))
    return module


def random_unstructured(module: Module, name: str, amount: int | float, seed: int | None = None) -> Module:
    """Prune ``amount`` entries of ``module.<name>`` drawn uniformly without replacement among
    those not pruned yet. ``seed`` makes the draw reproducible on its own; without it the draw
    comes from lamina's generator (``lamina.manual_seed``). Returns ``module``."""
    who = "prune.random_unstructured"
    _check_target(module, name, who)
    _check_amount(amount, who, _target(module, name))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"{who}: seed must be None or an int, got {seed!r}")
    generator = backend.rng() if seed is None else numpy.random.default_rng(seed)

    def draw(kept_values: numpy.ndarray, k: int) -> numpy.ndarray:
        return generator.choice(kept_values.size, size=k, replace=False)

    values, keep = _state(module, name)
    _install(module, name, _prune_entries(values, keep, amount, draw, who, f"entries of {_target(module, name)}"))
    return module


def ln_structured(module: Module, name: str, amount: int | float, n: float | str, axis: int) -> Module:
    """Prune whole slices of ``module.<name>`` along ``axis``: the ``amount`` slices w_j of
    smallest L_n norm ||w_j||_n = (sum_i |w_ij|^n)^(1/n), the sum over every other axis (the
    largest |w_ij| for n = inf; ``n='fro'`` is n = 2). Only slices with an entry left count.

    ``axis`` is the output axis in lamina's layouts: 0 for a Conv2D's filters (K, f_h, f_w, c_in),
    1 (or -1) for a Dense layer's units (n_in, units). Returns ``module``."""
    who = "prune.ln_structured"
    _check_target(module, name, who)
    _check_amount(amount, who, _target(module, name))
    power = _norm_power(n, who)
    values, keep = _state(module, name)
    if values.ndim < 2:
        raise ShapeError(f"{who}: structured pruning needs a parameter of 2 or more axes; {name!r} of "
                         f"{module._label()} has shape {values.shape}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -values.ndim <= axis < values.ndim:
        raise ValueError(f"{who}: axis must be an int in [{-values.ndim}, {values.ndim - 1}] for {name!r} of "
                         f"{module._label()} of shape {values.shape}, got {axis!r}")
    axis = int(axis) % values.ndim
    rows = numpy.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    alive = numpy.flatnonzero(numpy.moveaxis(keep, axis, 0).reshape(values.shape[axis], -1).any(axis=1))
    k = _count(amount, alive.size, who, f"slices along axis {axis} of {_target(module, name)}")
    new_keep = keep.copy()
    if k:
        norms = _ln_norms(rows[alive], power)
        index = [slice(None)] * values.ndim
        index[axis] = alive[numpy.argsort(norms, kind="stable")[:k]]
        new_keep[tuple(index)] = False
    _install(module, name, new_keep)
    return module


def _norm_power(n, who: str) -> float:
    if n == "fro":
        return 2.0
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or not n > 0:
        raise ValueError(f"{who}: n must be a positive number (math.inf for the largest entry) or 'fro', got {n!r}")
    return float(n)


def _ln_norms(rows: numpy.ndarray, n: float) -> numpy.ndarray:
    """||row||_n of each row (in float64)."""
    magnitudes = numpy.abs(rows.astype(numpy.float64))
    if math.isinf(n):
        return magnitudes.max(axis=1)
    return (magnitudes ** n).sum(axis=1) ** (1.0 / n)


def global_unstructured(parameters: Iterable[tuple[Module, str]], amount: int | float) -> None:
    """Prune the ``amount`` entries of smallest |w| among all the ``parameters`` (pairs
    ``(module, name)``) taken together, counting only entries not pruned yet; each parameter
    gets its own mask, so layers lose different fractions of their weights."""
    who = "prune.global_unstructured"
    pairs = list(parameters)
    if not pairs:
        raise ValueError(f"{who}: expected a non-empty list of (module, name) pairs")
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"{who}: expected (module, name) pairs, got {pair!r}")
        _check_target(*pair, who)
    keys = [(id(module), name) for module, name in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({f"{module._label()}.{name}" for (module, name), key in zip(pairs, keys)
                           if keys.count(key) > 1})
        raise ValueError(f"{who}: each parameter may appear once; repeated: {repeated}")
    _check_amount(amount, who, f"the {len(pairs)} parameters {[_target(*pair) for pair in pairs]}")
    states = [_state(module, name) for module, name in pairs]
    values = numpy.concatenate([v.reshape(-1).astype(numpy.float64) for v, _ in states])
    keep = numpy.concatenate([k.reshape(-1) for _, k in states])
    new_keep = _prune_entries(values, keep, amount, _smallest_magnitudes, who,
                              f"entries of the {len(pairs)} parameters together")
    start = 0
    for (module, name), (old_values, _) in zip(pairs, states):
        _install(module, name, new_keep[start:start + old_values.size].reshape(old_values.shape))
        start += old_values.size


def custom_from_mask(module: Module, name: str, mask) -> Module:
    """Prune the entries of ``module.<name>`` where ``mask`` (an array or tensor of its shape,
    of zeros and ones) is zero, besides those pruned already. Returns ``module``."""
    who = "prune.custom_from_mask"
    _check_target(module, name, who)
    given = numpy.asarray(backend.to_numpy(mask.data if isinstance(mask, Tensor) else backend.xp.asarray(mask)))
    values, keep = _state(module, name)
    if given.shape != values.shape:
        raise ShapeError(f"{who}: the mask has shape {given.shape}; parameter {name!r} of {module._label()} has "
                         f"shape {values.shape}")
    others = numpy.unique(given[~numpy.isin(given, (0, 1))])
    if others.size:
        raise ValueError(f"{who}: the mask for {_target(module, name)} must hold only zeros and ones (False and "
                         f"True), got also {others[:5].tolist()}")
    _install(module, name, keep & (given != 0))
    return module
