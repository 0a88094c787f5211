"""Helpers shared by the ops."""

from __future__ import annotations

from lamina.errors import ShapeError


def unbroadcast(grad, shape: tuple[int, ...]):
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting (the bias rule:
    dJ/db = sum over the samples of dJ/dz)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def normalize_axes(axis, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of range for an input of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def shape_error(op: str, *shapes) -> ShapeError:
    listed = " and ".join(str(tuple(s)) for s in shapes)
    return ShapeError(f"{op}: operands of shapes {listed} cannot be broadcast together")
