"""Layers that only rearrange values: Flatten (the bridge from the last convolutional
volume to the fully connected layers, (N, h, w, c) -> (N, h·w·c)) and Reshape."""

from __future__ import annotations

import math

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Flatten", "Identity", "Reshape"]


@register_layer
class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1·d2·...): every axis after the batch axis in one.

    On NHWC volumes the features come out in (h, w, c) order, channel fastest.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim == 0:
            raise input_error(self, x, "an input with a batch axis")
        return F.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "an input shape with a batch axis")
        rest = shape[1:]
        return (shape[0], None if any(n is None for n in rest) else math.prod(rest))

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class Reshape(Module):
    """(N, ...) -> (N, *target_shape); one entry of ``target_shape`` may be -1 (inferred)."""

    def __init__(self, target_shape, name: str | None = None):
        super().__init__(name=name)
        self.target_shape = tuple(int(n) for n in target_shape)
        if sum(n == -1 for n in self.target_shape) > 1 or any(n < -1 or n == 0 for n in self.target_shape):
            raise ValueError(f"Reshape: target_shape must hold positive sizes and at most one -1, "
                             f"got {target_shape!r}")

    def _resolve(self, rest, shown) -> tuple:
        target = self.target_shape
        if any(n is None for n in rest):
            return tuple(None if n == -1 else n for n in target)
        total = math.prod(rest)
        known = math.prod(n for n in target if n != -1)
        if -1 in target:
            if total % known:
                raise ShapeError(f"{self._label()}: cannot reshape an input of shape {tuple(shown)} "
                                 f"(batch axis kept) into {target}")
            return tuple(total // known if n == -1 else n for n in target)
        if known != total:
            raise ShapeError(f"{self._label()}: cannot reshape an input of shape {tuple(shown)} "
                             f"({total} values per sample) into {target} ({known} values)")
        return target

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim == 0:
            raise input_error(self, x, "an input with a batch axis")
        return F.reshape(x, (x.shape[0],) + self._resolve(x.shape[1:], x.shape))

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "an input shape with a batch axis")
        return (shape[0],) + self._resolve(shape[1:], shape)

    def get_config(self) -> dict:
        return {"target_shape": list(self.target_shape), "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.target_shape}"


@register_layer
class Identity(Module):
    """a = x (a placeholder, e.g. the shortcut branch of a residual block)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return as_tensor(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"name": self.name}
