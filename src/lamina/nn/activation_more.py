"""Activation layers for PyTorch's GLU, RReLU, LogSoftmax and Softmax2d:

    GLU(axis)             y = a * sigma(b) for x = [a, b] halved along ``axis``
    RReLU(lower, upper)   y = x for x >= 0, else a x; a ~ U(lower, upper) per element in
                          training, a = (lower + upper) / 2 in evaluation
    LogSoftmax(axis)      y_i = z_i - log sum_j e^(z_j) along ``axis``
    Softmax2D             softmax over the channels of each pixel of (N, H, W, C) or (H, W, C)

None has weights. GLU halves the length of its axis; the others keep the input's shape.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.glu import glu
from lamina.functional.rrelu import rrelu
from lamina.nn.activation import Softmax, _Elementwise
from lamina.nn.layer import input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["GLU", "LogSoftmax", "RReLU", "Softmax2D"]


@register_layer
class GLU(Module):
    """Gated linear unit: y = a * sigma(b), x = [a, b] cut in halves along ``axis`` (-1 by
    default, where PyTorch's default dim is -1 too)."""

    default_name = "glu"

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name=name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"GLU: axis must be an int, got {axis!r}")
        self.axis = axis

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self.compute_output_shape(x.shape)
        return glu(x, self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if not -len(shape) <= self.axis < len(shape):
            raise ShapeError(f"{self._label()}: axis {self.axis} is out of range for the input shape {tuple(shape)}")
        n = shape[self.axis]
        if n is not None and n % 2:
            raise ShapeError(f"{self._label()}: the input shape {tuple(shape)} has {n} entries along axis "
                             f"{self.axis}; expected an even number (values and gates)")
        shape[self.axis] = None if n is None else n // 2
        return tuple(shape)

    def get_config(self) -> dict:
        return {"axis": self.axis, "name": self.name}

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


@register_layer
class RReLU(_Elementwise):
    """Randomized leaky ReLU: in training each negative (or zero) input gets its own slope drawn from
    U(lower, upper) (from :func:`lamina.backend.rng`), in evaluation the mean slope
    (lower + upper) / 2. PyTorch's defaults lower = 1/8, upper = 1/3."""

    default_name = "rrelu"

    def __init__(self, lower: float = 1.0 / 8, upper: float = 1.0 / 3, name: str | None = None):
        super().__init__(name=name)
        if not 0.0 <= float(lower) <= float(upper):
            raise ValueError(f"RReLU: expected 0 <= lower <= upper, got lower={lower!r}, upper={upper!r}")
        self.lower, self.upper = float(lower), float(upper)

    def forward(self, x) -> Tensor:
        return rrelu(as_tensor(x), self.lower, self.upper, training=self.training)

    def get_config(self) -> dict:
        return {"lower": self.lower, "upper": self.upper, "name": self.name}

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}"


@register_layer
class LogSoftmax(Softmax):
    """y_i = z_i - log sum_j e^(z_j) along ``axis`` (Softmax's options and configuration),
    computed without forming the softmax, so it stays finite for large |z|."""

    def forward(self, x) -> Tensor:
        return F.log_softmax(as_tensor(x), axis=self.axis)


@register_layer
class Softmax2D(_Elementwise):
    """Softmax over the channels of every pixel of NHWC (N, H, W, C) or (H, W, C) images:
    PyTorch's Softmax2d, whose channels are axis -3 of NCHW, here the last axis."""

    default_name = "softmax2d"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim not in (3, 4):
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels) or one 3-D image")
        return F.softmax(x, axis=-1)
