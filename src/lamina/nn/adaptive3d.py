"""Adaptive pooling of (N, D, H, W, C) volumes to a fixed o_d x o_h x o_w grid, PyTorch's
AdaptiveAvgPool3d / AdaptiveMaxPool3d (:mod:`lamina.functional.adaptive_pool3d`): one
classifier head for volumes of any size. ``output_size`` o or (o_d, o_h, o_w), None keeping
that axis.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.adaptive_pool3d import _sizes, adaptive_avg_pool3d, adaptive_max_pool3d
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AdaptiveAvgPool3D", "AdaptiveMaxPool3D"]

_VOLUMES = "a 5-D batch (batch, depth, height, width, channels) with at least one voxel"


class _AdaptivePool3D(Module):
    def __init__(self, output_size, name: str | None = None):
        super().__init__(name=name)
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 3
        if len(sizes) != 3 or any(s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1)
                                  for s in sizes):
            raise ValueError(f"{type(self).__name__}: output_size must be a positive int or 3 of them (None keeps "
                             f"an axis), got {output_size!r}")
        self.output_size = sizes

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 5 or min(x.shape[1:4]) < 1:
            raise input_error(self, x, _VOLUMES)
        _sizes(x, self.output_size, self._label())
        return self._pool(x, self.output_size)

    def compute_output_shape(self, input_shape):
        n, d, h, w, c = check_shape_ndim(self, input_shape, 5, _VOLUMES)
        return (n, *(m if s is None else s for s, m in zip(self.output_size, (d, h, w))), c)

    def get_config(self) -> dict:
        return {"output_size": list(self.output_size), "name": self.name}

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


@register_layer
class AdaptiveAvgPool3D(_AdaptivePool3D):
    """The mean over each of o_d x o_h x o_w windows spread evenly over the volume."""

    _pool = staticmethod(adaptive_avg_pool3d)


@register_layer
class AdaptiveMaxPool3D(_AdaptivePool3D):
    """The maximum over each of o_d x o_h x o_w windows spread evenly over the volume."""

    _pool = staticmethod(adaptive_max_pool3d)
