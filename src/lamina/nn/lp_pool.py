"""Power-average pooling layers, PyTorch's LPPool1d/LPPool2d/LPPool3d
(:mod:`lamina.functional.lp_pool`): y = (sum over each window of x^p)^(1/p) per channel.

    LPPool1D(p, k, stride, ceil_mode)   (N, L, C) -> (N, L_out, C)
    LPPool2D(p, f, stride, ceil_mode)   (N, H, W, C) -> (N, H_out, W_out, C)
    LPPool3D(p, f, stride, ceil_mode)   (N, D, H, W, C) -> (N, D_out, H_out, W_out, C)

with n_out = floor((n - k) / s) + 1 (ceil with ``ceil_mode``, a last window starting inside
the input); ``stride`` defaults to the kernel size.
"""

from __future__ import annotations

import math

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.lp_pool import _norm_type, _pair, _triple, lp_pool1d, lp_pool2d, lp_pool3d
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["LPPool1D", "LPPool2D", "LPPool3D"]


def _pooled_length(n: int | None, k: int, s: int, ceil_mode: bool, layer: Module, shape) -> int | None:
    if n is None:
        return None
    if k > n:
        raise ShapeError(f"{layer._label()}: the window {k} is longer than the axis of length {n} of the input "
                         f"shape {tuple(shape)}")
    if not ceil_mode:
        return (n - k) // s + 1
    out = math.ceil((n - k) / s) + 1
    return out - 1 if (out - 1) * s >= n else out


class _LPPool(Module):
    spatial = 2

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.norm_type = _norm_type(norm_type, who)
        if self.spatial == 1:
            self.kernel_size = _pair(kernel_size, "kernel_size", who)[0:1]
            self.stride = self.kernel_size if stride is None else _pair(stride, "stride", who)[0:1]
        else:
            sizes = _pair if self.spatial == 2 else _triple
            self.kernel_size = sizes(kernel_size, "kernel_size", who)
            self.stride = self.kernel_size if stride is None else sizes(stride, "stride", who)
        self.ceil_mode = bool(ceil_mode)

    def _expected(self) -> str:
        return {1: "a 3-D batch (batch, steps, channels)", 2: "a 4-D NHWC batch (batch, height, width, channels)",
                3: "a 5-D NDHWC batch (batch, depth, height, width, channels)"}[self.spatial]

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, self.spatial + 2, self._expected())
        outs = tuple(_pooled_length(n, k, s, self.ceil_mode, self, shape)
                     for n, k, s in zip(shape[1:-1], self.kernel_size, self.stride))
        return (shape[0], *outs, shape[-1])

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != self.spatial + 2:
            raise input_error(self, x, self._expected())
        self.compute_output_shape(x.shape)
        if self.spatial == 1:
            return lp_pool1d(x, self.norm_type, self.kernel_size[0], self.stride[0], self.ceil_mode)
        if self.spatial == 3:
            return lp_pool3d(x, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)
        return lp_pool2d(x, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def macs(self, input_shapes, output_shapes) -> int:
        """One multiply-add per window value, as average pooling's rule."""
        return math.prod(output_shapes[0]) * math.prod(self.kernel_size)

    def get_config(self) -> dict:
        one = self.spatial == 1
        return {"norm_type": self.norm_type, "kernel_size": self.kernel_size[0] if one else list(self.kernel_size),
                "stride": self.stride[0] if one else list(self.stride), "ceil_mode": self.ceil_mode,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}"
                + (", ceil_mode=True" if self.ceil_mode else ""))


@register_layer
class LPPool1D(_LPPool):
    """(sum of x^p over each window of k steps)^(1/p) of (N, L, C) sequences."""

    default_name = "lp_pool1d"
    spatial = 1


@register_layer
class LPPool2D(_LPPool):
    """(sum of x^p over each f_h x f_w window)^(1/p) of NHWC images."""

    default_name = "lp_pool2d"
    spatial = 2


@register_layer
class LPPool3D(_LPPool):
    """(sum of x^p over each f_d x f_h x f_w window)^(1/p) of NDHWC volumes."""

    default_name = "lp_pool3d"
    spatial = 3
