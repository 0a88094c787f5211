"""The candidate operations of a DARTS cell (Liu et al. 2019), on NHWC batches.

Every operation maps C channels to C channels; at ``stride=2`` (the edges leaving a
reduction cell's inputs) it halves the height and width, ceil(h / 2) x ceil(w / 2).

    none           o(x) = 0 (subsampled at stride 2)
    skip_connect   o(x) = x, or FactorizedReduce at stride 2
    max_pool_3x3   3x3 max pooling, padding 1
    avg_pool_3x3   3x3 average pooling, padding 1, padding not counted in the mean
    sep_conv_kxk   twice ReLU -> depthwise kxk -> pointwise 1x1 -> BN (the second at stride 1)
    dil_conv_kxk   ReLU -> depthwise kxk dilated by 2 -> pointwise 1x1 -> BN

The layers here take their channel counts up front and create their weights at once
(unlike the lazily built layers of :mod:`lamina.nn`): a search network must know its
weights, to keep them apart from its architecture parameters, before its first call.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm

__all__ = [
    "OPS", "PRIMITIVES", "AvgPoolExcludePad", "DilConv", "FactorizedReduce", "Identity", "MaxPool3x3",
    "NASConv", "NormalizedPool", "ReLUConvBN", "SepConv", "Zero", "make_operation",
]

PRIMITIVES = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)


def batch_norm(channels: int, affine: bool) -> BatchNorm:
    """A built BatchNorm over ``channels`` (momentum 0.9, PyTorch's 0.1)."""
    layer = BatchNorm(affine=affine)
    layer.build((None, channels))
    return layer


class NASConv(Module):
    """A bias-free convolution with its weight (K, f, f, c_in / groups) made at once
    (He normal), any stride with any dilation."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1):
        super().__init__()
        if c_in % groups or c_out % groups:
            raise ShapeError(f"NASConv: groups={groups} must divide c_in={c_in} and c_out={c_out}")
        self.c_in, self.c_out, self.kernel_size = c_in, c_out, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        shape = (c_out, kernel_size, kernel_size, c_in // groups)
        fan_in = kernel_size * kernel_size * (c_in // groups)
        self.add_parameter("weight", initializers.he_normal(shape, fan_in, None, backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        return F.conv2d(x, self.weight, None, stride=self.stride, padding=self.padding, groups=self.groups,
                        dilation=self.dilation)


class ReLUConvBN(Module):
    """ReLU -> kxk convolution -> batch norm (DARTS's preprocessing of a cell's inputs)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.conv = NASConv(c_in, c_out, kernel_size, stride, padding)
        self.bn = batch_norm(c_out, affine)
        self.built = True

    def forward(self, x) -> Tensor:
        return self.bn(self.conv(F.relu(as_tensor(x))))


class DilConv(Module):
    """ReLU -> depthwise kxk convolution dilated by d -> pointwise 1x1 -> batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.depthwise = NASConv(c_in, c_in, kernel_size, stride, padding, dilation, groups=c_in)
        self.pointwise = NASConv(c_in, c_out, 1)
        self.bn = batch_norm(c_out, affine)
        self.built = True

    def forward(self, x) -> Tensor:
        return self.bn(self.pointwise(self.depthwise(F.relu(as_tensor(x)))))


class SepConv(Module):
    """Two stacked separable convolutions: DilConv(c_in, c_in, stride) then DilConv(c_in,
    c_out, 1), both without dilation."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.first = DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine)
        self.second = DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine)
        self.built = True

    def forward(self, x) -> Tensor:
        return self.second(self.first(x))


class Identity(Module):
    def __init__(self):
        super().__init__()
        self.built = True

    def forward(self, x) -> Tensor:
        return as_tensor(x)


class Zero(Module):
    """o(x) = 0, of x's shape at stride 1 and of the subsampled shape at stride 2."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if self.stride != 1:
            x = x[:, ::self.stride, ::self.stride, :]
        return x * 0.0


class FactorizedReduce(Module):
    """Halves height and width without losing every other pixel: ReLU, then two 1x1
    convolutions at stride 2, one on x and one on x shifted by a pixel down and right,
    each giving c_out / 2 channels, concatenated and batch-normalised. The shifted copy is
    padded by a zero row and column at the bottom/right, so odd sizes give ceil(h / 2) in both
    halves (for even sizes the padding is never read)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce: c_out must be even (two halves), got {c_out}")
        self.conv_even = NASConv(c_in, c_out // 2, 1, stride=2)
        self.conv_odd = NASConv(c_in, c_out - c_out // 2, 1, stride=2)
        self.bn = batch_norm(c_out, affine)
        self.built = True

    def forward(self, x) -> Tensor:
        x = F.relu(as_tensor(x))
        shifted = F.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
        return self.bn(F.concat([self.conv_even(x), self.conv_odd(shifted)], axis=-1))


class MaxPool3x3(Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.built = True

    def forward(self, x) -> Tensor:
        return F.max_pool2d(as_tensor(x), 3, stride=self.stride, padding=1)


class AvgPoolExcludePad(Module):
    """3x3 average pooling, padding 1, each mean over the window's pixels inside the image
    (PyTorch's ``count_include_pad=False``)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.built = True

    def forward(self, x) -> Tensor:
        return F.avg_pool2d(as_tensor(x), 3, stride=self.stride, padding=1, count_include_pad=False)


class NormalizedPool(Module):
    """A pooling candidate followed by a parameter-free batch norm (the search cell's)."""

    def __init__(self, pool: Module, channels: int):
        super().__init__()
        self.pool = pool
        self.bn = batch_norm(channels, affine=False)
        self.built = True

    def forward(self, x) -> Tensor:
        return self.bn(self.pool(x))


OPS: dict[str, Callable[[int, int, bool], Module]] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: MaxPool3x3(stride),
    "avg_pool_3x3": lambda c, stride, affine: AvgPoolExcludePad(stride),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}


def make_operation(name: str, channels: int, stride: int, affine: bool = True, search: bool = False) -> Module:
    """The candidate ``name`` on ``channels`` channels; ``search=True`` adds DARTS's
    non-affine batch norm after the pooling operations (the search cell's MixedOp)."""
    if name not in OPS:
        raise ValueError(f"make_operation: unknown operation {name!r}; expected one of {', '.join(PRIMITIVES)}")
    if stride not in (1, 2):
        raise ValueError(f"make_operation: stride must be 1 or 2, got {stride!r}")
    op = OPS[name](channels, stride, affine)
    if search and "pool" in name:
        # a parameter-free batch norm brings the pooled scale in line with the other candidates'
        op = NormalizedPool(op, channels)
    return op
