"""Layers that only rearrange values: Flatten (the bridge from the last convolutional
volume to the fully connected layers, (N, h, w, c) -> (N, h·w·c)), Reshape and Unflatten."""

from __future__ import annotations

import math

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Flatten", "Identity", "Reshape", "Unflatten"]


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


@register_layer
class Unflatten(Module):
    """One axis of length d_1·d_2·... split into the axes ``shape`` = (d_1, d_2, ...), as
    PyTorch's Unflatten: ``Unflatten(1, (4, 4, 3))`` takes (N, 48) to (N, 4, 4, 3). ``axis``
    may be negative but never the batch axis; one entry of ``shape`` may be -1 (inferred)."""

    def __init__(self, axis: int, shape, name: str | None = None):
        super().__init__(name=name)
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(f"Unflatten: axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = axis
        self.shape = tuple(int(n) for n in shape)
        if not self.shape or sum(n == -1 for n in self.shape) > 1 or any(n < -1 or n == 0 for n in self.shape):
            raise ValueError(f"Unflatten: shape must hold positive sizes and at most one -1, got {shape!r}")

    def _split(self, input_shape) -> tuple:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "an input shape with a batch axis")
        axis = self.axis + len(shape) if self.axis < 0 else self.axis
        if not 1 <= axis < len(shape):
            raise ShapeError(f"{self._label()}: axis {self.axis} is not a non-batch axis of the input shape {shape}")
        n = shape[axis]
        known = math.prod(m for m in self.shape if m != -1)
        if n is None:
            parts = tuple(None if m == -1 else m for m in self.shape)
        elif -1 in self.shape and n % known == 0:
            parts = tuple(n // known if m == -1 else m for m in self.shape)
        elif -1 not in self.shape and n == known:
            parts = self.shape
        else:
            raise ShapeError(f"{self._label()}: axis {self.axis} of the input shape {shape} has length {n}, which "
                             f"cannot be split into {self.shape}")
        return shape[:axis] + parts + shape[axis + 1:]

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        return F.reshape(x, self._split(tuple(x.shape)))

    def compute_output_shape(self, input_shape):
        return self._split(input_shape)

    def get_config(self) -> dict:
        return {"axis": self.axis, "shape": list(self.shape), "name": self.name}

    def extra_repr(self) -> str:
        return f"axis={self.axis}, shape={self.shape}"
