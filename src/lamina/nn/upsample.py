"""``Upsample``: PyTorch's resizing layer on NHWC batches, to a fixed ``size`` or by a
``scale_factor``, in any mode of :func:`lamina.functional.interpolate` (nearest,
nearest-exact, bilinear, bicubic, area). Keras's integer-factor ``UpSampling2D`` lives in
:mod:`lamina.nn.resize`."""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor
from lamina.functional.interpolate import MODES, interpolate, output_size
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor


@register_layer
class Upsample(Module):
    """(N, H, W, C) -> (N, H_out, W_out, C) with (H_out, W_out) = ``size`` or
    floor(scale_factor (H, W))."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        if (size is None) == (scale_factor is None):
            raise ValueError(f"Upsample: give exactly one of size and scale_factor, got size={size!r}, "
                             f"scale_factor={scale_factor!r}")
        if mode not in MODES:
            raise ValueError(f"Upsample: mode must be one of {list(MODES)}, got {mode!r}")
        self.size = _plain(size)
        self.scale_factor = _plain(scale_factor)
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        return interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")
        if self.size is not None:
            (ho, wo), _ = output_size((1, 1), self.size, None)
            return (n, ho, wo, c)
        out = [None if d is None else output_size((d, d), None, s)[0][0]
               for d, s in zip((h, w), self.scale_factor if isinstance(self.scale_factor, list)
                               else (self.scale_factor,) * 2)]
        return (n, out[0], out[1], c)

    def get_config(self) -> dict:
        return {"size": self.size, "scale_factor": self.scale_factor, "mode": self.mode,
                "align_corners": self.align_corners, "name": self.name}

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        corners = "" if self.align_corners is None else f", align_corners={self.align_corners}"
        return f"{what}, mode={self.mode!r}{corners}"


@register_layer
class UpsamplingNearest2D(Upsample):
    """PyTorch's ``UpsamplingNearest2d``: :class:`Upsample` with mode 'nearest'."""

    def __init__(self, size=None, scale_factor=None, name: str | None = None):
        super().__init__(size, scale_factor, mode="nearest", name=name)

    def get_config(self) -> dict:
        return {"size": self.size, "scale_factor": self.scale_factor, "name": self.name}


@register_layer
class UpsamplingBilinear2D(Upsample):
    """PyTorch's ``UpsamplingBilinear2d``: :class:`Upsample` with mode 'bilinear' and
    ``align_corners=True`` (the corner pixels of input and output aligned)."""

    def __init__(self, size=None, scale_factor=None, name: str | None = None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True, name=name)

    def get_config(self) -> dict:
        return {"size": self.size, "scale_factor": self.scale_factor, "name": self.name}


def _plain(value):
    """``size`` or ``scale_factor`` with NumPy numbers as Python ones (a tuple as a list), so
    that the config is plain JSON; anything else as given (``interpolate`` checks it)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, numpy.generic) else value
