"""Keras's ``padding="same"`` pooling (TensorFlow's SAME rule) on lamina's pad and pool ops.

Along an axis of length n with window f and stride s the output has ceil(n / s) positions;
the input is padded by p = max((ceil(n / s) - 1) s + f - n, 0) values, floor(p / 2) before
and the rest after. Max pooling pads with -inf (a padded value never wins); average
pooling divides each window's sum by the number of real values it covers:

    y = avg_pool(pad(x, 0)) / avg_pool(pad(1, 0))

so windows at the border average fewer values, as in Keras.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.keras.masking import mask_of
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["GlobalAveragePooling1D", "SamePooling", "same_padding"]

_OPS = {("max", 1): "max_pool1d", ("max", 2): "max_pool2d", ("max", 3): "max_pool3d",
        ("average", 1): "avg_pool1d", ("average", 2): "avg_pool2d", ("average", 3): "avg_pool3d"}


def same_padding(n: int, f: int, s: int) -> tuple[int, int]:
    """(before, after) padding of an axis of length ``n`` for SAME windows of ``f`` with stride ``s``."""
    total = max((math.ceil(n / s) - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def _tuple(value, dims: int, what: str) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != dims or min(values) < 1:
        raise ValueError(f"{what}: expected a positive int or {dims} positive ints, got {value!r}")
    return values


@register_layer(name="KerasSamePooling")
class SamePooling(Module):
    """Max (``kind="max"``) or average (``kind="average"``) pooling over ``dims`` spatial axes of
    channels-last input with SAME padding; output length ceil(n / stride) per axis."""

    def __init__(self, kind: str, dims: int, pool_size, strides=None, name: str | None = None):
        super().__init__(name=name)
        if (kind, dims) not in _OPS:
            raise ValueError(f"SamePooling: kind must be 'max' or 'average' and dims 1, 2 or 3; got {kind!r}, "
                             f"{dims!r}")
        self.kind, self.dims = kind, dims
        what = f"{'Max' if kind == 'max' else 'Average'}Pooling{dims}D"
        self.what = what
        self.pool_size = _tuple(pool_size, dims, f"{what} pool_size")
        self.strides = self.pool_size if strides is None else _tuple(strides, dims, f"{what} strides")

    def _check(self, shape) -> None:
        if len(shape) != self.dims + 2:
            raise ShapeError(f"{self.what}: expected input of {self.dims + 2} dims (batch, {self.dims} spatial, "
                             f"channels), got shape {tuple(shape)}")

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        self._check(x.shape)
        spatial = x.shape[1:-1]
        widths = [same_padding(n, f, s) for n, f, s in zip(spatial, self.pool_size, self.strides, strict=True)]
        pad_width = ((0, 0), *widths, (0, 0))
        pool = getattr(F, _OPS[(self.kind, self.dims)])
        size, stride = self._op_args()
        if self.kind == "max":
            return pool(F.pad(x, pad_width, value=-np.inf), size, stride)
        sums = pool(F.pad(x, pad_width), size, stride)
        ones = Tensor(np.ones((1, *spatial, 1), dtype=x.dtype))
        counts = pool(F.pad(ones, pad_width), size, stride)
        return sums / Tensor(counts.numpy())

    def _op_args(self):
        if self.dims == 1:
            return self.pool_size[0], self.strides[0]
        return self.pool_size, self.strides

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        spatial = tuple(None if n is None else math.ceil(n / s)
                        for n, s in zip(input_shape[1:-1], self.strides, strict=True))
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self) -> dict:
        return {"kind": self.kind, "dims": self.dims, "pool_size": list(self.pool_size),
                "strides": list(self.strides), "name": self.name}


@register_layer(name="KerasGlobalAveragePooling1D")
class GlobalAveragePooling1D(Module):
    """Keras's GlobalAveragePooling1D: (N, T, C) -> (N, C), the mean over the time axis, or
    with a mask m (N, T) (the input's, or ``mask=``) over the unmasked steps only:
    y = sum_t m_t x_t / sum_t m_t. ``keepdims`` keeps the time axis as 1."""

    def __init__(self, keepdims: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.keepdims = bool(keepdims)

    def forward(self, x, mask=None) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim != 3:
            raise ShapeError(f"GlobalAveragePooling1D: expected (batch, steps, channels), got shape {tuple(x.shape)}")
        mask = mask_of(x) if mask is None else np.asarray(mask, dtype=bool)
        if mask is None:
            return x.mean(axis=1, keepdims=self.keepdims)
        if mask.shape != tuple(x.shape[:2]):
            raise ShapeError(f"GlobalAveragePooling1D: mask of shape {mask.shape} for an input of shape "
                             f"{tuple(x.shape)}; expected {tuple(x.shape[:2])}")
        weights = mask.astype(x.dtype) / np.maximum(mask.sum(axis=1, keepdims=True), 1).astype(x.dtype)
        return (x * Tensor(weights[:, :, None])).sum(axis=1, keepdims=self.keepdims)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        n, _, c = input_shape
        return (n, 1, c) if self.keepdims else (n, c)

    def get_config(self) -> dict:
        return {"keepdims": self.keepdims, "name": self.name}
