"""Recurrent layers (course notes, Recurrent Neural Networks): SimpleRNN, GRU, LSTM and the
Bidirectional wrapper, with Keras's arguments and PyTorch's weights.

Inputs are batch first, (N, T, D). Samples are rows, so one step of a simple RNN is

    a^<t> = g(x^<t> W_ax + a^<t-1> W_aa + b)

with W_ax the notes' matrix transposed. Each layer holds

* ``kernel`` (D, G H): W_ax, the G gate blocks side by side in PyTorch's order (GRU r, z, n;
  LSTM i, f, g, o); PyTorch's ``weight_ih_l0`` is its transpose;
* ``recurrent_kernel`` (H, G H): W_aa, PyTorch's ``weight_hh_l0`` transposed;
* ``bias`` and ``recurrent_bias`` (G H,): PyTorch's ``bias_ih_l0`` and ``bias_hh_l0`` (the
  sum b acts in every gate but the GRU's candidate, where ``recurrent_bias`` sits inside the
  reset gate's product). ``use_bias=False`` leaves both out.

So weights copy 1:1 between a lamina layer and ``torch.nn.RNN/GRU/LSTM(batch_first=True)``
after a transpose. The whole sequence runs as one node (:mod:`lamina.functional.recurrent`).

The output is the last state a^<T> (N, H), or every state (N, T, H) with
``return_sequences=True``; ``return_state=True`` returns ``[output, a^<T>]`` (LSTM:
``[output, a^<T>, c^<T>]``). ``go_backwards=True`` reads the sequence from its end (the
output sequence then follows that reading order, as in Keras). An initial state is given as
``layer(x, initial_state=a0)`` (LSTM: ``(a0, c0)``), zeros otherwise.

``stateful=True`` (Keras's): each call starts from the final states of the previous call
(for the same batch size; zeros after :meth:`~_Recurrent.reset_states`), so a long sequence
can be fed in pieces: truncated backpropagation through time, or generation one step at a
time. The carried states are detached from the graph; :meth:`~_Recurrent.reorder_states` keeps
and reorders their rows (beam search's surviving hypotheses). Unidirectional layers are
``streamable``: feeding a sequence step by step with carried states gives the same outputs
as one call on the whole sequence.

Variable-length sequences, padded at the end: ``layer(x, lengths=lengths)`` with ``lengths``
an integer array (N,), 1 <= lengths[i] <= T. Sample i is read for its first lengths[i]
steps (Keras's masking; PyTorch's ``pack_padded_sequence``): the final state is that of its
last real step and the output sequence holds zeros at the padded steps (as PyTorch's
``pad_packed_sequence`` gives). With ``go_backwards=True`` each sequence is read from its
own last real step down to its first, and the padded steps stay at the end. Bidirectional
gives the lengths to both directions. The lengths come from the data, e.g. for word ids
padded with ``pad_id``: ``lengths = (ids != pad_id).sum(axis=1)``. A general mask (left
padding, holes) is ``layer(x, mask=mask)``, mask (N, T) booleans True at the steps to read.

Packed sequences (PyTorch's ``torch.nn.utils.rnn``, :mod:`lamina.nn.packed_sequence`): a
:class:`~lamina.nn.packed_sequence.PackedSequence` input is run as its padded batch with its
lengths (the same as ``layer(padded, lengths=lengths)``), and every output sequence comes back
packed like the input (same ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``), as
PyTorch's layers return it. The rest keeps the layer's own form: without
``return_sequences`` the output is the final state (N, H); the final states of
``return_state`` and an ``initial_state`` are in the batch's original order (PyTorch's h_n and
hx too). So ``LSTM(H, return_sequences=True, return_state=True)(packed)`` gives
``[packed output, a^<T>, c^<T>]`` where PyTorch gives ``(packed output, (h_n, c_n))``. With
``go_backwards`` the packed output holds each sequence's outputs in its reading order (from
its last step). ``lengths`` and ``mask`` are refused with a packed input (it has its lengths).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import shape as shape_ops
from lamina.functional.recurrent import (
    SIMPLE_ACTIVATIONS,
    check_lengths,
    gru,
    lstm,
    reverse_padded,
    simple_rnn,
    skipped_steps,
)
from lamina.nn import init as initializers
from lamina.nn.cache_rows import carried_state_rows
from lamina.nn.layer import (
    check_shape_ndim,
    describe,
    input_error,
    layer_from_config,
    layer_to_config,
    positive_int,
    register_layer,
)
from lamina.nn.module import Module, as_tensor, build_on_first_call
from lamina.nn.packed_sequence import PackedSequence, pack_as, pad_packed_sequence

__all__ = ["GRU", "LSTM", "Bidirectional", "SimpleRNN"]

_EXPECTED = "(batch, time, features)"


def add_recurrent_weights(module: Module, d: int) -> None:
    """The weights of a recurrent layer or cell (``units`` H, ``gates`` G) for d input
    features, from its initialisers: ``kernel`` (d, G H), ``recurrent_kernel`` (H, G H) and,
    with ``use_bias``, ``bias`` and ``recurrent_bias`` (G H,); with an LSTM's
    ``unit_forget_bias`` the forget gate's bias starts at 1."""
    h, gh = module.units, module.gates * module.units
    dtype = backend.get_default_dtype()
    module.add_parameter("kernel", initializers.get(module.kernel_init)((d, gh), d, gh, dtype))
    module.add_parameter("recurrent_kernel", initializers.get(module.recurrent_init)((h, gh), h, gh, dtype))
    if not module.use_bias:
        return
    bias = initializers.get(module.bias_init)((gh,), d, gh, dtype)
    if getattr(module, "unit_forget_bias", False) and not initializers.is_meta_array(bias):
        bias = bias.copy()
        bias[h:2 * h] = 1
    module.add_parameter("bias", bias)
    module.add_parameter("recurrent_bias", initializers.zeros((gh,), h, gh, dtype))


def _unpacked(who: str, packed: PackedSequence, lengths, mask) -> tuple:
    """The padded batch (N, T, F) and the lengths (N,) of a packed input."""
    if lengths is not None or mask is not None:
        raise ValueError(f"{who}: a PackedSequence input carries its own lengths; got lengths= or mask= with it")
    _check_packed_data(who, packed)
    return pad_packed_sequence(packed, batch_first=True)


def _check_packed_data(who: str, packed: PackedSequence) -> None:
    if packed.data.ndim != 2:
        raise ShapeError(f"{who}: a packed input must hold (sum of lengths, features) data, got data of shape "
                         f"{tuple(packed.data.shape)}")


def _packed_outputs(outputs, template: PackedSequence, sequences: int):
    """``outputs`` with its first ``sequences`` items (the output sequences, batch-first padded)
    packed like ``template``; the final states stay as they are."""
    if isinstance(outputs, list):
        return [pack_as(o, template) if i < sequences else o for i, o in enumerate(outputs)]
    return pack_as(outputs, template) if sequences else outputs


def _build_for_packed(module: Module, inputs: tuple) -> None:
    """The lazy build of a recurrent layer first called on a PackedSequence: from the shape
    (N, T, F) of the padded batch it stands for, once its data is known to be (sum of lengths, F)."""
    if not module.built and inputs and isinstance(inputs[0], PackedSequence):
        _check_packed_data(module._label(), inputs[0])
        build_on_first_call(module, inputs[0].padded_shape)


class _Recurrent(Module):
    """What SimpleRNN, GRU and LSTM share: weights, checks, configuration."""

    gates = 1
    state_names: tuple[str, ...] = ("h0",)

    def __init__(self, units: int, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, kernel_init="xavier_uniform", recurrent_init="orthogonal",
                 bias_init="zeros", use_bias: bool = True, name: str | None = None, stateful: bool = False):
        super().__init__(name=name)
        positive_int(units, f"{type(self).__name__}: units")
        self.stateful = bool(stateful)
        self._carried: list | None = None
        self.units = units
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.use_bias = bool(use_bias)
        self.kernel_init = kernel_init
        self.recurrent_init = recurrent_init
        self.bias_init = bias_init
        for spec in (kernel_init, recurrent_init, bias_init):
            initializers.get(spec)

    # -- weights -------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 3, _EXPECTED)
        d = shape[-1]
        if d is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        add_recurrent_weights(self, d)
        self.built = True

    @property
    def input_features(self) -> int | None:
        return self.kernel.shape[0] if self.built else None

    # -- running -------------------------------------------------------------------------
    def __call__(self, *inputs, **kwargs):
        _build_for_packed(self, inputs)
        return super().__call__(*inputs, **kwargs)

    def forward(self, x, initial_state=None, lengths=None, mask=None):
        """``lengths``: None, or the number of real steps of each sequence, (N,) integers in
        [1, T] (see the module notes). ``mask``: None, or a boolean (N, T) array, True at the
        steps to read (a general mask, Keras's: a skipped step carries the state and outputs
        zeros); with ``go_backwards`` the mask is reversed with the sequence. ``x`` may be a
        PackedSequence: the output sequence is then packed the same way (see the module notes)."""
        if isinstance(x, PackedSequence):
            padded, lengths = _unpacked(self._label(), x, lengths, mask)
            outputs = self.forward(padded, initial_state, lengths=lengths)
            return _packed_outputs(outputs, x, int(self.return_sequences))
        x = as_tensor(x)
        d = self.kernel.shape[0]
        if x.ndim != 3 or x.shape[-1] != d or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {d}): a 3-D batch of sequences with at least one step "
                                       f"and the {d} features the layer was built for")
        if initial_state is None and self.stateful and self._carried is not None:
            initial_state = self._carried_states(x)
        states = self._states(initial_state, x)
        lengths = check_lengths(self._label(), lengths, tuple(x.shape))
        if mask is not None:
            mask = skipped_steps(self._label(), mask, tuple(x.shape), lengths)
            mask = None if mask is None else ~mask.T
        if self.go_backwards:
            x = x[:, ::-1] if lengths is None else reverse_padded(x, lengths)
            mask = None if mask is None else mask[:, ::-1]
        results = self._run(x, states, lengths, mask)
        sequence, finals = results[0], list(results[1:])
        if self.stateful:
            self._carried = [state.detach() for state in finals]
        output = sequence if self.return_sequences else finals[0]
        return [output, *finals] if self.return_state else output

    def _run(self, x, states, lengths, mask=None):
        raise NotImplementedError

    @property
    def streamable(self) -> bool:
        """Step t's output depends on steps 1..t only (not with ``go_backwards``)."""
        return not self.go_backwards

    def reset_states(self) -> None:
        """Forget the states a stateful layer carries: its next call starts from zeros."""
        self._carried = None

    def reorder_states(self, rows) -> None:
        """Keep the carried states of the rows ``rows`` (R,), in that order: row i becomes the
        old row ``rows[i]``, so that the next call continues R sequences (rows may repeat, as
        the parents of a beam's hypotheses do, or be left out). Refused for a layer that is not
        stateful; nothing to do before its first call."""
        index = carried_state_rows(self, rows, self._carried)
        if self._carried is None:
            return
        self._carried = [Tensor._wrap(state.data[index]) for state in self._carried]

    def _carried_states(self, x) -> list:
        batch = self._carried[0].shape[0]
        if x.shape[0] != batch:
            raise ShapeError(f"{self._label()}: stateful layer carries states for a batch of {batch}, got an input "
                             f"of {describe(x)}; call reset_states() before changing the batch size")
        return self._carried

    def _weights(self) -> tuple:
        if self.use_bias:
            return self.kernel, self.recurrent_kernel, self.bias, self.recurrent_bias
        return self.kernel, self.recurrent_kernel, None, None

    def _states(self, initial_state, x) -> list:
        """The initial states as tensors (None: zeros), checked against (N, H)."""
        count = len(self.state_names)
        if initial_state is None:
            return [None] * count
        if isinstance(initial_state, (list, tuple)):
            given = list(initial_state)
        else:
            given = [initial_state]
        if len(given) != count:
            raise ValueError(f"{self._label()}: initial_state must hold {count} state(s) "
                             f"({', '.join(self.state_names)}), got {len(given)}")
        expected = (x.shape[0], self.units)
        states = []
        for name, s in zip(self.state_names, given):
            if s is None:
                states.append(None)
                continue
            s = as_tensor(s)
            if tuple(s.shape) != expected:
                raise ShapeError(f"{self._label()}: the initial state {name} has {describe(s)}; expected (batch, "
                                 f"units) = {expected} for an input of {describe(x)}")
            states.append(s)
        return states

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: T G H (D + H), the input and recurrence products of the T steps."""
        steps, d = input_shapes[0]
        return steps * self.gates * self.units * (d + self.units)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 3, _EXPECTED)
        if self.built and shape[-1] is not None and shape[-1] != self.kernel.shape[0]:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} features; the layer was built "
                             f"for {self.kernel.shape[0]}")
        n, steps = shape[0], shape[1]
        final = (n, self.units)
        output = (n, steps, self.units) if self.return_sequences else final
        if self.return_state:
            return [output] + [final] * len(self.state_names)
        return output

    # -- description -----------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "units": self.units,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "kernel_init": initializers.serialize(self.kernel_init),
            "recurrent_init": initializers.serialize(self.recurrent_init),
            "bias_init": initializers.serialize(self.bias_init),
            "use_bias": self.use_bias,
            "name": self.name,
            "stateful": self.stateful,
        }

    def extra_repr(self) -> str:
        d = self.kernel.shape[0] if self.built else "?"
        flags = [f for f in ("return_sequences", "return_state", "go_backwards", "stateful") if getattr(self, f)]
        return f"{d} -> {self.units}" + "".join(f", {f}=True" for f in flags) + (
            "" if self.use_bias else ", use_bias=False")


@register_layer
class SimpleRNN(_Recurrent):
    """The plain recurrent layer: a^<t> = g(x^<t> W_ax + a^<t-1> W_aa + b), g = tanh (default)
    or relu; PyTorch's ``torch.nn.RNN(nonlinearity=...)``. Parameters ``kernel`` (D, H),
    ``recurrent_kernel`` (H, H), ``bias`` and ``recurrent_bias`` (H,); see the module notes."""

    default_name = "simple_rnn"

    def __init__(self, units: int, activation: str = "tanh", return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, kernel_init="xavier_uniform",
                 recurrent_init="orthogonal", bias_init="zeros", use_bias: bool = True, name: str | None = None,
                 stateful: bool = False):
        super().__init__(units, return_sequences, return_state, go_backwards, kernel_init, recurrent_init,
                         bias_init, use_bias, name, stateful)
        if activation not in SIMPLE_ACTIVATIONS:
            raise ValueError(f"SimpleRNN: activation must be one of {SIMPLE_ACTIVATIONS}, got {activation!r}")
        self.activation = activation

    def _run(self, x, states, lengths, mask=None):
        return simple_rnn(x, states[0], *self._weights(), activation=self.activation, lengths=lengths, mask=mask)

    def get_config(self) -> dict:
        config = super().get_config()
        config["activation"] = self.activation
        return config

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.activation == "tanh" else f", activation={self.activation!r}")


@register_layer
class GRU(_Recurrent):
    """The gated recurrent unit, as PyTorch's ``torch.nn.GRU`` and Keras's
    ``GRU(reset_after=True)`` compute it (gates r, z, n, samples as rows):

        r = sigma(x W_xr + b_r + a^<t-1> W_hr + b'_r),   z = sigma(x W_xz + b_z + a^<t-1> W_hz + b'_z)
        n = tanh(x W_xn + b_n + r * (a^<t-1> W_hn + b'_n))
        a^<t> = (1 - z) * n + z * a^<t-1>

    (b from ``bias``, b' from ``recurrent_bias``). The notes' update gate is Gamma_u = 1 - z
    and their candidate a~ is n: a^<t> = Gamma_u a~ + (1 - Gamma_u) a^<t-1>. Parameters
    ``kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` and ``recurrent_bias`` (3H,)."""

    gates = 3

    def _run(self, x, states, lengths, mask=None):
        return gru(x, states[0], *self._weights(), lengths=lengths, mask=mask)


@register_layer
class LSTM(_Recurrent):
    """Long short-term memory, as PyTorch's ``torch.nn.LSTM`` (gates i, f, g, o):

        Gamma_u = sigma(x W_xi + a^<t-1> W_hi + b_i),   Gamma_f = sigma(x W_xf + a^<t-1> W_hf + b_f)
        c~ = tanh(x W_xg + a^<t-1> W_hg + b_g),         Gamma_o = sigma(x W_xo + a^<t-1> W_ho + b_o)
        c^<t> = Gamma_u c~ + Gamma_f c^<t-1>,            a^<t> = Gamma_o tanh(c^<t>)

    with b = ``bias`` + ``recurrent_bias``. Parameters ``kernel`` (D, 4H), ``recurrent_kernel``
    (H, 4H), ``bias`` and ``recurrent_bias`` (4H,). ``unit_forget_bias=True`` starts the forget
    gate's ``bias`` at 1 (Jozefowicz et al.; Keras's default), so that the memory is kept at
    first. ``return_state=True`` returns ``[output, a^<T>, c^<T>]``; ``initial_state=(a0, c0)``."""

    gates = 4
    state_names = ("h0", "c0")

    def __init__(self, units: int, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, kernel_init="xavier_uniform", recurrent_init="orthogonal",
                 bias_init="zeros", use_bias: bool = True, unit_forget_bias: bool = True, name: str | None = None,
                 stateful: bool = False):
        super().__init__(units, return_sequences, return_state, go_backwards, kernel_init, recurrent_init,
                         bias_init, use_bias, name, stateful)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _run(self, x, states, lengths, mask=None):
        return lstm(x, states[0], states[1], *self._weights(), lengths=lengths, mask=mask)

    def get_config(self) -> dict:
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config


_MERGE_MODES = ("concat", "sum", "ave", "mul", None)


@register_layer
class Bidirectional(Module):
    """A recurrent layer run in both directions (course notes, Bidirectional RNN): a copy of
    ``layer`` reads the sequence forwards, another (``go_backwards`` flipped, fresh weights)
    from its end, each from a zero state unless given one (the notes' A^<0> and A^<T+1>
    are 0). The backward output sequence is put back in time order, then the two outputs
    are combined by ``merge_mode``: 'concat' (default, (..., 2H)), 'sum', 'ave', 'mul', or
    None for the list [forward, backward].

    Sub-layers ``forward_layer`` and ``backward_layer`` (state dict keys
    ``forward_layer.kernel``, ...). ``return_state`` of the wrapped layer gives
    ``[output, *forward states, *backward states]``; ``initial_state`` is the list of the
    forward states followed by the backward ones. ``lengths`` (N,) go to both directions:
    the backward one reads each sequence from its own last real step, and both outputs are
    zeros at the padded steps (PyTorch's bidirectional layers on a packed sequence). A
    PackedSequence input gives packed output sequences (see the module notes).
    """

    def __init__(self, layer, merge_mode: str | None = "concat", name: str | None = None):
        super().__init__(name=name)
        if isinstance(layer, dict):
            layer = layer_from_config(layer)
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"Bidirectional: expected a SimpleRNN, GRU or LSTM layer, got {type(layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional: merge_mode must be one of {_MERGE_MODES}, got {merge_mode!r}")
        self.merge_mode = merge_mode
        config = layer.get_config()
        config["go_backwards"] = not layer.go_backwards
        config["name"] = f"backward_{layer.name}" if layer.name else None
        self.forward_layer = layer
        self.backward_layer = type(layer).from_config(config)

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 3, _EXPECTED)
        for layer in (self.forward_layer, self.backward_layer):
            if not layer.built:
                layer.build(shape)
                layer.built = True
                layer.build_input_shape = shape
        self.built = True

    def __call__(self, *inputs, **kwargs):
        _build_for_packed(self, inputs)
        return super().__call__(*inputs, **kwargs)

    def forward(self, x, initial_state=None, lengths=None, mask=None):
        """``lengths`` or a general ``mask`` (N, T) go to both directions (see the module notes).
        A PackedSequence ``x``: each output sequence (both with ``merge_mode=None``) is packed
        like it, both directions having read each sequence for its own length."""
        if isinstance(x, PackedSequence):
            padded, lengths = _unpacked(self._label(), x, lengths, mask)
            outputs = self.forward(padded, initial_state, lengths=lengths)
            count = (2 if self.merge_mode is None else 1) if self.forward_layer.return_sequences else 0
            return _packed_outputs(outputs, x, count)
        x = as_tensor(x)
        if x.ndim == 3:           # (other inputs: the wrapped layer's error)
            lengths = check_lengths(self._label(), lengths, tuple(x.shape))
        fwd, bwd = self.forward_layer, self.backward_layer
        count = len(fwd.state_names)
        states_f = states_b = None
        if initial_state is not None:
            given = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            if len(given) != 2 * count:
                raise ValueError(f"{self._label()}: initial_state must hold {2 * count} states (the forward "
                                 f"layer's {count}, then the backward layer's), got {len(given)}")
            states_f, states_b = given[:count], given[count:]
        masked = {} if mask is None else {"mask": mask}
        out_f = fwd(x, initial_state=states_f, lengths=lengths, **masked)
        out_b = bwd(x, initial_state=states_b, lengths=lengths, **masked)
        finals = []
        if fwd.return_state:
            out_f, finals_f = out_f[0], out_f[1:]
            out_b, finals_b = out_b[0], out_b[1:]
            finals = [*finals_f, *finals_b]
        if fwd.return_sequences:
            out_b = out_b[:, ::-1] if lengths is None else reverse_padded(out_b, lengths)
        merged = self._merge(out_f, out_b)
        if not fwd.return_state:
            return merged
        return (merged if isinstance(merged, list) else [merged]) + finals

    def _merge(self, a: Tensor, b: Tensor):
        mode = self.merge_mode
        if mode == "concat":
            return shape_ops.concat([a, b], axis=-1)
        if mode == "sum":
            return a + b
        if mode == "ave":
            return (a + b) * 0.5
        if mode == "mul":
            return a * b
        return [a, b]

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        shapes = shape if isinstance(shape, list) else [shape]
        output, finals = tuple(shapes[0]), [tuple(s) for s in shapes[1:]]
        if self.merge_mode == "concat":
            outputs = [output[:-1] + (2 * output[-1],)]
        elif self.merge_mode is None:
            outputs = [output, output]
        else:
            outputs = [output]
        if finals:
            return outputs + finals + finals
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self) -> dict:
        return {"layer": layer_to_config(self.forward_layer), "merge_mode": self.merge_mode, "name": self.name}

    def extra_repr(self) -> str:
        return f"merge_mode={self.merge_mode!r}"
