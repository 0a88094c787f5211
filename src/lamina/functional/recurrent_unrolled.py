"""The recurrent cells written step by step with primitive ops: the same values as the fused
nodes of :mod:`lamina.functional.recurrent_cells` (in their time-major output layout) and of
:class:`lamina.functional.conv_lstm.ConvLSTMFunction`, for their differentiable backward
(``Function.composite_backward_graph``): gradients of gradients through an RNN, a GRU, an
LSTM or a ConvLSTM. The formulas are in those nodes' docstrings; ``pad`` is the (T, N) mask
of padded steps (None without lengths)."""

from __future__ import annotations

from lamina.functional.activation import relu, sigmoid, tanh
from lamina.functional.conv import conv2d
from lamina.functional.elementwise import where
from lamina.functional.shape import stack
from lamina.functional.smooth_activation import hard_sigmoid


def _blocks(a, count: int) -> list:
    """The ``count`` gate blocks side by side in the last axis of ``a``."""
    width = a.shape[-1] // count
    return [a[..., k * width:(k + 1) * width] for k in range(count)]


def _carried(pad, t: int, previous, new):
    """The new state, or the previous one on the rows whose sequence has ended."""
    return new if pad is None else where(pad[t][:, None], previous, new)


def _time_major(outputs: list, finals: list, pad):
    """[a^<0>, a^<1..T>, finals...] stacked (T + 1 + len(finals), N, H); with lengths the
    final state gets its own slot and the outputs at padded steps are zeros."""
    if pad is None:
        return stack(outputs + finals[1:], axis=0)
    sequence = [where(pad[t][:, None], 0.0, a) for t, a in enumerate(outputs[1:])]
    return stack([outputs[0]] + sequence + finals, axis=0)


def _projections(x, w_x, b_x, b_h):
    """x^<t> W_x + b_x for every step, time-major: (T, N, G H)."""
    z = x.swapaxes(0, 1) @ w_x
    return z if b_x is None else z + b_x


def simple_rnn_steps(x, a0, w_x, w_h, b_x, b_h, activation: str, pad):
    g = relu if activation == "relu" else tanh
    z_x = _projections(x, w_x, b_x, b_h)
    outputs = [a0]
    for t in range(x.shape[1]):
        z = z_x[t] + outputs[-1] @ w_h
        if b_h is not None:
            z = z + b_h
        outputs.append(_carried(pad, t, outputs[-1], g(z)))
    return _time_major(outputs, [outputs[-1]], pad)


def gru_steps(x, a0, w_x, w_h, b_x, b_h, pad):
    z_x = _projections(x, w_x, b_x, b_h)
    outputs = [a0]
    for t in range(x.shape[1]):
        prev = outputs[-1]
        rec = prev @ w_h
        if b_h is not None:
            rec = rec + b_h
        x_r, x_z, x_n = _blocks(z_x[t], 3)
        h_r, h_z, h_n = _blocks(rec, 3)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        outputs.append(_carried(pad, t, prev, (1 - z) * n + z * prev))
    return _time_major(outputs, [outputs[-1]], pad)


def lstm_steps(x, a0, c0, w_x, w_h, b_x, b_h, pad):
    z_x = _projections(x, w_x, b_x, b_h)
    outputs, c = [a0], c0
    for t in range(x.shape[1]):
        prev = outputs[-1]
        z = z_x[t] + prev @ w_h
        if b_h is not None:
            z = z + b_h
        i, f, g, o = _blocks(z, 4)
        new_c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        new_a = sigmoid(o) * tanh(new_c)
        c = _carried(pad, t, c, new_c)
        outputs.append(_carried(pad, t, prev, new_a))
    return _time_major(outputs, [outputs[-1], c], pad)


def conv_lstm_steps(zx, a0, c0, u, activation: str, recurrent_activation: str, go_backwards: bool):
    """[a^<1..T>, c^<T>] stacked on axis 1 (N, T + 1, h', w', K), the steps in reading order."""
    g = relu if activation == "relu" else tanh
    gate = hard_sigmoid if recurrent_activation == "hard_sigmoid" else sigmoid
    steps = zx.shape[1]
    a, c, outputs = a0, c0, []
    for t in (reversed(range(steps)) if go_backwards else range(steps)):
        i, f, candidate, o = _blocks(zx[:, t] + conv2d(a, u, padding="same"), 4)
        c = gate(f) * c + gate(i) * g(candidate)
        a = gate(o) * g(c)
        outputs.append(a)
    return stack(outputs + [c], axis=1)
