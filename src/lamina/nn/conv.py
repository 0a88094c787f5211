"""Convolution layers on NHWC batches (course notes, Convolutional layer, MobileNet).

A Conv2D layer holds K filters of shape (f_h, f_w, c_in) as one weight tensor
(K, f_h, f_w, c_in / groups) and one bias per filter:

    a^[l] = g(conv(W^[l], a^[l-1]) + b^[l])

Output volume for an (h, w, c) input, padding p and stride s:
(floor((h + 2p - f_h) / s) + 1, floor((w + 2p - f_w) / s) + 1, K); 'valid' is p = 0 and
'same' gives ceil(h / s) x ceil(w / s) (the input size at stride 1). A dilation d spaces
the kernel's taps d pixels apart: f becomes d (f - 1) + 1 in those sizes (any stride).
Learned parameters: K (f_h f_w c_in / groups + 1), whatever the dilation.

The arithmetic lives in :func:`lamina.functional.conv2d` (imported when first needed);
these layers own the weights, the shape inference and the input checks.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.layer import check_shape_ndim, compact, input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Conv2D", "DepthwiseConv2D", "SeparableConv2D", "conv_output_length", "normalize_padding"]


def normalize_padding(padding, what: str):
    """'valid' | 'same' (any case) | int | (p_h, p_w) -> 'valid' | 'same' | (p_h, p_w)."""
    if isinstance(padding, str):
        key = padding.lower()
        if key not in ("valid", "same"):
            raise ValueError(f"{what}: padding must be 'valid', 'same', an int or a pair, got {padding!r}")
        return key
    ph, pw = pair(padding, what)
    if ph < 0 or pw < 0:
        raise ValueError(f"{what}: padding must be non-negative, got {padding!r}")
    return ph, pw


def conv_output_length(n: int | None, f: int, s: int, padding, axis: int = 0) -> int | None:
    """Output length along one spatial axis: floor((n + 2p - f) / s) + 1; 'same' -> ceil(n / s)."""
    if n is None:
        return None
    if padding == "same":
        return -(-n // s)
    p = 0 if padding == "valid" else padding[axis]
    return (n + 2 * p - f) // s + 1


def _conv2d_kernel():
    try:
        from lamina.functional import conv2d
    except ImportError:
        raise NotImplementedError(
            "lamina.functional.conv2d is not available in this version of lamina"
        ) from None
    return conv2d


def nhwc_shape(layer: Module, input_shape) -> tuple:
    """``input_shape`` as a tuple, checked to be 4-D (batch, height, width, channels)."""
    return check_shape_ndim(layer, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")


def check_window(layer: Module, shape) -> tuple[int | None, int | None]:
    """A convolution layer's output height and width for an input of ``shape``; a ShapeError
    when its kernel, of extent d (f - 1) + 1 along each axis with a dilation d, does not fit
    in the padded input."""
    extent = tuple((f - 1) * d + 1 for f, d in zip(layer.kernel_size, layer.dilation))
    kernel = f"{extent[0]}x{extent[1]} kernel"
    if layer.dilation != (1, 1):
        kernel += f" ({layer.kernel_size[0]}x{layer.kernel_size[1]} dilated by {layer.dilation})"
    outs = []
    for axis in (0, 1):
        out = conv_output_length(shape[1 + axis], extent[axis], layer.stride[axis], layer.padding, axis)
        if out is not None and out < 1:
            raise ShapeError(
                f"{layer._label()}: the {kernel} is larger than the padded input (input shape {tuple(shape)}, "
                f"padding {layer.padding!r}); expected a height and width of at least the kernel size"
            )
        outs.append(out)
    return outs[0], outs[1]


def check_nhwc_input(layer: Module, x, channels: int) -> None:
    """A 4-D NHWC batch with ``channels`` on the last axis, or a ShapeError saying so."""
    if x.ndim != 4:
        hint = " (add a batch axis: x[None])" if x.ndim == 3 else ""
        raise input_error(layer, x, f"a 4-D NHWC batch (batch, height, width, channels){hint}")
    if x.shape[-1] != channels:
        hint = ""
        if x.shape[1] == channels:
            hint = "; it looks like NCHW: transpose it with x.transpose(0, 2, 3, 1)"
        raise input_error(layer, x, f"NHWC with C={channels} channels on the last axis{hint}")


def conv_config(layer: Module) -> dict:
    """The constructor arguments every convolution layer shares, JSON-ready."""
    return {
        "kernel_size": list(layer.kernel_size),
        "stride": list(layer.stride),
        "padding": layer.padding if isinstance(layer.padding, str) else list(layer.padding),
        "dilation": list(layer.dilation),
        "use_bias": layer.use_bias,
        "activation": activation_config(layer),
        "kernel_init": initializers.serialize(layer.kernel_init),
        "bias_init": initializers.serialize(layer.bias_init),
        "algorithm": layer.algorithm,
        "name": layer.name,
    }


def conv_repr(layer: Module) -> str:
    """The hyperparameters every convolution layer shows: the kernel, then what differs from
    the defaults."""
    fh, fw = layer.kernel_size
    parts = [f"kernel_size=({fh}, {fw})"]
    if layer.stride != (1, 1):
        parts.append(f"stride={layer.stride}")
    if layer.padding != "valid":
        parts.append(f"padding={layer.padding!r}")
    if layer.dilation != (1, 1):
        parts.append(f"dilation={layer.dilation}")
    if isinstance(layer.activation_spec, str):
        parts.append(f"activation={layer.activation_spec!r}")
    return ", ".join(parts)


def nd_conv_repr(layer: Module, unit) -> str:
    """Conv1D's and Conv3D's hyperparameters: the filters and the kernel, then what differs
    from the defaults (``unit``: a stride or dilation of 1 in the layer's form, 1 or (1, 1, 1))."""
    parts = [f"{layer.filters}", f"kernel_size={layer.kernel_size}"]
    if layer.stride != unit:
        parts.append(f"stride={layer.stride}")
    if layer.padding != "valid":
        parts.append(f"padding={layer.padding!r}")
    if layer.dilation != unit:
        parts.append(f"dilation={layer.dilation}")
    if layer.groups != 1:
        parts.append(f"groups={layer.groups}")
    if isinstance(layer.activation_spec, str):
        parts.append(f"activation={layer.activation_spec!r}")
    return ", ".join(parts)


def grouped_input_channels(layer: Module, shape) -> int:
    """c_in, the last axis of the input shape ``shape``, for a layer with ``layer.groups``
    groups; a ShapeError when it is unknown or the groups do not divide it."""
    c_in = shape[-1]
    if c_in is None:
        raise ShapeError(f"{layer._label()}: the channel (last) axis of {shape} must be known")
    if c_in % layer.groups:
        raise ShapeError(f"{layer._label()}: groups={layer.groups} must divide the {c_in} input channels "
                         f"(input shape {shape})")
    return c_in


def _set_conv_options(layer: Module, kernel_size, stride, padding, use_bias, activation, kernel_init,
                      bias_init, algorithm, dilation) -> None:
    """Check and store the hyperparameters every convolution layer takes."""
    what = type(layer).__name__
    layer.kernel_size = pair(kernel_size, f"{what} kernel_size")
    layer.stride = pair(stride, f"{what} stride")
    layer.dilation = pair(dilation, f"{what} dilation")
    if min(layer.kernel_size) < 1 or min(layer.stride) < 1 or min(layer.dilation) < 1:
        raise ValueError(f"{what}: kernel_size, stride and dilation must be positive, got {kernel_size!r}, "
                         f"{stride!r}, {dilation!r}")
    layer.padding = normalize_padding(padding, what)
    layer.use_bias = bool(use_bias)
    layer.activation = get_activation(activation)
    layer.activation_spec = None if isinstance(layer.activation, Module) else activation
    layer.kernel_init = kernel_init
    layer.bias_init = bias_init
    layer.algorithm = algorithm
    initializers.get(kernel_init)
    initializers.get(bias_init)


class _Conv(Module):
    """What Conv2D and DepthwiseConv2D share: hyperparameters, checks, output shape."""

    # subclasses: the number of filters K and of groups for c_in input channels
    def _filters_for(self, c_in: int) -> int:
        raise NotImplementedError

    def _groups_for(self, c_in: int) -> int:
        raise NotImplementedError

    @property
    def in_channels(self) -> int:
        """c_in of the built layer."""
        raise NotImplementedError

    def build(self, input_shape) -> None:
        shape = nhwc_shape(self, input_shape)
        c_in = shape[-1]
        if c_in is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        groups = self._groups_for(c_in)
        filters = self._filters_for(c_in)
        if c_in % groups or filters % groups:
            raise ShapeError(
                f"{self._label()}: groups={groups} must divide both the {c_in} input channels "
                f"(input shape {shape}) and the {filters} filters"
            )
        check_window(self, shape)
        fh, fw = self.kernel_size
        w_shape = (filters, fh, fw, c_in // groups)
        initializers.add_weight_and_bias(self, w_shape, filters)

    def forward(self, x) -> Tensor:
        return self.apply_weights(x, self.weight)

    def apply_weights(self, x, weight, epilogue=None, activate: bool = True) -> Tensor:
        """The layer's computation with ``weight`` in place of its own (used by DropConnect);
        ``epilogue``: see :func:`lamina.functional.conv2d`; ``activate=False`` leaves out the
        layer's own activation (inference fusion, :mod:`lamina.nn.fusion`, applies it)."""
        x = as_tensor(x)
        c_in = self.in_channels
        check_nhwc_input(self, x, c_in)
        check_window(self, x.shape)
        conv2d = _conv2d_kernel()
        z = conv2d(x, weight, self.bias if self.use_bias else None, stride=compact(self.stride),
                   padding=compact(self.padding), groups=self._groups_for(c_in), algorithm=self.algorithm,
                   epilogue=epilogue, dilation=compact(self.dilation))
        return activate_fresh(self.activation, z) if self.activation is not None and activate else z

    def compute_output_shape(self, input_shape):
        shape = nhwc_shape(self, input_shape)
        c = shape[-1]
        if self.built and c is not None and c != self.in_channels:
            raise ShapeError(
                f"{self._label()}: input shape {shape} has {c} channels; the layer was built for "
                f"NHWC with C={self.in_channels}"
            )
        out_h, out_w = check_window(self, shape)
        return (shape[0], out_h, out_w, None if c is None else self._filters_for(c))

    def _common_config(self) -> dict:
        return conv_config(self)

    def extra_repr(self) -> str:
        return conv_repr(self)


@register_layer
class Conv2D(_Conv):
    """2-D convolution: K = ``filters`` filters of (f_h, f_w, c_in / groups) over NHWC inputs.

    ``weight``: (K, f_h, f_w, c_in / groups); ``bias``: (K,). ``groups`` splits the input
    channels and the filters into that many independent convolutions (AlexNet's two
    towers; groups = c_in is a depthwise convolution). ``dilation`` d spaces the taps d
    pixels apart (atrous convolution: a receptive field of d (f - 1) + 1 for f^2 weights;
    any stride). Defaults: He uniform weights (fan_in = f_h f_w c_in / groups), zero
    biases.
    """

    def __init__(self, filters: int, kernel_size, stride=1, padding="valid", use_bias: bool = True,
                 groups: int = 1, activation=None, kernel_init="he_uniform", bias_init="zeros",
                 algorithm: str = "im2col", dilation=1, name: str | None = None):
        super().__init__(name=name)
        positive_int(filters, "Conv2D: filters")
        positive_int(groups, "Conv2D: groups")
        if filters % groups:
            raise ValueError(f"Conv2D: groups={groups} must divide filters={filters}")
        self.filters = filters
        self.groups = groups
        _set_conv_options(self, kernel_size, stride, padding, use_bias, activation, kernel_init, bias_init,
                          algorithm, dilation)

    def _filters_for(self, c_in: int) -> int:
        return self.filters

    def _groups_for(self, c_in: int) -> int:
        return self.groups

    @property
    def in_channels(self) -> int:
        return self.weight.shape[-1] * self.groups

    def get_config(self) -> dict:
        return {"filters": self.filters, **self._common_config(), "groups": self.groups}

    def extra_repr(self) -> str:
        extra = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.filters}, {super().extra_repr()}{extra}"


@register_layer
class DepthwiseConv2D(_Conv):
    """Depthwise convolution (MobileNet's first stage): each input channel is convolved
    with its own ``depth_multiplier`` filters of (f_h, f_w, 1), i.e. a Conv2D with
    groups = c_in and K = c_in · depth_multiplier; output channel c·m + j comes from input
    channel c. ``weight``: (c_in · m, f_h, f_w, 1)."""

    def __init__(self, kernel_size, depth_multiplier: int = 1, stride=1, padding="valid",
                 use_bias: bool = True, activation=None, kernel_init="he_uniform", bias_init="zeros",
                 algorithm: str = "im2col", dilation=1, name: str | None = None):
        super().__init__(name=name)
        positive_int(depth_multiplier, "DepthwiseConv2D: depth_multiplier")
        self.depth_multiplier = depth_multiplier
        _set_conv_options(self, kernel_size, stride, padding, use_bias, activation, kernel_init, bias_init,
                          algorithm, dilation)

    def _filters_for(self, c_in: int) -> int:
        return c_in * self.depth_multiplier

    def _groups_for(self, c_in: int) -> int:
        return c_in

    @property
    def in_channels(self) -> int:
        return self.weight.shape[0] // self.depth_multiplier

    def get_config(self) -> dict:
        config = self._common_config()
        return {"kernel_size": config.pop("kernel_size"), "depth_multiplier": self.depth_multiplier, **config}

    def extra_repr(self) -> str:
        extra = f", depth_multiplier={self.depth_multiplier}" if self.depth_multiplier != 1 else ""
        return super().extra_repr() + extra


@register_layer
class SeparableConv2D(Module):
    """Depthwise separable convolution (MobileNet): a depthwise convolution (one (f_h, f_w)
    filter per input channel, ``depth_multiplier`` of them) followed by ``filters``
    pointwise 1x1 convolutions that mix the channels, then the bias and the activation.

    Parameters: ``depthwise_weight`` (c_in · m, f_h, f_w, 1), ``pointwise_weight``
    (K, 1, 1, c_in · m), ``bias`` (K,): c_in m f_h f_w + K c_in m + K learned values
    instead of K (f_h f_w c_in + 1) for a full convolution. Stride and padding apply to the
    depthwise stage. ``kernel_init`` initializes both weights.
    """

    def __init__(self, filters: int, kernel_size, depth_multiplier: int = 1, stride=1, padding="valid",
                 use_bias: bool = True, activation=None, kernel_init="he_uniform", bias_init="zeros",
                 algorithm: str = "im2col", dilation=1, name: str | None = None):
        super().__init__(name=name)
        positive_int(filters, "SeparableConv2D: filters")
        positive_int(depth_multiplier, "SeparableConv2D: depth_multiplier")
        self.filters = filters
        self.depth_multiplier = depth_multiplier
        _set_conv_options(self, kernel_size, stride, padding, use_bias, activation, kernel_init, bias_init,
                          algorithm, dilation)

    @property
    def in_channels(self) -> int:
        return self.depthwise_weight.shape[0] // self.depth_multiplier

    def build(self, input_shape) -> None:
        shape = nhwc_shape(self, input_shape)
        c_in = shape[-1]
        if c_in is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        check_window(self, shape)
        fh, fw = self.kernel_size
        mid = c_in * self.depth_multiplier
        dtype = backend.get_default_dtype()
        draw = initializers.get(self.kernel_init)
        dw_shape, pw_shape = (mid, fh, fw, 1), (self.filters, 1, 1, mid)
        self.add_parameter("depthwise_weight", draw(dw_shape, *initializers.fans(dw_shape), dtype))
        self.add_parameter("pointwise_weight", draw(pw_shape, *initializers.fans(pw_shape), dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.get(self.bias_init)((self.filters,), mid, self.filters, dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c_in = self.in_channels
        check_nhwc_input(self, x, c_in)
        check_window(self, x.shape)
        conv2d = _conv2d_kernel()
        mid = conv2d(x, self.depthwise_weight, None, stride=compact(self.stride), padding=compact(self.padding),
                     groups=c_in, algorithm=self.algorithm, dilation=compact(self.dilation))
        z = conv2d(mid, self.pointwise_weight, self.bias if self.use_bias else None, stride=1, padding=0,
                   groups=1, algorithm=self.algorithm)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = nhwc_shape(self, input_shape)
        if self.built and shape[-1] is not None and shape[-1] != self.in_channels:
            raise ShapeError(
                f"{self._label()}: input shape {shape} has {shape[-1]} channels; the layer was built for "
                f"NHWC with C={self.in_channels}"
            )
        out_h, out_w = check_window(self, shape)
        return (shape[0], out_h, out_w, self.filters)

    def get_config(self) -> dict:
        return {"filters": self.filters, "depth_multiplier": self.depth_multiplier, **conv_config(self)}

    def extra_repr(self) -> str:
        multiplier = f", depth_multiplier={self.depth_multiplier}" if self.depth_multiplier != 1 else ""
        return f"{self.filters}, {conv_repr(self)}{multiplier}"
