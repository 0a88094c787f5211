"""``MaxUnpool1D`` and ``MaxUnpool3D``: the partial inverses of ``MaxPool1D(return_indices=True)``
and ``MaxPool3D(return_indices=True)``, as :class:`lamina.nn.MaxUnpool2D` for images
(:func:`lamina.functional.unpool_nd.max_unpool1d`, ``max_unpool3d``)."""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.conv3d import triple
from lamina.functional.unpool_nd import max_unpool1d, max_unpool3d
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MaxUnpool1D", "MaxUnpool3D"]


@register_layer
class MaxUnpool1D(Module):
    """Called as ``unpool(v, indices, output_size=None)`` on (N, l, C) sequences: each value
    of v goes back to the step where its maximum was, zeros elsewhere; the output has
    ``output_size`` steps or (l - 1) stride - 2 padding + pool_size."""

    def __init__(self, pool_size=2, stride=None, padding=0, name: str | None = None):
        super().__init__(name=name)
        self.pool_size = positive_int(pool_size, "MaxUnpool1D: pool_size")
        self.stride = self.pool_size if stride is None else positive_int(stride, "MaxUnpool1D: stride")
        self.padding = int(padding)
        if self.padding < 0:
            raise ValueError(f"MaxUnpool1D: padding must be non-negative, got {padding!r}")

    def forward(self, x, indices, output_size=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3:
            raise input_error(self, x, "a 3-D batch of sequences (batch, steps, channels) and its indices")
        return max_unpool1d(x, indices, self.pool_size, self.stride, self.padding, output_size)

    def get_config(self) -> dict:
        return {"pool_size": self.pool_size, "stride": self.stride, "padding": self.padding, "name": self.name}

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, stride={self.stride}, padding={self.padding}"


@register_layer
class MaxUnpool3D(Module):
    """Called as ``unpool(v, indices, output_size=None)`` on NDHWC volumes: each value of v
    goes back to the position where its maximum was, zeros elsewhere; per axis the output
    has ``output_size`` (D, H, W) or (n - 1) stride - 2 padding + pool_size."""

    def __init__(self, pool_size=2, stride=None, padding=0, name: str | None = None):
        super().__init__(name=name)
        self.pool_size = triple(pool_size, "pool_size", "MaxUnpool3D")
        self.stride = self.pool_size if stride is None else triple(stride, "stride", "MaxUnpool3D")
        self.padding = triple(padding, "padding", "MaxUnpool3D")
        if min(self.pool_size + self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"MaxUnpool3D: pool_size and stride must be positive and padding non-negative, got "
                             f"{self.pool_size}, {self.stride}, {self.padding}")

    def forward(self, x, indices, output_size=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 5:
            raise input_error(self, x, "a 5-D NDHWC batch (batch, depth, height, width, channels) and its indices")
        return max_unpool3d(x, indices, self.pool_size, self.stride, self.padding, output_size)

    def get_config(self) -> dict:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride), "padding": list(self.padding),
                "name": self.name}

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, stride={self.stride}, padding={self.padding}"
