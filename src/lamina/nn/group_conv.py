"""Group-equivariant convolution layers (G-CNNs, Cohen & Welling 2016) for the groups p4 (quarter
turns) and p4m (quarter turns and mirrors), on NHWC images and on group feature maps
(N, H, W, C, |G|) with the group axis last (|G| = 4 for p4, 8 for p4m).

* :class:`P4ConvZ2`, :class:`P4MConvZ2` lift an image: each of K filters (K, f, f, C) is applied in
  its |G| transformed versions T_g(w_k), giving (N, H', W', K, |G|).
* :class:`P4ConvP4`, :class:`P4MConvP4M` convolve a group map with filters (K, f, f, C, |G|): the
  filter for output element g is T_g(w_k) with its group axis permuted to g^-1 s.
* :class:`GroupPool` takes the max or mean over the group axis (a map only moved by the group),
  :class:`GroupBatchNorm` batch-normalises with statistics shared over the group axis.

Rotating (or mirroring) the input rotates every output map and permutes the group axis (see
:func:`lamina.functional.group_conv.group_action`); after :class:`GroupPool` and a global spatial
pool the features are invariant. The arithmetic is in :mod:`lamina.functional.group_conv`: one
gather builds the filter bank, then one :func:`lamina.functional.conv2d` runs. Weights start He
uniform with fan_in = f f C |G_in|; the bias (K,) is shared by the |G| maps of a filter, which
equivariance requires.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.group_conv import GROUP_ORDERS, group_conv2d, group_pool
from lamina.nn import init as initializers
from lamina.nn.conv import conv_output_length, normalize_padding
from lamina.nn.layer import compact, input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm

__all__ = ["GroupBatchNorm", "GroupPool", "P4ConvP4", "P4ConvZ2", "P4MConvP4M", "P4MConvZ2"]


class _GroupConv(Module):
    """What the four group convolutions share; subclasses set ``group`` and ``lifting``."""

    group = "p4"
    lifting = True

    def __init__(self, filters: int, kernel_size=3, stride=1, padding="valid", use_bias: bool = True,
                 kernel_init="he_uniform", bias_init="zeros", name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.filters = positive_int(filters, f"{who}: filters")
        fh, fw = pair(kernel_size, f"{who} kernel_size")
        if fh != fw:
            raise ValueError(f"{who}: kernel_size must be square (a quarter turn must map the kernel to "
                             f"itself), got {kernel_size!r}")
        self.kernel_size = positive_int(fh, f"{who}: kernel_size")
        self.stride = pair(stride, f"{who} stride")
        if min(self.stride) < 1:
            raise ValueError(f"{who}: stride must be positive, got {stride!r}")
        self.padding = normalize_padding(padding, who)
        self.use_bias = bool(use_bias)
        self.kernel_init, self.bias_init = kernel_init, bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)

    @property
    def group_order(self) -> int:
        """|G|: the length of the output's group axis."""
        return GROUP_ORDERS[self.group]

    def _expected(self, channels="C") -> str:
        if self.lifting:
            return f"an image batch (N, H, W, {channels})"
        return f"a {self.group} feature map (N, H, W, {channels}, {self.group_order})"

    def _hint(self, shape) -> str:
        """What to do with an input of the wrong rank or group."""
        lifting_layer, group_layer = ("P4ConvZ2", "P4ConvP4") if self.group == "p4" else ("P4MConvZ2", "P4MConvP4M")
        if self.lifting and len(shape) == 5:
            return f"; a group feature map goes through {group_layer}"
        if not self.lifting and len(shape) == 4:
            return f"; an image goes through {lifting_layer} first, which lifts it to the group"
        if not self.lifting and len(shape) == 5:
            other = {4: "p4 (P4ConvP4)", 8: "p4m (P4MConvP4M)"}.get(shape[4])
            if other is not None and shape[4] != self.group_order:
                return f"; a group axis of {shape[4]} is a map of {other}"
        return ""

    def _check_shape(self, shape) -> tuple:
        shape = tuple(shape)
        rank = 4 if self.lifting else 5
        if len(shape) != rank or (not self.lifting and shape[4] != self.group_order):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected "
                             f"{self._expected()}{self._hint(shape)}")
        f = self.kernel_size
        for axis in (0, 1):
            out = conv_output_length(shape[1 + axis], f, self.stride[axis], self.padding, axis)
            if out is not None and out < 1:
                raise ShapeError(f"{self._label()}: the {f}x{f} kernel is larger than the padded input (input "
                                 f"shape {shape}, padding {self.padding!r})")
        return shape

    @property
    def in_channels(self) -> int:
        """C of the built layer."""
        return self.weight.shape[3]

    def build(self, input_shape) -> None:
        shape = self._check_shape(input_shape)
        c = shape[3]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel axis (3) of {shape} must be known")
        f, k = self.kernel_size, self.filters
        g_in = 1 if self.lifting else self.group_order
        w_shape = (k, f, f, c) if self.lifting else (k, f, f, c, g_in)
        fan_in, fan_out = f * f * c * g_in, f * f * k * self.group_order
        dtype = backend.get_default_dtype()
        self.add_parameter("weight", initializers.get(self.kernel_init)(w_shape, fan_in, fan_out, dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.get(self.bias_init)((k,), fan_in, fan_out, dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._check_shape(x.shape)
        if x.shape[3] != self.in_channels:
            raise input_error(self, x, self._expected(self.in_channels))
        return group_conv2d(x, self.weight, self.bias if self.use_bias else None, self.group,
                            stride=compact(self.stride), padding=compact(self.padding))

    def compute_output_shape(self, input_shape):
        shape = self._check_shape(input_shape)
        if self.built and shape[3] is not None and shape[3] != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[3]} channels; the layer was built "
                             f"for {self._expected(self.in_channels)}")
        f = self.kernel_size
        out_h, out_w = (conv_output_length(shape[1 + a], f, self.stride[a], self.padding, a) for a in (0, 1))
        return (shape[0], out_h, out_w, self.filters, self.group_order)

    def get_config(self) -> dict:
        return {
            "filters": self.filters, "kernel_size": self.kernel_size, "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "use_bias": self.use_bias, "kernel_init": initializers.serialize(self.kernel_init),
            "bias_init": initializers.serialize(self.bias_init), "name": self.name,
        }

    def extra_repr(self) -> str:
        parts = [f"{self.filters}", f"kernel_size={self.kernel_size}"]
        if self.stride != (1, 1):
            parts.append(f"stride={self.stride}")
        if self.padding != "valid":
            parts.append(f"padding={self.padding!r}")
        return ", ".join(parts)


@register_layer
class P4ConvZ2(_GroupConv):
    """Lifting p4 convolution: (N, H, W, C) -> (N, H', W', K, 4), map r the image correlated with
    the filter turned by r quarter turns. ``weight`` (K, f, f, C), ``bias`` (K,)."""

    group, lifting = "p4", True


@register_layer
class P4ConvP4(_GroupConv):
    """p4 group convolution: (N, H, W, C, 4) -> (N, H', W', K, 4); the filter of output rotation r
    is the filter turned by r with its rotation axis shifted cyclically by r.
    ``weight`` (K, f, f, C, 4), ``bias`` (K,)."""

    group, lifting = "p4", False


@register_layer
class P4MConvZ2(_GroupConv):
    """Lifting p4m convolution: (N, H, W, C) -> (N, H', W', K, 8), map g = 4 m + r the image
    correlated with the filter turned by r then mirrored when m = 1. ``weight`` (K, f, f, C)."""

    group, lifting = "p4m", True


@register_layer
class P4MConvP4M(_GroupConv):
    """p4m group convolution: (N, H, W, C, 8) -> (N, H', W', K, 8); the filter of output element g
    is T_g of the filter with its group axis permuted to g^-1 s (the p4m composition).
    ``weight`` (K, f, f, C, 8), ``bias`` (K,)."""

    group, lifting = "p4m", False


@register_layer
class GroupPool(Module):
    """Max or mean over the group axis: (N, H, W, K, |G|) -> (N, H, W, K), features that a group
    element only moves in space (rotation-invariant pooling)."""

    def __init__(self, reduction: str = "max", name: str | None = None):
        super().__init__(name=name)
        if reduction not in ("max", "mean"):
            raise ValueError(f"GroupPool: reduction must be 'max' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 5:
            raise input_error(self, x, "a group feature map (N, H, W, K, |G|), the output of a group convolution")
        return group_pool(x, self.reduction)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 5:
            raise ShapeError(f"{self._label()}: input shape {shape}; expected a group feature map (N, H, W, K, |G|)")
        return shape[:4]

    def get_config(self) -> dict:
        return {"reduction": self.reduction, "name": self.name}

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


@register_layer
class GroupBatchNorm(BatchNorm):
    """Batch normalization of a group feature map (N, H, W, K, |G|) with one mean, variance, gamma
    and beta per filter k, taken over the batch, the pixels and the |G| group elements together,
    so that the layer commutes with the group (a per-(k, g) statistic would not)."""

    default_name = "group_batch_norm"

    def _check_group_map(self, shape) -> tuple:
        shape = tuple(shape)
        if len(shape) != 5:
            raise ShapeError(f"{self._label()}: input shape {shape}; expected a group feature map (N, H, W, K, |G|)")
        return shape

    def build(self, input_shape) -> None:
        n, h, w, k, g = self._check_group_map(input_shape)
        super().build((n, h, w, g, k))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 5:
            raise input_error(self, x, "a group feature map (N, H, W, K, |G|), the output of a group convolution")
        if x.shape[3] != self.num_features:
            raise input_error(self, x, f"a group feature map (N, H, W, {self.num_features}, |G|)")
        return super().forward(x.swapaxes(3, 4)).swapaxes(3, 4)

    def compute_output_shape(self, input_shape):
        shape = self._check_group_map(input_shape)
        if self.built and shape[3] is not None and shape[3] != self.num_features:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[3]} filters; the layer was built "
                             f"for K={self.num_features}")
        return shape
