"""1-D convolution and pooling over sequences of shape (batch, steps, channels).

Sequences are channels-last, as Keras's Conv1D (PyTorch's Conv1d takes (N, C, L)). A
Conv1D layer holds K filters of (f, c_in / groups) as one weight tensor
(K, f, c_in / groups) and one bias per filter:

    v[n, t, k] = b[k] + sum_{i, c} xpad[n, t s + d i, c] w[k, i, c]

Output steps for L input steps, padding p, stride s, dilation d:
floor((L + 2p - d (f - 1) - 1) / s) + 1. 'valid' is p = 0; 'same' gives ceil(L / s) with
the extra step of an even kernel's padding on the right (TF/Keras); 'causal' pads
d (f - 1) zeros on the left only (WaveNet, Keras), so output t sees inputs t' <= t alone,
and also gives ceil(L / s) steps.

Everything runs on the 2-D kernels of :mod:`lamina.functional` with a height of one: a
sequence (N, L, C) is the image (N, 1, L, C) and the weight (K, f, c) the kernel
(K, 1, f, c), both reshaped views, so the layers share the 2-D convolution's and pooling's
forward and backward passes.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.unpool_nd import max_pool1d_with_indices
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.conv import grouped_input_channels, nd_conv_repr
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.pooling import average_options_config, average_options_repr, pool_output_length, set_average_options

__all__ = [
    "AvgPool1D", "Conv1D", "GlobalAvgPool1D", "GlobalMaxPool1D", "MaxPool1D", "conv1d_output_length",
]

_SEQUENCE = "a 3-D batch of sequences (batch, steps, channels)"
_SEQUENCE_SHAPE = "a 3-D shape (batch, steps, channels)"


def _one_int(value, what: str) -> int:
    """An int, or a sequence holding one int (Keras writes kernel_size=(3,))."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected an int, got {value!r}")
    return value


def _positive(value, what: str) -> int:
    return positive_int(_one_int(value, what), what)


def _sequence_padding(padding, what: str, causal: bool = True):
    """'valid' | 'same' | 'causal' (any case) | an int p >= 0 -> that string or p."""
    if isinstance(padding, str):
        key = padding.lower()
        allowed = ("valid", "same", "causal") if causal else ("valid",)
        if key not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{what}: padding must be {names} or an int, got {padding!r}")
        return key
    p = _one_int(padding, f"{what} padding")
    if p < 0:
        raise ValueError(f"{what}: padding must be non-negative, got {padding!r}")
    return p


def conv1d_output_length(n: int | None, f: int, s: int, padding, d: int = 1) -> int | None:
    """Output steps for ``n`` input steps: floor((n + 2p - d (f - 1) - 1) / s) + 1 for an int
    p ('valid': 0); ceil(n / s) for 'same' and 'causal'. None stays None."""
    if n is None:
        return None
    if padding in ("same", "causal"):
        return -(-n // s)
    p = 0 if padding == "valid" else padding
    return (n + 2 * p - d * (f - 1) - 1) // s + 1


def _check_sequence(layer: Module, x, channels: int | None = None) -> None:
    """A 3-D (batch, steps, channels) batch (with ``channels`` last, when given), or a
    ShapeError naming the layer, the input's shape and dtype and what was expected."""
    if x.ndim != 3:
        hint = ""
        if x.ndim == 2:
            hint = " (add a batch axis: x[None], or a channel axis: x[..., None])"
        elif x.ndim == 4:
            hint = " (for images use the 2-D layers)"
        raise input_error(layer, x, f"{_SEQUENCE}{hint}")
    if channels is not None and x.shape[-1] != channels:
        hint = ""
        if x.shape[1] == channels:
            hint = "; it looks like (batch, channels, steps), PyTorch's layout: transpose it with x.transpose(0, 2, 1)"
        raise input_error(layer, x, f"(batch, steps, channels) with {channels} channels on the last axis{hint}")


def _checked(layer: Module, x, channels: int | None = None) -> Tensor:
    """``x`` as a tensor, checked by :func:`_check_sequence` before any conversion (so that
    an error shows the dtype the caller passed)."""
    if not hasattr(x, "ndim"):
        x = as_tensor(x)
    _check_sequence(layer, x, channels)
    return as_tensor(x)


def _as_image(x: Tensor) -> Tensor:
    """(N, L, C) -> (N, 1, L, C), a view."""
    n, length, c = x.shape
    return F.reshape(x, (n, 1, length, c))


def _as_sequence(z: Tensor) -> Tensor:
    """(N, 1, L, C) -> (N, L, C), a view."""
    n, _, length, c = z.shape
    return F.reshape(z, (n, length, c))


# -- convolution -------------------------------------------------------------------------


@register_layer
class Conv1D(Module):
    """1-D convolution: K = ``filters`` filters of (f, c_in / groups) over (batch, steps,
    channels) sequences.

    ``weight``: (K, f, c_in / groups) (PyTorch's Conv1d weight is (K, c_in / groups, f):
    ``w.transpose(0, 2, 1)``); ``bias``: (K,). ``padding``: 'valid', 'same' (ceil(L / s)
    steps, the extra zero of an even kernel on the right), 'causal' (d (f - 1) zeros on the
    left: output t depends on inputs up to t only) or an int p (p zeros at both ends).
    ``dilation`` d spaces the taps d steps apart (receptive field d (f - 1) + 1; any
    stride, as PyTorch). ``groups`` splits the channels and the filters into independent
    convolutions (groups = c_in: depthwise). Defaults: He uniform weights
    (fan_in = f c_in / groups), zero biases. ``algorithm``: as :func:`lamina.functional.conv2d`.
    """

    def __init__(self, filters: int, kernel_size, stride=1, padding="valid", dilation=1, groups: int = 1,
                 activation=None, use_bias: bool = True, kernel_init="he_uniform", bias_init="zeros",
                 algorithm: str = "im2col", name: str | None = None):
        super().__init__(name=name)
        self.filters = _positive(filters, "Conv1D: filters")
        self.kernel_size = _positive(kernel_size, "Conv1D: kernel_size")
        self.stride = _positive(stride, "Conv1D: stride")
        self.dilation = _positive(dilation, "Conv1D: dilation")
        self.groups = _positive(groups, "Conv1D: groups")
        if self.filters % self.groups:
            raise ValueError(f"Conv1D: groups={self.groups} must divide filters={self.filters}")
        if algorithm not in ("im2col", "fft"):
            raise ValueError(f"Conv1D: algorithm must be 'im2col' or 'fft', got {algorithm!r}")
        self.padding = _sequence_padding(padding, "Conv1D")
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.algorithm = algorithm
        initializers.get(kernel_init)
        initializers.get(bias_init)

    @property
    def extent(self) -> int:
        """The steps one window covers: d (f - 1) + 1."""
        return self.dilation * (self.kernel_size - 1) + 1

    @property
    def in_channels(self) -> int:
        """c_in of the built layer."""
        return self.weight.shape[-1] * self.groups

    def _output_steps(self, shape) -> int | None:
        """Output steps for an input of ``shape``; a ShapeError when the window does not fit."""
        out = conv1d_output_length(shape[1], self.kernel_size, self.stride, self.padding, self.dilation)
        if out is not None and out < 1:
            kernel = f"kernel of {self.extent} steps"
            if self.dilation != 1:
                kernel += f" ({self.kernel_size} taps dilated by {self.dilation})"
            raise ShapeError(
                f"{self._label()}: the {kernel} is longer than the padded input (input shape {tuple(shape)}, "
                f"padding {self.padding!r}); expected at least {self.extent} steps with the padding"
            )
        return out

    def __call__(self, *inputs, **kwargs):
        if not self.built and inputs:
            # checked before the lazy build, which sees only the shape, so that the error
            # names the input's dtype too
            inputs = (_checked(self, inputs[0]),) + inputs[1:]
        return super().__call__(*inputs, **kwargs)

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 3, _SEQUENCE_SHAPE)
        c_in = grouped_input_channels(self, shape)
        self._output_steps(shape)
        w_shape = (self.filters, self.kernel_size, c_in // self.groups)
        initializers.add_weight_and_bias(self, w_shape, self.filters)

    def forward(self, x) -> Tensor:
        return self.apply_weights(x, self.weight)

    def apply_weights(self, x, weight, activate: bool = True) -> Tensor:
        """The layer's computation with ``weight`` (K, f, c_in / groups) in place of its own
        (:class:`lamina.nn.DropConnect`); ``activate=False`` leaves out the activation."""
        x = _checked(self, x, self.in_channels)
        self._output_steps(x.shape)
        k, f, cg = weight.shape
        w = F.reshape(weight, (k, 1, f, cg))
        b = self.bias if self.use_bias else None
        if self.padding == "causal":                 # d (f - 1) zeros on the left only
            padding = ((0, 0), (self.extent - 1, 0))
        else:
            padding = self.padding if isinstance(self.padding, str) else (0, self.padding)
        z = F.conv2d(_as_image(x), w, b, stride=(1, self.stride), padding=padding, groups=self.groups,
                   algorithm=self.algorithm, dilation=(1, self.dilation))
        z = _as_sequence(z)
        return activate_fresh(self.activation, z) if self.activation is not None and activate else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 3, _SEQUENCE_SHAPE)
        c = shape[-1]
        if self.built and c is not None and c != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {c} channels; the layer was built for "
                             f"(batch, steps, channels) with {self.in_channels} channels")
        return (shape[0], self._output_steps(shape), self.filters)

    def macs(self, input_shapes, output_shapes) -> int:
        """L_out K f c_in / groups per sample (the bias additions are not counted)."""
        if not input_shapes or not output_shapes:
            return 0
        (_, c_in), (steps, k) = input_shapes[0], output_shapes[0]
        return steps * k * self.kernel_size * (c_in // self.groups)

    def get_config(self) -> dict:
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "activation": activation_config(self),
            "use_bias": self.use_bias,
            "kernel_init": initializers.serialize(self.kernel_init),
            "bias_init": initializers.serialize(self.bias_init),
            "algorithm": self.algorithm,
            "name": self.name,
        }

    def extra_repr(self) -> str:
        return nd_conv_repr(self, 1)


# -- pooling -----------------------------------------------------------------------------


class _Pool1D(Module):
    """A window of ``pool_size`` steps slid with ``stride`` (default: the pool size) along
    the steps of each channel; ``padding`` steps (at most half the pool) at both ends."""

    _kernel_name = ""

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, name: str | None = None):
        super().__init__(name=name)
        what = type(self).__name__
        self.pool_size = _positive(pool_size, f"{what}: pool_size")
        self.stride = self.pool_size if stride is None else _positive(stride, f"{what}: stride")
        self.padding = _sequence_padding(padding, what, causal=False)
        if self.padding == "valid":
            self.padding = 0
        if 2 * self.padding > self.pool_size:
            raise ValueError(f"{what}: padding {self.padding} must be at most half the pool size {self.pool_size}")
        self.ceil_mode = bool(ceil_mode)

    def _output_steps(self, shape) -> int | None:
        n = shape[1]
        steps = pool_output_length(n, self.pool_size, self.stride, self.padding, self.ceil_mode)
        if steps == 0:
            least = self.pool_size - 2 * self.padding - (self.stride - 1 if self.ceil_mode else 0)
            raise ShapeError(f"{self._label()}: the pool of {self.pool_size} steps is longer than the input of "
                             f"shape {tuple(shape)} (padding {self.padding}); expected at least {least} steps")
        return steps

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 3, _SEQUENCE_SHAPE)
        return (shape[0], self._output_steps(shape), shape[2])

    def forward(self, x) -> Tensor:
        x = _checked(self, x)
        self._output_steps(x.shape)
        pool = getattr(F, self._kernel_name)
        z = pool(_as_image(x), (1, self.pool_size), stride=(1, self.stride), padding=(0, self.padding),
                 ceil_mode=self.ceil_mode)
        return _as_sequence(z)

    def macs(self, input_shapes, output_shapes) -> int:
        """L_out c f per sample, as the 2-D pools' h_out w_out c f_h f_w."""
        if not output_shapes:
            return 0
        steps, c = output_shapes[0]
        return steps * c * self.pool_size

    def get_config(self) -> dict:
        return {"pool_size": self.pool_size, "stride": self.stride, "padding": self.padding,
                "ceil_mode": self.ceil_mode, "name": self.name}

    def extra_repr(self) -> str:
        parts = [f"pool_size={self.pool_size}"]
        if self.stride != self.pool_size:
            parts.append(f"stride={self.stride}")
        if self.padding:
            parts.append(f"padding={self.padding}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return ", ".join(parts)


@register_layer
class MaxPool1D(_Pool1D):
    """Max pooling over steps: each output is the largest value of its window, per channel
    (padding counts as -inf); the gradient goes to that element (the first one on ties).
    With ``return_indices`` the layer returns (output, indices), the steps of the maxima that
    :class:`lamina.nn.MaxUnpool1D` takes."""

    _kernel_name = "max_pool2d"

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, return_indices: bool = False,
                 name: str | None = None):
        super().__init__(pool_size, stride, padding, ceil_mode, name=name)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        if not self.return_indices:
            return super().forward(x)
        x = _checked(self, x)
        self._output_steps(x.shape)
        return max_pool1d_with_indices(x, self.pool_size, self.stride, self.padding, self.ceil_mode)

    def get_config(self) -> dict:
        config = super().get_config()
        if self.return_indices:
            config["return_indices"] = True
        return config


@register_layer
class AvgPool1D(_Pool1D):
    """Average pooling over steps: each output is the mean of its window, per channel. As
    PyTorch's AvgPool1d, the zero padding counts in the window size unless
    ``count_include_pad=False``, and ``divisor_override`` d divides every window's sum by d
    instead."""

    _kernel_name = "avg_pool2d"

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None, name: str | None = None):
        super().__init__(pool_size, stride, padding, ceil_mode, name=name)
        set_average_options(self, count_include_pad, divisor_override)

    def forward(self, x) -> Tensor:
        x = _checked(self, x)
        self._output_steps(x.shape)
        z = F.avg_pool2d(_as_image(x), (1, self.pool_size), stride=(1, self.stride), padding=(0, self.padding),
                         ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                         divisor_override=self.divisor_override)
        return _as_sequence(z)

    def get_config(self) -> dict:
        return {**super().get_config(), **average_options_config(self)}

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *average_options_repr(self)])


class _GlobalPool1D(Module):
    """(N, L, C) -> (N, C): one window of all L steps per channel."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def _pool(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x) -> Tensor:
        x = _checked(self, x)
        if x.shape[1] == 0:
            raise input_error(self, x, f"{_SEQUENCE} with at least one step")
        return self._pool(x)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 3, _SEQUENCE_SHAPE)
        return (shape[0], shape[2])

    def macs(self, input_shapes, output_shapes) -> int:
        """L c per sample: one window of L steps per channel."""
        if not input_shapes:
            return 0
        steps, c = input_shapes[0]
        return steps * c

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class GlobalAvgPool1D(_GlobalPool1D):
    """The mean over the steps of each channel: (N, L, C) -> (N, C)."""

    def _pool(self, x: Tensor) -> Tensor:
        return F.global_avg_pool2d(_as_image(x))


@register_layer
class GlobalMaxPool1D(_GlobalPool1D):
    """The largest value over the steps of each channel: (N, L, C) -> (N, C); the gradient
    goes to that step (the first one on ties). The text CNN's max-over-time pooling."""

    def _pool(self, x: Tensor) -> Tensor:
        return F.max(x, axis=1)                   # an empty batch too: only the steps must be there
