"""Layers that resize or pad feature maps without weights, PyTorch's counterparts of:

    AdaptiveAvgPool2D(o) / AdaptiveMaxPool2D(o)   (N, H, W, C) -> (N, o_h, o_w, C) for any H, W
    AdaptiveAvgPool1D(o) / AdaptiveMaxPool1D(o)   (N, T, C) -> (N, o, C)
    PixelShuffle(r)                               (N, H, W, C r^2) -> (N, H r, W r, C)
    PixelUnshuffle(r)                             (N, H r, W r, C) -> (N, H, W, C r^2)
    ReflectionPad2D(p) / ReplicationPad2D(p)      (N, H, W, C) -> (N, top + H + bottom, left + W + right, C)

Adaptive pooling lets one classifier head take images of any size (its windows are
PyTorch's, see :mod:`lamina.functional.adaptive_pool`); pixel shuffle after a convolution
with C r^2 filters upsamples by r (ESPCN's sub-pixel convolution); reflection and
replication padding give a 'same' convolution a border copied from the image instead of
zeros (style transfer, CycleGAN). The padding is given as in ZeroPadding2D, top and bottom
first: p, (p_h, p_w), (top, bottom, left, right) or ((top, bottom), (left, right)), where
PyTorch's ReflectionPad2d lists (left, right, top, bottom).
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.adaptive_pool import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
)
from lamina.functional.padding import pad2d, pad_sides, pixel_shuffle, pixel_unshuffle
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "PixelShuffle",
    "PixelUnshuffle", "ReflectionPad2D", "ReplicationPad2D",
]

_NHWC = "a 4-D NHWC batch (batch, height, width, channels)"
_NHWC_SHAPE = "a 4-D NHWC shape (batch, height, width, channels)"
_SEQUENCE = "a 3-D batch of sequences (batch, steps, channels)"
_SEQUENCE_SHAPE = "a 3-D shape (batch, steps, channels)"


def _checked_images(layer: Module, x) -> Tensor:
    x = as_tensor(x)
    if x.ndim != 4:
        hint = " (add a batch axis: x[None])" if x.ndim == 3 else ""
        raise input_error(layer, x, f"{_NHWC}{hint}")
    return x


def _size_entry(value, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}: expected positive ints (or None to keep the input size), got {value!r}")
    return int(value)


# -- adaptive pooling ----------------------------------------------------------------------
class _AdaptivePool2D(Module):
    def __init__(self, output_size, name: str | None = None):
        super().__init__(name=name)
        what = f"{type(self).__name__} output_size"
        if isinstance(output_size, (tuple, list)):
            if len(output_size) != 2:
                raise ValueError(f"{what}: expected an int or a pair (o_h, o_w), got {output_size!r}")
            self.output_size = (_size_entry(output_size[0], what), _size_entry(output_size[1], what))
        else:
            self.output_size = (_size_entry(output_size, what),) * 2

    def forward(self, x) -> Tensor:
        x = _checked_images(self, x)
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise input_error(self, x, f"{_NHWC} with at least one pixel")
        return self._pool(x, self.output_size)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        oh, ow = (size if size is not None else n_in for size, n_in in zip(self.output_size, (h, w)))
        return (n, oh, ow, c)

    def get_config(self) -> dict:
        return {"output_size": list(self.output_size), "name": self.name}

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


@register_layer
class AdaptiveAvgPool2D(_AdaptivePool2D):
    """The mean over each of o_h x o_w windows spread evenly over the image, per channel:
    (N, H, W, C) -> (N, o_h, o_w, C). ``output_size`` o or (o_h, o_w), None keeping that
    axis. ``AdaptiveAvgPool2D(1)`` is a global average pool that keeps H = W = 1; VGG pools
    to 7x7 before its classifier, GoogLeNet's auxiliary heads to 4x4."""

    _pool = staticmethod(adaptive_avg_pool2d)


@register_layer
class AdaptiveMaxPool2D(_AdaptivePool2D):
    """The maximum over each of o_h x o_w windows spread evenly over the image, per
    channel; the gradient goes to each window's first maximum."""

    _pool = staticmethod(adaptive_max_pool2d)


class _AdaptivePool1D(Module):
    def __init__(self, output_size, name: str | None = None):
        super().__init__(name=name)
        self.output_size = _size_entry(output_size, f"{type(self).__name__} output_size")

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[1] == 0:
            raise input_error(self, x, f"{_SEQUENCE} with at least one step")
        return self._pool(x, self.output_size)

    def compute_output_shape(self, input_shape):
        n, t, c = check_shape_ndim(self, input_shape, 3, _SEQUENCE_SHAPE)
        return (n, t if self.output_size is None else self.output_size, c)

    def get_config(self) -> dict:
        return {"output_size": self.output_size, "name": self.name}

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


@register_layer
class AdaptiveAvgPool1D(_AdaptivePool1D):
    """The mean over each of o windows spread evenly over the steps: (N, T, C) -> (N, o, C)."""

    _pool = staticmethod(adaptive_avg_pool1d)


@register_layer
class AdaptiveMaxPool1D(_AdaptivePool1D):
    """The maximum over each of o windows spread evenly over the steps: (N, T, C) -> (N, o, C)."""

    _pool = staticmethod(adaptive_max_pool1d)


# -- pixel shuffle ---------------------------------------------------------------------------
def _factor(r, what: str) -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{what}: expected a positive int, got {r!r}")
    return int(r)


@register_layer
class PixelShuffle(Module):
    """Depth to space by ``upscale_factor`` r: (N, H, W, C r^2) -> (N, H r, W r, C), in
    PyTorch's channel order (:func:`lamina.functional.padding.pixel_shuffle`)."""

    def __init__(self, upscale_factor: int, name: str | None = None):
        super().__init__(name=name)
        self.upscale_factor = _factor(upscale_factor, "PixelShuffle upscale_factor")

    def forward(self, x) -> Tensor:
        x = _checked_images(self, x)
        self.compute_output_shape(x.shape)
        return pixel_shuffle(x, self.upscale_factor)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        r = self.upscale_factor
        if c is not None and c % (r * r):
            raise ShapeError(f"{self._label()}: the {c} channels of the input shape {tuple(input_shape)} are not a "
                             f"multiple of r^2 = {r * r}")
        return (n, None if h is None else h * r, None if w is None else w * r, None if c is None else c // (r * r))

    def get_config(self) -> dict:
        return {"upscale_factor": self.upscale_factor, "name": self.name}

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


@register_layer
class PixelUnshuffle(Module):
    """Space to depth by ``downscale_factor`` r: (N, H r, W r, C) -> (N, H, W, C r^2), the
    inverse of PixelShuffle."""

    def __init__(self, downscale_factor: int, name: str | None = None):
        super().__init__(name=name)
        self.downscale_factor = _factor(downscale_factor, "PixelUnshuffle downscale_factor")

    def forward(self, x) -> Tensor:
        x = _checked_images(self, x)
        self.compute_output_shape(x.shape)
        return pixel_unshuffle(x, self.downscale_factor)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        r = self.downscale_factor
        if (h is not None and h % r) or (w is not None and w % r):
            raise ShapeError(f"{self._label()}: the height and width of the input shape {tuple(input_shape)} must "
                             f"be multiples of r = {r}")
        return (n, None if h is None else h // r, None if w is None else w // r, None if c is None else c * r * r)

    def get_config(self) -> dict:
        return {"downscale_factor": self.downscale_factor, "name": self.name}

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"


# -- padding -------------------------------------------------------------------------------
class _Pad2D(Module):
    mode = ""
    _limit = ""
    """What the input must satisfy, for the error message."""

    def __init__(self, padding=1, name: str | None = None):
        super().__init__(name=name)
        self.padding = pad_sides(padding, f"{type(self).__name__} padding")

    def forward(self, x) -> Tensor:
        x = _checked_images(self, x)
        self.compute_output_shape(x.shape)
        return pad2d(x, self.padding, mode=self.mode)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        top, bottom, left, right = self.padding
        for size, largest in ((h, max(top, bottom)), (w, max(left, right))):
            if size is not None and largest and not self._fits(largest, size):
                raise ShapeError(f"{self._label()}: padding (top, bottom, left, right) = {self.padding} does not fit "
                                 f"the input shape {tuple(input_shape)}; expected {self._limit}")
        return (n, None if h is None else top + h + bottom, None if w is None else left + w + right, c)

    @staticmethod
    def _fits(amount: int, size: int) -> bool:
        """Whether ``amount`` rows or columns of padding fit an axis of length ``size``."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"padding": list(self.padding), "name": self.name}

    def extra_repr(self) -> str:
        return f"padding={self.padding}"


@register_layer
class ReflectionPad2D(_Pad2D):
    """Padding that mirrors the image about its edge pixels (``[x2 x1] x0 x1 x2``); every
    amount must be less than the height or width it pads."""

    mode = "reflect"
    _limit = "each amount less than the height or width it pads"

    @staticmethod
    def _fits(amount: int, size: int) -> bool:
        return amount < size


@register_layer
class ReplicationPad2D(_Pad2D):
    """Padding that repeats the edge pixels (``[x0 x0] x0 x1 x2``)."""

    mode = "replicate"
    _limit = "a height and width of at least 1"

    @staticmethod
    def _fits(amount: int, size: int) -> bool:
        return size >= 1
