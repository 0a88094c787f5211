"""Padding layers for sequences (N, L, C), images (N, H, W, C) and volumes (N, D, H, W, C),
PyTorch's ConstantPad1d/2d/3d, ZeroPad1d/3d, ReflectionPad1d/3d, ReplicationPad1d/3d and
CircularPad1d/2d/3d (ZeroPadding2D, ReflectionPad2D and ReplicationPad2D cover the rest):

    (N, n_1, ..., n_d, C) -> (N, b_1 + n_1 + a_1, ..., b_d + n_d + a_d, C)

The amounts are listed outer axis first: p, one int per axis, (b_1, a_1, ..., b_d, a_d) or
((b_1, a_1), ...); e.g. (front, back, top, bottom, left, right) for a volume, where PyTorch
lists the last axis first ((left, right, top, bottom, front, back)). The modes and their
limits are :mod:`lamina.functional.padding_nd`'s.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.padding_nd import check_pad_fits, pad_amounts, pad_axes
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "CircularPad1D", "CircularPad2D", "CircularPad3D", "ConstantPad1D", "ConstantPad2D", "ConstantPad3D",
    "ReflectionPad1D", "ReflectionPad3D", "ReplicationPad1D", "ReplicationPad3D", "ZeroPad1D", "ZeroPad3D",
]

_LAYOUTS = {1: "(batch, steps, channels)", 2: "(batch, height, width, channels)",
            3: "(batch, depth, height, width, channels)"}


class _PadND(Module):
    mode = "constant"
    spatial = 1

    def __init__(self, padding=1, name: str | None = None):
        super().__init__(name=name)
        self.amounts = pad_amounts(padding, self.spatial, type(self).__name__)

    def _value(self) -> float:
        return 0.0

    def _expected(self) -> str:
        return f"a {self.spatial + 2}-D input {_LAYOUTS[self.spatial]}"

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != self.spatial + 2:
            raise input_error(self, x, self._expected())
        self.compute_output_shape(x.shape)
        return pad_axes(x, self.amounts, self.mode, self._value(), self._label())

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, self.spatial + 2, self._expected())
        check_pad_fits(shape, self.amounts, self.mode, self._label())
        spatial = tuple(None if n is None else before + n + after
                        for n, (before, after) in zip(shape[1:-1], self.amounts))
        return (shape[0], *spatial, shape[-1])

    def get_config(self) -> dict:
        return {"padding": [list(pair) for pair in self.amounts], "name": self.name}

    def extra_repr(self) -> str:
        return f"padding={self.amounts}"


class _ConstantPad(_PadND):
    def __init__(self, padding, value: float, name: str | None = None):
        super().__init__(padding, name=name)
        self.value = float(value)

    def _value(self) -> float:
        return self.value

    def get_config(self) -> dict:
        return {**super().get_config(), "value": self.value}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, value={self.value}"


@register_layer
class ConstantPad1D(_ConstantPad):
    """Pads (N, L, C) sequences with ``value``: padding p or (left, right)."""

    spatial = 1


@register_layer
class ConstantPad2D(_ConstantPad):
    """Pads NHWC images with ``value``: padding p, (p_h, p_w), (top, bottom, left, right) or
    ((top, bottom), (left, right))."""

    spatial = 2


@register_layer
class ConstantPad3D(_ConstantPad):
    """Pads (N, D, H, W, C) volumes with ``value``: padding p, (p_d, p_h, p_w),
    (front, back, top, bottom, left, right) or ((front, back), (top, bottom), (left, right))."""

    spatial = 3


@register_layer
class ZeroPad1D(_PadND):
    """Pads (N, L, C) sequences with zeros: padding p or (left, right)."""

    spatial = 1


@register_layer
class ZeroPad3D(_PadND):
    """Pads (N, D, H, W, C) volumes with zeros (amounts as ConstantPad3D's)."""

    spatial = 3


@register_layer
class ReflectionPad1D(_PadND):
    """Mirrors (N, L, C) sequences about their ends; each amount less than L."""

    mode, spatial = "reflect", 1


@register_layer
class ReflectionPad3D(_PadND):
    """Mirrors (N, D, H, W, C) volumes about their faces; each amount less than the length
    it pads."""

    mode, spatial = "reflect", 3


@register_layer
class ReplicationPad1D(_PadND):
    """Repeats the end values of (N, L, C) sequences."""

    mode, spatial = "replicate", 1


@register_layer
class ReplicationPad3D(_PadND):
    """Repeats the face values of (N, D, H, W, C) volumes."""

    mode, spatial = "replicate", 3


@register_layer
class CircularPad1D(_PadND):
    """Wraps (N, L, C) sequences around; each amount at most L."""

    mode, spatial = "circular", 1


@register_layer
class CircularPad2D(_PadND):
    """Wraps NHWC images around (a torus); each amount at most the length it pads."""

    mode, spatial = "circular", 2


@register_layer
class CircularPad3D(_PadND):
    """Wraps (N, D, H, W, C) volumes around; each amount at most the length it pads."""

    mode, spatial = "circular", 3
