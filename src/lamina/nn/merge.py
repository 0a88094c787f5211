"""Layers joining several tensors: Add (ResNet's shortcut, a^[l+2] = g(z^[l+2] + a^[l]))
and Concatenate (GoogLeNet's inception module stacks its branches along the channels).

Both are called with a list of tensors, ``Add()([a, b])``, or with the tensors as
arguments, ``Add()(a, b)``.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Add", "Concatenate"]


def _unpack(inputs) -> list:
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = inputs[0]
    return [as_tensor(x) for x in inputs]


def _shapes(input_shape, layer: Module) -> list[tuple]:
    if (not isinstance(input_shape, (list, tuple)) or not input_shape
            or not all(isinstance(s, (list, tuple)) for s in input_shape)):
        raise ShapeError(f"{layer._label()}: expected a list of input shapes, got {input_shape!r}")
    return [tuple(s) for s in input_shape]


def _describe(xs) -> str:
    return ", ".join(f"{tuple(x.shape)} ({x.dtype})" for x in xs)


@register_layer
class Add(Module):
    """y = x_1 + x_2 + ... for inputs of one shape (the residual connection)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, *inputs) -> Tensor:
        xs = _unpack(inputs)
        if len(xs) < 2:
            raise ShapeError(f"{self._label()}: expected at least 2 inputs, got {len(xs)}")
        if any(x.shape != xs[0].shape for x in xs):
            raise ShapeError(
                f"{self._label()}: got inputs of shapes {_describe(xs)}; expected equal shapes (for a "
                "residual block, project the shortcut with a 1x1 convolution or a Dense layer)"
            )
        out = xs[0]
        for x in xs[1:]:
            out = F.add(out, x)
        return out

    def compute_output_shape(self, input_shape):
        shapes = _shapes(input_shape, self)
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(a is not None and b is not None and a != b
                                               for a, b in zip(s, shapes[0])):
                raise ShapeError(f"{self._label()}: got input shapes {shapes}; expected equal shapes")
        return tuple(next((d for d in dims if d is not None), None) for dims in zip(*shapes))

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class Concatenate(Module):
    """Joins inputs along ``axis`` (default the channel axis, -1); every other axis must agree."""

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name=name)
        self.axis = int(axis)

    def _check(self, shapes, shown) -> int:
        ndim = len(shapes[0])
        if not -ndim <= self.axis < ndim:
            raise ShapeError(f"{self._label()}: axis {self.axis} is out of range for inputs of shapes {shown}")
        axis = self.axis % ndim
        for s in shapes[1:]:
            if len(s) != ndim or any(a is not None and b is not None and a != b
                                     for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
                raise ShapeError(
                    f"{self._label()}: got inputs of shapes {shown}; expected equal sizes on every axis "
                    f"but the concatenation axis {self.axis}"
                )
        return axis

    def forward(self, *inputs) -> Tensor:
        xs = _unpack(inputs)
        if len(xs) < 1:
            raise ShapeError(f"{self._label()}: expected at least one input")
        self._check([x.shape for x in xs], _describe(xs))
        return F.concat(xs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        shapes = _shapes(input_shape, self)
        axis = self._check(shapes, shapes)
        out = list(shapes[0])
        sizes = [s[axis] for s in shapes]
        out[axis] = None if any(n is None for n in sizes) else sum(sizes)
        return tuple(out)

    def get_config(self) -> dict:
        return {"axis": self.axis, "name": self.name}

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
