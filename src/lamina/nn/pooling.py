"""Pooling layers on NHWC batches (course notes, CNN; AlexNet's overlapping pooling).

A (f_h, f_w) window slides with stride s over each channel separately and keeps the
maximum (MaxPool2D) or the mean (AvgPool2D); no learned parameters. Output size per
spatial axis: floor((n + 2p - f) / s) + 1, or with ``ceil_mode`` ceil((n + 2p - f) / s) + 1
less one if the last window would start in the right padding (PyTorch's rule).
GlobalAvgPool2D averages each whole feature map: (N, H, W, C) -> (N, C) (ResNet, GoogLeNet).

The arithmetic lives in :mod:`lamina.functional` (``max_pool2d``, ``avg_pool2d``,
``global_avg_pool2d``, and the output-size rule ``pool_output_length``).
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.pooling import pool_output_length
from lamina.nn.layer import check_shape_ndim, compact, input_error, pair, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AvgPool2D", "GlobalAvgPool2D", "MaxPool2D", "MaxUnpool2D", "pool_output_length"]


def _kernel(name: str):
    import lamina.functional as F

    fn = getattr(F, name, None)
    if fn is None:
        raise NotImplementedError(f"lamina.functional.{name} is not available in this version of lamina")
    return fn


class _Pool2D(Module):
    _kernel_name = ""

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, name: str | None = None):
        super().__init__(name=name)
        what = type(self).__name__
        self.pool_size = pair(pool_size, f"{what} pool_size")
        self.stride = self.pool_size if stride is None else pair(stride, f"{what} stride")
        if isinstance(padding, str):
            if padding.lower() != "valid":
                raise ValueError(f"{what}: padding must be 'valid', an int or a pair of ints, got {padding!r} "
                                 "(for a 'same' 3x3 stride-1 pool use padding=1)")
            padding = 0
        self.padding = pair(padding, f"{what} padding")
        self.ceil_mode = bool(ceil_mode)
        if min(self.pool_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{what}: pool_size and stride must be positive and padding non-negative, got "
                             f"{self.pool_size}, {self.stride}, {self.padding}")
        if any(2 * p > f for p, f in zip(self.padding, self.pool_size)):
            raise ValueError(f"{what}: padding {self.padding} must be at most half the pool size {self.pool_size}")

    def _output_hw(self, shape, shown) -> tuple[int | None, int | None]:
        outs = []
        for axis in (0, 1):
            n, f = shape[1 + axis], self.pool_size[axis]
            p = self.padding[axis]
            out = pool_output_length(n, f, self.stride[axis], p, self.ceil_mode)
            if out == 0:
                raise ShapeError(
                    f"{self._label()}: the {self.pool_size[0]}x{self.pool_size[1]} pool is larger than "
                    f"the input of shape {tuple(shown)} (padding {self.padding}); expected a height and "
                    f"width of at least the pool size" + (" less the stride" if self.ceil_mode else "")
                )
            outs.append(out)
        return outs[0], outs[1]

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")
        out_h, out_w = self._output_hw(shape, shape)
        return (shape[0], out_h, out_w, shape[3])

    def _checked(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            hint = " (add a batch axis: x[None])" if x.ndim == 3 else ""
            raise input_error(self, x, f"a 4-D NHWC batch (batch, height, width, channels){hint}")
        self._output_hw(x.shape, x.shape)
        return x

    def forward(self, x) -> Tensor:
        x = self._checked(x)
        return _kernel(self._kernel_name)(x, compact(self.pool_size), stride=compact(self.stride),
                                          padding=compact(self.padding), ceil_mode=self.ceil_mode)

    def get_config(self) -> dict:
        return {
            "pool_size": list(self.pool_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "ceil_mode": self.ceil_mode,
            "name": self.name,
        }

    def extra_repr(self) -> str:
        parts = [f"pool_size={self.pool_size}"]
        if self.stride != self.pool_size:
            parts.append(f"stride={self.stride}")
        if self.padding != (0, 0):
            parts.append(f"padding={self.padding}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return ", ".join(parts)


def set_average_options(layer: Module, count_include_pad: bool, divisor_override: int | None) -> None:
    """Check and store the options every average pooling layer shares with PyTorch's:
    whether the zero padding counts in a window's size, and a divisor replacing that size."""
    if divisor_override is not None and (isinstance(divisor_override, bool)
                                         or not isinstance(divisor_override, int) or divisor_override < 1):
        raise ValueError(f"{type(layer).__name__}: divisor_override must be a positive int or None, got "
                         f"{divisor_override!r}")
    layer.count_include_pad = bool(count_include_pad)
    layer.divisor_override = divisor_override


def average_options_config(layer: Module) -> dict:
    """The average pooling options that differ from the defaults, JSON-ready."""
    config = {}
    if not layer.count_include_pad:
        config["count_include_pad"] = False
    if layer.divisor_override is not None:
        config["divisor_override"] = layer.divisor_override
    return config


def average_options_repr(layer: Module) -> list[str]:
    return [f"{key}={value}" for key, value in average_options_config(layer).items()]


@register_layer
class MaxPool2D(_Pool2D):
    """Max pooling: each output is the largest value in its (f_h, f_w) window, per channel;
    the gradient flows back to that element only. ``stride`` defaults to ``pool_size``;
    AlexNet's overlapping pooling is ``MaxPool2D(3, stride=2)``. With ``return_indices``
    the layer returns (output, indices), the flat positions of the maxima that
    :class:`MaxUnpool2D` takes (:func:`lamina.functional.unpool.max_pool2d_with_indices`)."""

    _kernel_name = "max_pool2d"

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, return_indices: bool = False,
                 name: str | None = None):
        super().__init__(pool_size, stride, padding, ceil_mode, name=name)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        if not self.return_indices:
            return super().forward(x)
        x = self._checked(x)
        return _kernel("max_pool2d_with_indices")(x, self.pool_size, self.stride, self.padding, self.ceil_mode)

    def get_config(self) -> dict:
        config = super().get_config()
        if self.return_indices:
            config["return_indices"] = True
        return config

    def extra_repr(self) -> str:
        return super().extra_repr() + (", return_indices=True" if self.return_indices else "")


@register_layer
class AvgPool2D(_Pool2D):
    """Average pooling: each output is the mean of its (f_h, f_w) window, per channel; the
    gradient is shared equally among the window's elements. As PyTorch's AvgPool2d, the
    zero padding counts in the window size unless ``count_include_pad=False``, and
    ``divisor_override`` d divides every window's sum by d instead
    (:func:`lamina.functional.avg_pool2d`)."""

    _kernel_name = "avg_pool2d"

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None, name: str | None = None):
        super().__init__(pool_size, stride, padding, ceil_mode, name=name)
        set_average_options(self, count_include_pad, divisor_override)

    def forward(self, x) -> Tensor:
        x = self._checked(x)
        return _kernel(self._kernel_name)(x, compact(self.pool_size), stride=compact(self.stride),
                                          padding=compact(self.padding), ceil_mode=self.ceil_mode,
                                          count_include_pad=self.count_include_pad,
                                          divisor_override=self.divisor_override)

    def get_config(self) -> dict:
        return {**super().get_config(), **average_options_config(self)}

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *average_options_repr(self)])


@register_layer
class MaxUnpool2D(Module):
    """The partial inverse of ``MaxPool2D(return_indices=True)``: called as
    ``unpool(v, indices, output_size=None)``, it puts each value of v back where its maximum
    was, zeros elsewhere (SegNet's decoder; :func:`lamina.functional.unpool.max_unpool2d`).
    ``output_size`` (H, W) settles the size when the pooling dropped a border."""

    def __init__(self, pool_size=2, stride=None, padding=0, name: str | None = None):
        super().__init__(name=name)
        self.pool_size = pair(pool_size, "MaxUnpool2D pool_size")
        self.stride = self.pool_size if stride is None else pair(stride, "MaxUnpool2D stride")
        self.padding = pair(padding, "MaxUnpool2D padding")

    def forward(self, x, indices, output_size=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels) and its indices")
        return _kernel("max_unpool2d")(x, indices, self.pool_size, self.stride, self.padding, output_size)

    def get_config(self) -> dict:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride), "padding": list(self.padding),
                "name": self.name}

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, stride={self.stride}, padding={self.padding}"


@register_layer
class GlobalAvgPool2D(Module):
    """Mean of each feature map: (N, H, W, C) -> (N, C), in place of flatten + FC layers."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        return _kernel("global_avg_pool2d")(x)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")
        return (shape[0], shape[3])

    def get_config(self) -> dict:
        return {"name": self.name}
