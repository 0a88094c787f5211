"""Resizing layers of encoder-decoder networks (U-Net, convolutional autoencoders, FCN), on
NHWC batches, as Keras names them:

    UpSampling2D(size=s)      (N, H, W, C) -> (N, s_h H, s_w W, C)   nearest or bilinear
    ZeroPadding2D(padding=p)  (N, H, W, C) -> (N, top + H + bottom, left + W + right, C)
    Cropping2D(cropping=c)    (N, H, W, C) -> (N, H - top - bottom, W - left - right, C)

No learned parameters. An UpSampling2D followed by a Conv2D is the usual alternative to a
Conv2DTranspose (it avoids the checkerboard pattern of overlapping transposed kernels);
Cropping2D trims an encoder's feature map to the decoder's size before a U-Net skip
connection is concatenated, and ZeroPadding2D grows one. The arithmetic lives in
:mod:`lamina.functional.resize`.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.resize import INTERPOLATIONS, crop2d, edge_pairs, scale_pair, upsample2d, zero_pad2d
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Cropping2D", "UpSampling2D", "ZeroPadding2D"]

_NHWC = "a 4-D NHWC batch (batch, height, width, channels)"
_NHWC_SHAPE = "a 4-D NHWC shape (batch, height, width, channels)"


def _check_batch(layer: Module, x) -> None:
    if x.ndim != 4:
        hint = " (add a batch axis: x[None])" if x.ndim == 3 else ""
        raise input_error(layer, x, f"{_NHWC}{hint}")


def _edges_repr(pairs) -> str:
    """((1, 1), (2, 2)) -> '(1, 2)'; asymmetric pairs as they are."""
    (top, bottom), (left, right) = pairs
    if top == bottom and left == right:
        return f"{(top, left)}"
    return f"{pairs}"


def _edges_config(pairs) -> list:
    return [list(pairs[0]), list(pairs[1])]


@register_layer
class UpSampling2D(Module):
    """Upsampling by integer factors ``size`` (s or (s_h, s_w)): (N, H, W, C) ->
    (N, s_h H, s_w W, C), every channel separately.

    ``interpolation='nearest'`` repeats each pixel as an s_h x s_w block;
    ``'bilinear'`` interpolates linearly along H and W with half-pixel centres (Keras's
    UpSampling2D(interpolation='bilinear'), PyTorch's ``Upsample(mode='bilinear',
    align_corners=False)``). See :func:`lamina.functional.upsample2d` for the formulas.
    """

    def __init__(self, size=2, interpolation: str = "nearest", name: str | None = None):
        super().__init__(name=name)
        self.size = scale_pair(size, "UpSampling2D size")
        if not isinstance(interpolation, str) or interpolation.lower() not in INTERPOLATIONS:
            raise ValueError(f"UpSampling2D: interpolation must be one of {list(INTERPOLATIONS)}, "
                             f"got {interpolation!r}")
        self.interpolation = interpolation.lower()

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_batch(self, x)
        return upsample2d(x, self.size, self.interpolation)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        sh, sw = self.size
        return (n, None if h is None else h * sh, None if w is None else w * sw, c)

    def get_config(self) -> dict:
        return {"size": list(self.size), "interpolation": self.interpolation, "name": self.name}

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation!r}"


@register_layer
class ZeroPadding2D(Module):
    """Rows and columns of zeros around each image: ``padding`` p (every side), (p_h, p_w)
    (p_h rows at the top and at the bottom, p_w columns left and right) or
    ((top, bottom), (left, right)). (N, H, W, C) -> (N, top + H + bottom, left + W + right, C).
    """

    def __init__(self, padding=1, name: str | None = None):
        super().__init__(name=name)
        self.padding = edge_pairs(padding, "ZeroPadding2D padding")

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_batch(self, x)
        return zero_pad2d(x, self.padding)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        (top, bottom), (left, right) = self.padding
        return (n, None if h is None else top + h + bottom, None if w is None else left + w + right, c)

    def get_config(self) -> dict:
        return {"padding": _edges_config(self.padding), "name": self.name}

    def extra_repr(self) -> str:
        return f"padding={_edges_repr(self.padding)}"


@register_layer
class Cropping2D(Module):
    """Rows and columns removed at the edges of each image: ``cropping`` c (every side),
    (c_h, c_w) or ((top, bottom), (left, right)). (N, H, W, C) ->
    (N, H - top - bottom, W - left - right, C); at least one row and one column must remain.
    """

    def __init__(self, cropping=0, name: str | None = None):
        super().__init__(name=name)
        self.cropping = edge_pairs(cropping, "Cropping2D cropping")

    def _output_hw(self, shape) -> tuple[int | None, int | None]:
        (top, bottom), (left, right) = self.cropping
        h, w = shape[1], shape[2]
        if (h is not None and top + bottom >= h) or (w is not None and left + right >= w):
            raise ShapeError(f"{self._label()}: cropping {self.cropping} is larger than the input of shape "
                             f"{tuple(shape)}; expected a height above {top + bottom} and a width above "
                             f"{left + right}")
        return (None if h is None else h - top - bottom, None if w is None else w - left - right)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_batch(self, x)
        self._output_hw(x.shape)
        return crop2d(x, self.cropping)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        return (shape[0], *self._output_hw(shape), shape[3])

    def get_config(self) -> dict:
        return {"cropping": _edges_config(self.cropping), "name": self.name}

    def extra_repr(self) -> str:
        return f"cropping={_edges_repr(self.cropping)}"
