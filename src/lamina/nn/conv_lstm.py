"""ConvLSTM2D: an LSTM whose matrix products are convolutions, over sequences of images
(Shi et al. 2015, without peepholes), with Keras's arguments.

The input is a batch of sequences of NHWC frames, (batch, time, height, width, channels). At
each step (course notes, LSTM, with ``*`` a convolution and K = ``filters``):

    z^<t> = x^<t> * W + a^<t-1> * U + b                (4K channels: the blocks i, f, c~, o)
    c^<t> = Gamma_u c~ + Gamma_f c^<t-1>,   a^<t> = Gamma_o g(c^<t>)

with Gamma = sigma(z) for the three gates, c~ = g(z_c), g = ``activation``, sigma =
``recurrent_activation``. W uses the layer's ``stride`` and ``padding``; U always stride 1
and 'same' padding, so the states a^<t> and c^<t> are (batch, h', w', K) with (h', w') the
output size of a Conv2D of the same kernel, stride and padding. The arithmetic is
:func:`lamina.functional.conv_lstm.conv_lstm`: the input convolution of all T frames at
once, then the recurrence as one node.

The output is a^<T> (batch, h', w', K), or every a^<t> (batch, time, h', w', K) with
``return_sequences=True``; ``return_state=True`` returns ``[output, a^<T>, c^<T>]``.
``go_backwards=True`` reads the frames from the last to the first (the output sequence then
follows the reading order, as in Keras). An initial state is given as
``layer(x, initial_state=(a0, c0))``, zeros otherwise.

Weights, in lamina's NHWC convolution layout, and Keras's ``ConvLSTM2D`` (same gate order
i, f, c, o):

* ``kernel`` (4K, f_h, f_w, C) = Keras ``kernel`` (f_h, f_w, C, 4K).transpose(3, 0, 1, 2);
* ``recurrent_kernel`` (4K, f_h, f_w, K) = Keras ``recurrent_kernel`` (f_h, f_w, K, 4K)
  .transpose(3, 0, 1, 2);
* ``bias`` (4K,) = Keras ``bias`` (one bias, as Keras; no separate recurrent bias).

Going back to Keras is ``.transpose(1, 2, 3, 0)``. Row k of ``kernel`` is the filter of output
channel k, so ``kernel[:K]`` is the input gate's filters, ``kernel[K:2K]`` the forget gate's.
Defaults as Keras: Glorot-uniform ``kernel`` (fan_in = f_h f_w C, fan_out = f_h f_w 4K),
orthogonal ``recurrent_kernel`` (the 4K filters of f_h f_w K values orthonormal where
possible), zero ``bias`` with the forget gate's block at 1 (``unit_forget_bias``).

``dropout`` (Keras's, on the inputs): in training, each input value is zeroed with that
probability and the rest scaled by 1 / (1 - dropout); one mask per sequence, the same at
every step (variational dropout, Gal & Ghahramani), and the same for the four gates, as the
input convolution computes them together.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv_lstm import ACTIVATIONS, RECURRENT_ACTIVATIONS, conv_lstm
from lamina.nn import init as initializers
from lamina.nn.conv import conv_output_length
from lamina.nn.dropout import dropout_mask
from lamina.nn.layer import (
    check_shape_ndim,
    describe,
    dropout_rate,
    input_error,
    pair,
    positive_int,
    register_layer,
)
from lamina.nn.module import Module, as_tensor

__all__ = ["ConvLSTM2D"]

_EXPECTED = "a 5-D batch of sequences of NHWC frames (batch, time, height, width, channels)"


@register_layer
class ConvLSTM2D(Module):
    """A convolutional LSTM layer (see the module notes): K = ``filters`` filters of
    ``kernel_size`` for both the input and the recurrent convolution; ``stride`` and
    ``padding`` ('valid' or 'same', Keras's default 'valid') apply to the input convolution.
    ``activation``: 'tanh' or 'relu'; ``recurrent_activation``: 'sigmoid' or 'hard_sigmoid'
    (relu6(z + 3) / 6). Parameters ``kernel`` (4K, f_h, f_w, C), ``recurrent_kernel``
    (4K, f_h, f_w, K) and, with ``use_bias``, ``bias`` (4K,)."""

    default_name = "conv_lstm2d"

    def __init__(self, filters: int, kernel_size, stride=1, padding: str = "valid", activation: str = "tanh",
                 recurrent_activation: str = "sigmoid", use_bias: bool = True, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, unit_forget_bias: bool = True,
                 kernel_init="glorot_uniform", recurrent_init="orthogonal", bias_init="zeros",
                 dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        what = "ConvLSTM2D"
        self.filters = positive_int(filters, f"{what}: filters")
        self.kernel_size = pair(kernel_size, f"{what} kernel_size")
        self.stride = pair(stride, f"{what} stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{what}: kernel_size and stride must be positive, got {kernel_size!r} and {stride!r}")
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f"{what}: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding.lower()
        if activation not in ACTIVATIONS:
            raise ValueError(f"{what}: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if recurrent_activation not in RECURRENT_ACTIVATIONS:
            raise ValueError(f"{what}: recurrent_activation must be one of {RECURRENT_ACTIVATIONS}, "
                             f"got {recurrent_activation!r}")
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self.use_bias = bool(use_bias)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_init = kernel_init
        self.recurrent_init = recurrent_init
        self.bias_init = bias_init
        for spec in (kernel_init, recurrent_init, bias_init):
            initializers.get(spec)
        self.dropout = dropout_rate(dropout, what)

    # -- weights -------------------------------------------------------------------------
    @property
    def in_channels(self) -> int | None:
        """C of the built layer."""
        return self.kernel.shape[-1] if self.built else None

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 5, _EXPECTED)
        c = shape[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of the input shape {shape} must be known")
        self._output_hw(shape)
        k4, k = 4 * self.filters, self.filters
        fh, fw = self.kernel_size
        dtype = backend.get_default_dtype()
        for name, spec, shape_w in (("kernel", self.kernel_init, (k4, fh, fw, c)),
                                    ("recurrent_kernel", self.recurrent_init, (k4, fh, fw, k))):
            self.add_parameter(name, initializers.get(spec)(shape_w, *initializers.fans(shape_w), dtype))
        if self.use_bias:
            bias = initializers.get(self.bias_init)((k4,), k4, k4, dtype)
            if self.unit_forget_bias and not initializers.is_meta_array(bias):
                bias = bias.copy()
                bias[k:2 * k] = 1
            self.add_parameter("bias", bias)
        self.built = True

    def _output_hw(self, shape) -> tuple[int | None, int | None]:
        """(h', w') for an input of ``shape`` (batch, time, H, W, C); a ShapeError when the
        kernel does not fit in the padded frames."""
        outs = tuple(conv_output_length(n, f, s, self.padding)
                     for n, f, s in zip(shape[2:4], self.kernel_size, self.stride))
        if any(out is not None and out < 1 for out in outs):
            fh, fw = self.kernel_size
            raise ShapeError(f"{self._label()}: the {fh}x{fw} kernel is larger than the frames of the input of shape "
                             f"{tuple(shape)} (padding {self.padding!r}); expected frames of at least the kernel size")
        return outs

    # -- running -------------------------------------------------------------------------
    def forward(self, x, initial_state=None):
        x = as_tensor(x)
        c = self.in_channels
        if x.ndim != 5:
            raise input_error(self, x, _EXPECTED)
        if x.shape[-1] != c or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, height, width, {c}): sequences of at least one frame with the "
                                       f"{c} channels the layer was built for")
        ho, wo = self._output_hw(x.shape)
        h0, c0 = self._states(initial_state, x, (x.shape[0], ho, wo, self.filters))
        if self.training and self.dropout > 0:
            n, _, h, w, _ = x.shape
            x = x * Tensor._wrap(dropout_mask((n, 1, h, w, c), self.dropout, x.dtype))
        sequence, last, memory = conv_lstm(
            x, self.kernel, self.recurrent_kernel, self.bias if self.use_bias else None, h0, c0,
            stride=self.stride, padding=self.padding, activation=self.activation,
            recurrent_activation=self.recurrent_activation, go_backwards=self.go_backwards)
        output = sequence if self.return_sequences else last
        return [output, last, memory] if self.return_state else output

    def _states(self, initial_state, x, expected) -> tuple:
        """(a0, c0) as tensors or None (zeros), checked against (batch, h', w', K)."""
        if initial_state is None:
            return None, None
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
            count = len(initial_state) if isinstance(initial_state, (list, tuple)) else 1
            raise ValueError(f"{self._label()}: initial_state must hold 2 states (h0, c0), got {count}")
        states = []
        for name, s in zip(("h0", "c0"), initial_state):
            if s is not None:
                s = as_tensor(s)
                if tuple(s.shape) != expected:
                    raise ShapeError(f"{self._label()}: the initial state {name} has {describe(s)}; expected "
                                     f"(batch, h', w', filters) = {expected} for an input of {describe(x)}")
            states.append(s)
        return tuple(states)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 5, _EXPECTED)
        c = shape[-1]
        if self.built and c is not None and c != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {c} channels; the layer was built for "
                             f"{self.in_channels}")
        ho, wo = self._output_hw(shape)
        final = (shape[0], ho, wo, self.filters)
        output = (shape[0], shape[1], ho, wo, self.filters) if self.return_sequences else final
        return [output, final, final] if self.return_state else output

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: T h' w' 4K f_h f_w (C + K), the input and recurrent convolutions of the
        T steps."""
        steps, h, w, c = input_shapes[0]
        ho, wo = self._output_hw((None, steps, h, w, c))
        fh, fw = self.kernel_size
        return steps * ho * wo * 4 * self.filters * fh * fw * (c + self.filters)

    # -- description -----------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
            "use_bias": self.use_bias,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_init": initializers.serialize(self.kernel_init),
            "recurrent_init": initializers.serialize(self.recurrent_init),
            "bias_init": initializers.serialize(self.bias_init),
            "dropout": self.dropout,
            "name": self.name,
        }

    def extra_repr(self) -> str:
        fh, fw = self.kernel_size
        parts = [f"{self.filters}", f"kernel_size=({fh}, {fw})"]
        if self.stride != (1, 1):
            parts.append(f"stride={self.stride}")
        if self.padding != "valid":
            parts.append(f"padding={self.padding!r}")
        for flag in ("return_sequences", "return_state", "go_backwards"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return ", ".join(parts)
