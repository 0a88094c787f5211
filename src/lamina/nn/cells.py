"""Recurrent cells (course notes, Recurrent Neural Networks): one time step of a simple RNN,
a GRU or an LSTM as a module, the building block of hand-written loops over time (a decoder
that feeds back its own output, an attention RNN), like PyTorch's ``RNNCell``, ``GRUCell``
and ``LSTMCell`` and Keras's cells.

A cell takes x^<t> (batch, features) and the previous state a^<t-1> (batch, units), samples
as rows, and returns a^<t>; the LSTM carries its memory c^<t> along:

    h = cell(x, h)            # SimpleRNNCell, GRUCell
    h, c = cell(x, (h, c))    # LSTMCell

A state of None stands for zeros (the notes' a^<0> = 0, as in PyTorch). The weights are
created on the first call, for the feature count of that input.

A cell has the parameters of the matching layer of :mod:`lamina.nn.recurrent`: the same
names, layouts, gate order (GRU r, z, n; LSTM i, f, g, o) and initialisers, ``kernel``
(D, G H), ``recurrent_kernel`` (H, G H), ``bias`` and ``recurrent_bias`` (G H,), and the same
formulas (see those layers' docstrings). So a cell computes exactly one step of its layer:
calling it on x^<1>, ..., x^<T> in a Python loop gives the layer's states.
``Cell.from_layer(layer)`` makes a cell holding a copy of a built layer's weights (a built
cell also accepts the layer's ``state_dict`` in ``load_state_dict``: the keys are the same).

Each step is one node of the graph with its own backward: the fused sequence kernel of
:mod:`lamina.functional.recurrent` run on a sequence of one step.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.recurrent import SIMPLE_ACTIVATIONS, gru, lstm, simple_rnn
from lamina.functional.shape import expand_dims
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, describe, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.recurrent import GRU, LSTM, SimpleRNN, add_recurrent_weights

__all__ = ["GRUCell", "LSTMCell", "SimpleRNNCell"]

_EXPECTED = "(batch, features): one time step"
# the constructor arguments a cell shares with its layer (besides its own ``layer_options``)
_SHARED_OPTIONS = ("units", "kernel_init", "recurrent_init", "bias_init", "use_bias")


def _step_shape(input_shape) -> tuple | None:
    """The shape of x^<t> out of what ``build`` receives: x's shape alone, or, when the
    state was passed positionally too, the list [x's shape, the state's shape(s)]."""
    if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list)):
        return tuple(input_shape[0])
    return input_shape


class _Cell(Module):
    """What the three cells share: weights, checks of the input and state, configuration."""

    gates = 1
    state_names: tuple[str, ...] = ("h",)
    layer_class: type[Module] = Module
    layer_options: tuple[str, ...] = ()

    def __init__(self, units: int, kernel_init="xavier_uniform", recurrent_init="orthogonal", bias_init="zeros",
                 use_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, f"{type(self).__name__}: units")
        self.kernel_init = kernel_init
        self.recurrent_init = recurrent_init
        self.bias_init = bias_init
        self.use_bias = bool(use_bias)
        for spec in (kernel_init, recurrent_init, bias_init):
            initializers.get(spec)

    # -- weights -------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, _step_shape(input_shape), 2, _EXPECTED)
        d = shape[-1]
        if d is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        add_recurrent_weights(self, d)
        self.built = True

    @classmethod
    def from_layer(cls, layer: Module, name: str | None = None) -> _Cell:
        """A built cell with the options of the built recurrent ``layer`` (a SimpleRNN for a
        SimpleRNNCell, a GRU for a GRUCell, an LSTM for an LSTMCell) and a copy of its
        weights, each trainable as in the layer. The layer's sequence options
        (``return_sequences``, ``go_backwards``, ...) have no meaning for one step and are
        left out."""
        if not isinstance(layer, cls.layer_class):
            raise TypeError(f"{cls.__name__}.from_layer: expected a {cls.layer_class.__name__} layer, "
                            f"got {type(layer).__name__}")
        if not layer.built:
            raise ValueError(f"{cls.__name__}.from_layer: the {layer._label()} layer has no weights yet; build "
                             "it first (call it on an input or call build(input_shape))")
        config = layer.get_config()
        cell = cls(**{key: config[key] for key in (*_SHARED_OPTIONS, *cls.layer_options)}, name=name)
        for key, param in layer.named_parameters():
            cell.add_parameter(key, param.data.copy(), trainable=param.trainable)
        cell.built = True
        cell.build_input_shape = (None, layer.kernel.shape[0])
        return cell

    @property
    def input_features(self) -> int | None:
        return self.kernel.shape[0] if self.built else None

    def _weights(self) -> tuple:
        if self.use_bias:
            return self.kernel, self.recurrent_kernel, self.bias, self.recurrent_bias
        return self.kernel, self.recurrent_kernel, None, None

    # -- running -------------------------------------------------------------------------
    def forward(self, x, state=None):
        """One step: the new state(s) from x^<t> (batch, features) and ``state`` (see the
        module notes; None: zeros)."""
        x = as_tensor(x)
        d = self.kernel.shape[0]
        if x.ndim != 2 or x.shape[-1] != d:
            raise input_error(self, x, f"(batch, {d}): one time step, a 2-D batch with the {d} features the cell "
                                       "was built for")
        return self._step(expand_dims(x, 1), self._states(state, x))

    def _step(self, x_sequence: Tensor, states: list):
        """The new state(s) after the one-step sequence ``x_sequence`` (batch, 1, features)."""
        raise NotImplementedError

    def _states(self, state, x) -> list:
        """The previous states as tensors (None: zeros), checked against (batch, units)."""
        count = len(self.state_names)
        if state is None:
            return [None] * count
        given = list(state) if isinstance(state, (list, tuple)) else [state]
        if len(given) != count:
            form = ", ".join(self.state_names)
            raise ValueError(f"{self._label()}: the state must be ({form}), {count} array(s) or tensor(s) of shape "
                             f"(batch, units), or None for zeros; got {len(given)}")
        expected = (x.shape[0], self.units)
        states = []
        for name, s in zip(self.state_names, given):
            if s is not None:
                s = as_tensor(s)
                if tuple(s.shape) != expected:
                    raise ShapeError(f"{self._label()}: the state {name} has {describe(s)}; expected (batch, "
                                     f"units) = {expected} for an input of {describe(x)}")
            states.append(s)
        return states

    # -- description -----------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, _step_shape(input_shape), 2, _EXPECTED)
        if self.built and shape[-1] is not None and shape[-1] != self.kernel.shape[0]:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} features; the cell was built "
                             f"for {self.kernel.shape[0]}")
        state = (shape[0], self.units)
        return state if len(self.state_names) == 1 else [state] * len(self.state_names)

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: G H (D + H), the input and recurrence products of the step."""
        d = input_shapes[0][-1]
        return self.gates * self.units * (d + self.units)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "kernel_init": initializers.serialize(self.kernel_init),
            "recurrent_init": initializers.serialize(self.recurrent_init),
            "bias_init": initializers.serialize(self.bias_init),
            "use_bias": self.use_bias,
            "name": self.name,
        }

    def extra_repr(self) -> str:
        d = self.kernel.shape[0] if self.built else "?"
        return f"{d} -> {self.units}" + ("" if self.use_bias else ", use_bias=False")


@register_layer
class SimpleRNNCell(_Cell):
    """One step of :class:`~lamina.nn.SimpleRNN`: a^<t> = g(x^<t> W_ax + a^<t-1> W_aa + b),
    g = tanh (default) or relu; PyTorch's ``torch.nn.RNNCell(nonlinearity=...)``.
    ``h = cell(x, h)``."""

    default_name = "simple_rnn_cell"
    layer_class = SimpleRNN
    layer_options = ("activation",)

    def __init__(self, units: int, activation: str = "tanh", kernel_init="xavier_uniform",
                 recurrent_init="orthogonal", bias_init="zeros", use_bias: bool = True, name: str | None = None):
        super().__init__(units, kernel_init, recurrent_init, bias_init, use_bias, name)
        if activation not in SIMPLE_ACTIVATIONS:
            raise ValueError(f"SimpleRNNCell: activation must be one of {SIMPLE_ACTIVATIONS}, got {activation!r}")
        self.activation = activation

    def _step(self, x_sequence, states):
        _, h = simple_rnn(x_sequence, states[0], *self._weights(), activation=self.activation)
        return h

    def get_config(self) -> dict:
        config = super().get_config()
        config["activation"] = self.activation
        return config

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.activation == "tanh" else f", activation={self.activation!r}")


@register_layer
class GRUCell(_Cell):
    """One step of :class:`~lamina.nn.GRU`, PyTorch's ``torch.nn.GRUCell`` (the reset gate
    multiplies a^<t-1> W_hn + b'_n, as Keras's ``reset_after=True``):

        r = sigma(x W_xr + b_r + a^<t-1> W_hr + b'_r),   z = sigma(x W_xz + b_z + a^<t-1> W_hz + b'_z)
        n = tanh(x W_xn + b_n + r * (a^<t-1> W_hn + b'_n)),   a^<t> = (1 - z) * n + z * a^<t-1>

    The notes' update gate is Gamma_u = 1 - z and their candidate a~ is n. ``h = cell(x, h)``."""

    default_name = "gru_cell"
    gates = 3
    layer_class = GRU

    def _step(self, x_sequence, states):
        _, h = gru(x_sequence, states[0], *self._weights())
        return h


@register_layer
class LSTMCell(_Cell):
    """One step of :class:`~lamina.nn.LSTM`, PyTorch's ``torch.nn.LSTMCell`` (gates i, f, g, o):

        Gamma_u = sigma(x W_xi + a^<t-1> W_hi + b_i),   Gamma_f = sigma(x W_xf + a^<t-1> W_hf + b_f)
        c~ = tanh(x W_xg + a^<t-1> W_hg + b_g),         Gamma_o = sigma(x W_xo + a^<t-1> W_ho + b_o)
        c^<t> = Gamma_u c~ + Gamma_f c^<t-1>,            a^<t> = Gamma_o tanh(c^<t>)

    with b = ``bias`` + ``recurrent_bias``. ``h, c = cell(x, (h, c))``. ``unit_forget_bias=True``
    (the layer's default) starts the forget gate's ``bias`` at 1."""

    default_name = "lstm_cell"
    gates = 4
    state_names = ("h", "c")
    layer_class = LSTM
    layer_options = ("unit_forget_bias",)

    def __init__(self, units: int, kernel_init="xavier_uniform", recurrent_init="orthogonal", bias_init="zeros",
                 use_bias: bool = True, unit_forget_bias: bool = True, name: str | None = None):
        super().__init__(units, kernel_init, recurrent_init, bias_init, use_bias, name)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _step(self, x_sequence, states):
        _, h, c = lstm(x_sequence, states[0], states[1], *self._weights())
        return h, c

    def get_config(self) -> dict:
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config
