"""Keras's recurrent layers on lamina's: one bias per gate where Keras has one, masks, and
variational dropout.

Masks: the layers read their input's mask (:mod:`lamina.keras.masking`) or take
``mask=`` (N, T), True at the steps to read. A masked step carries the state,
h^<t> = m_t h_new + (1 - m_t) h^<t-1> (any mask: right or left padding, holes); the final
state is the one after the last read step. With ``go_backwards`` the sequence and its mask
are read from the end. ``return_sequences=True`` passes the mask on. The fused kernels of
:mod:`lamina.functional.recurrent` run masked sequences as they run padded ones.

The output at a masked step follows Keras 3's ``zero_output_for_mask`` (default False): it
repeats the previous step's output, y^<t> = m_t h_new + (1 - m_t) y^<t-1> with y^<0> = 0 (in
reading order), so it is the output of the last read step, or zeros before the first one
(Keras's TensorFlow and torch backends; its JAX backend repeats the carried state, which
differs only before the first read step with a nonzero initial state). ``Bidirectional``
sets ``zero_output_for_mask`` to ``return_sequences`` on both directions, as Keras does, so
its outputs are zeros at the masked steps. ``lengths=`` (lamina's packed lengths, not a
Keras argument) keeps PyTorch's zeros at the padded steps.

Dropout (Gal and Ghahramani's variational dropout, as Keras's cells): in training, with
``dropout`` p one mask M_x (N, D) per sequence drops input features and with
``recurrent_dropout`` q one mask M_h (N, H) drops state features, each kept value scaled by
1 / (1 - rate); the same masks serve every step and every gate (one mask for all gate
blocks, as Keras 3's LSTMCell and GRUCell draw them):

    x~^<t> = x^<t> * M_x,   a~^<t-1> = a^<t-1> * M_h

x~ and a~ replace x and a^<t-1> in the products with W_x and W_h of every gate; the GRU's
blend a^<t> = (1 - z) n + z a^<t-1> and the LSTM's memory use the state as it is. The
steps then run unrolled with primitive ops; without dropout (or at inference) the fused
kernel runs. The masks drawn last are kept in ``dropout_masks`` (M_x, M_h; None for a rate
of 0).
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina.autograd import Tensor
from lamina.functional.activation import relu, sigmoid, tanh
from lamina.functional.elementwise import where
from lamina.functional.shape import stack
from lamina.keras.masking import mask_of
from lamina.nn.dropout import dropout_mask
from lamina.nn.layer import register_layer

__all__ = ["KerasBidirectional", "KerasGRU", "KerasLSTM", "KerasSimpleRNN", "carry_outputs"]


def _rate(value, what: str) -> float:
    rate = float(value or 0.0)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{what} must lie in [0, 1), got {value!r}")
    return rate


def carry_outputs(sequence: Tensor, read) -> Tensor:
    """y (N, T, H), zeros at the skipped steps, with each skipped step given the output of
    the last read step before it (zeros before the first): y~ = P y with the constant
    P[n, t, s] = 1 where s is the last read step <= t of row n. ``read`` (N, T) booleans."""
    read = np.asarray(read, dtype=bool)
    steps = read.shape[1]
    index = np.where(read, np.arange(steps)[None, :], -1)
    last = np.maximum.accumulate(index, axis=1)                       # (N, T); -1: none read yet
    pick = (last[:, :, None] == np.arange(steps)[None, None, :]).astype(sequence.dtype)
    return Tensor(backend.xp.asarray(pick)) @ sequence


def _blocks(a, count: int) -> list:
    width = a.shape[-1] // count
    return [a[..., k * width:(k + 1) * width] for k in range(count)]


class _KerasRecurrent:
    """Masks and variational dropout for lamina's SimpleRNN, GRU and LSTM (see the module notes)."""

    one_bias = False

    def __init__(self, *args, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zero_output_for_mask: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.dropout = _rate(dropout, f"{type(self).__name__}: dropout")
        self.recurrent_dropout = _rate(recurrent_dropout, f"{type(self).__name__}: recurrent_dropout")
        self.dropout_masks = (None, None)
        self._dropping = False

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if self.one_bias:
            self._parameters.pop("recurrent_bias", None)

    def _weights(self) -> tuple:
        if not self.one_bias:
            return super()._weights()
        return self.kernel, self.recurrent_kernel, self.bias if self.use_bias else None, None

    def forward(self, x, initial_state=None, lengths=None, mask=None, training=None):
        if mask is None and lengths is None:
            mask = mask_of(x)
        training = self.training if training is None else bool(training)
        self._dropping = training and bool(self.dropout or self.recurrent_dropout)
        try:
            return super().forward(x, initial_state=initial_state, lengths=lengths, mask=mask)
        finally:
            self._dropping = False

    def compute_mask(self, inputs, mask=None):
        """The output's mask: the input's with ``return_sequences``, else none."""
        return mask if self.return_sequences else None

    def _run(self, x, states, lengths, mask=None):
        results = self._run_dropping(x, states, lengths, mask) if self._dropping else super()._run(
            x, states, lengths, mask)
        if mask is None or self.zero_output_for_mask or not self.return_sequences:
            return results
        return (carry_outputs(results[0], mask), *results[1:])

    def _run_dropping(self, x, states, lengths, mask=None):
        n, steps, d = x.shape
        if mask is None and lengths is not None:
            mask = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
        x_keep = dropout_mask((n, d), self.dropout, x.dtype) if self.dropout else None
        h_keep = dropout_mask((n, self.units), self.recurrent_dropout, x.dtype) if self.recurrent_dropout else None
        self.dropout_masks = (x_keep, h_keep)
        if x_keep is not None:
            x = x * Tensor(x_keep[:, None, :])
        w_x, w_h, b_x, b_h = self._weights()
        z_x = x @ w_x if b_x is None else x @ w_x + b_x
        zeros = Tensor(backend.xp.zeros((n, self.units), dtype=x.dtype))
        state = [zeros if s is None else s for s in states]
        outputs = []
        for t in range(steps):
            a_in = state[0] if h_keep is None else state[0] * Tensor(h_keep)
            rec = a_in @ w_h if b_h is None else a_in @ w_h + b_h
            new = self._step(z_x[:, t], rec, state)
            if mask is None:
                state, output = new, new[0]
            else:
                read = mask[:, t:t + 1]
                state = [where(read, a, b) for a, b in zip(new, state)]
                output = where(read, new[0], 0.0)
            outputs.append(output)
        return (stack(outputs, axis=1), *state)

    def get_config(self) -> dict:
        return {**super().get_config(), "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout,
                "zero_output_for_mask": self.zero_output_for_mask}


@register_layer
class KerasSimpleRNN(_KerasRecurrent, nn.SimpleRNN):
    """lamina's SimpleRNN with Keras's one bias, masks and dropout."""

    default_name = "simple_rnn"
    one_bias = True

    def _step(self, z_x, rec, state) -> list:
        g = relu if self.activation == "relu" else tanh
        return [g(z_x + rec)]


@register_layer
class KerasGRU(_KerasRecurrent, nn.GRU):
    """lamina's GRU (Keras's ``reset_after=True``, two biases) with masks and dropout."""

    default_name = "gru"

    def _step(self, z_x, rec, state) -> list:
        x_r, x_z, x_n = _blocks(z_x, 3)
        h_r, h_z, h_n = _blocks(rec, 3)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        return [(1 - z) * n + z * state[0]]


@register_layer
class KerasLSTM(_KerasRecurrent, nn.LSTM):
    """lamina's LSTM with Keras's one bias per gate, masks and dropout."""

    default_name = "lstm"
    one_bias = True

    def _step(self, z_x, rec, state) -> list:
        i, f, g, o = _blocks(z_x + rec, 4)
        c = sigmoid(f) * state[1] + sigmoid(i) * tanh(g)
        return [sigmoid(o) * tanh(c), c]


@register_layer
class KerasBidirectional(nn.Bidirectional):
    """lamina's Bidirectional reading its input's mask: both directions skip the masked
    steps (the backward one reads the sequence and its mask from the end) and, as Keras
    forces ``zero_output_for_mask = return_sequences`` on them, output zeros there."""

    default_name = "bidirectional"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for layer in (self.forward_layer, self.backward_layer):
            if hasattr(layer, "zero_output_for_mask"):
                layer.zero_output_for_mask = layer.return_sequences

    def forward(self, x, initial_state=None, lengths=None, mask=None, training=None):
        if mask is None and lengths is None:
            mask = mask_of(x)
        return super().forward(x, initial_state=initial_state, lengths=lengths, mask=mask)

    def compute_mask(self, inputs, mask=None):
        return mask if self.forward_layer.return_sequences else None
