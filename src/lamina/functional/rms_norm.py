"""Root-mean-square layer normalization (Zhang and Sennrich 2019), as PyTorch's
``F.rms_norm``: over the trailing axes that ``weight`` spans (D values per row),

    y = x / sqrt(mean(x^2) + eps) * weight,

with no centring and no bias. ``eps=None`` takes the machine epsilon of x's dtype, as
PyTorch. Built from differentiable ops, so its gradients of every order are theirs.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, is_grad_enabled
from lamina.errors import ShapeError

__all__ = ["rms_norm"]


def rms_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight, the mean over the last len(normalized_shape)
    axes, whose sizes must be ``normalized_shape`` (an int or a tuple)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != shape:
        raise ShapeError(f"rms_norm: x of shape {tuple(x.shape)} does not end with normalized_shape {shape}")
    if weight is not None and tuple(weight.shape) != shape:
        raise ShapeError(f"rms_norm: expected a weight of shape {shape}, got shape {tuple(weight.shape)}")
    if eps is None:
        eps = float(np.finfo(x.dtype).eps)
    elif not float(eps) > 0:
        raise ValueError(f"rms_norm: eps must be positive or None, got {eps!r}")
    axes = tuple(range(x.ndim - k, x.ndim))
    if not _records(x, weight):
        return Tensor._wrap(_rms_norm_values(x.data, axes, None if weight is None else weight.data, eps))
    y = x * ((x * x).mean(axis=axes, keepdims=True) + float(eps)).rsqrt()
    return y if weight is None else y * weight


def _records(x: Tensor, weight) -> bool:
    """Whether the ops would record a graph (else the values are computed on the arrays)."""
    if x.dtype.kind != "f" or not isinstance(weight, (Tensor, type(None))):
        return True                                  # the ops' own casts decide
    return is_grad_enabled() and (x.requires_grad or weight is not None and weight.requires_grad)


def _rms_norm_values(x, axes: tuple[int, ...], weight, eps: float):
    """The values of the recorded ops above on the arrays, op for op (eps in x's dtype, as a
    number meeting a tensor is): inference and cached decoding skip the graph's bookkeeping."""
    xp = backend.xp
    y = x * xp.reciprocal(xp.sqrt((x * x).mean(axis=axes, keepdims=True) + xp.asarray(eps, dtype=x.dtype)))
    return y if weight is None else y * weight
