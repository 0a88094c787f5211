"""Gradient clipping (in place on ``p.grad``, between backward and ``step()``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.module import Module


def _grads(params: Module | Tensor | Iterable[Tensor]) -> list:
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Tensor):
        params = [params]
    grads = []
    for p in params:
        g = p.grad
        if g is not None:
            grads.append(g.data if isinstance(g, Tensor) else g)
    return grads


def _norm(g, p: float) -> float:
    xp = backend.xp
    if g.size == 0:
        return 0.0
    if p == 2.0:
        flat = g.reshape(-1)
        return math.sqrt(float(xp.vdot(flat, flat)))
    if p == math.inf:
        return float(xp.abs(g).max())
    if p == -math.inf:
        return float(xp.abs(g).min())
    if p == 0.0:
        return float(xp.count_nonzero(g))
    if p == 1.0:
        return float(xp.abs(g).sum())
    with numpy.errstate(divide="ignore", over="ignore"):  # p < 0: 0 ** p = inf, the norm inf ** (1/p) = 0
        return _power(float((xp.abs(g) ** p).sum()), 1.0 / p)


def _power(x: float, e: float) -> float:
    """x ** e as a float64 that overflows to inf (and 0 ** negative to inf), as torch's norms
    do, where Python's float power raises."""
    with numpy.errstate(over="ignore", divide="ignore"):
        return float(numpy.float64(x) ** e)


def clip_grad_norm(params: Module | Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> float:
    r"""Rescale the gradients so that their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is taken over all gradients together, as if concatenated into one vector:
    :math:`\|g\|_p = (\sum_i |g_i|^p)^{1/p}` (``inf``: the largest :math:`|g_i|`; for
    :math:`p < 0`, :math:`0^p = \infty`, so one zero element makes the norm 0, as in torch). If it
    exceeds ``max_norm`` every gradient is multiplied in place by
    ``max_norm / (norm + 1e-6)`` (``torch.nn.utils.clip_grad_norm_``'s rule).
    Parameters without a gradient are ignored. Returns the norm before clipping
    (``0.0`` when no parameter has a gradient).
    """
    grads = _grads(params)
    if not grads:
        return 0.0
    p = float(norm_type)
    norms = [_norm(g, p) for g in grads]
    if p == math.inf:
        total = max(norms)
    elif p == -math.inf:
        total = min(norms)
    elif p == 0.0:
        total = float(sum(norms))
    else:
        total = _power(sum(_power(n, p) for n in norms), 1.0 / p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm: the total norm of order {norm_type} of the gradients is {total}; "
            "set error_if_nonfinite=False to clip anyway"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also true for nan, which then spreads to the gradients as in torch
        for g in grads:
            g *= coef
    return total


def clip_grad_value(params: Module | Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place
    (``torch.nn.utils.clip_grad_value_``)."""
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value: invalid clip_value {clip_value!r} (must be >= 0)")
    xp = backend.xp
    for g in _grads(params):
        xp.clip(g, -clip_value, clip_value, out=g)
