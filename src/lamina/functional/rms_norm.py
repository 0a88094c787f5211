"""Root-mean-square layer normalization (Zhang and Sennrich 2019), as PyTorch's
``F.rms_norm``: over the trailing axes that ``weight`` spans (D values per row),

    y = x / sqrt(mean(x^2) + eps) * weight,

with no centring and no bias. ``eps=None`` takes the machine epsilon of x's dtype, as
PyTorch. Built from differentiable ops, so its gradients of every order are theirs.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
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
    y = x * ((x * x).mean(axis=axes, keepdims=True) + float(eps)).rsqrt()
    return y if weight is None else y * weight
