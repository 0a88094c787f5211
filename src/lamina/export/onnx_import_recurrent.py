"""ONNX's RNN, GRU and LSTM operators, unrolled step by step with lamina's ops so that
gradients flow to the weights (:mod:`lamina.export.onnx_import`).

Shapes (layout 0): X (T, N, input); W (D, G H, input); R (D, G H, H); B (D, 2 G H), the
input and recurrent biases; initial states (D, N, H); D = 2 for 'bidirectional'. Gates in
ONNX's order: LSTM i, o, f, c; GRU z, r, h. Outputs Y (T, D, N, H), Y_h and (LSTM) Y_c
(D, N, H). Activations Sigmoid, Tanh and Relu; no peepholes and no clip. With sequence_lens,
a sequence of L steps reads its first L (from step L - 1 back to 0 in reverse); its outputs
past them are 0 and its final states those after step L - 1.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.export.onnx_import_values import Node, array, constant, register_onnx_op

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


_ACTIVATIONS = {"sigmoid": F.sigmoid, "tanh": F.tanh, "relu": F.relu}


def _activations(node: Node, direction: int) -> list:
    """The direction's activation functions (f; f, g; f, g, h), the defaults unless given."""
    default = _DEFAULT_ACTIVATIONS[node.op_type]
    k = len(default)
    chosen = node.attr("activations") or default * 2
    names = chosen[direction * k:(direction + 1) * k]
    unknown = [a for a in names if a.lower() not in _ACTIVATIONS]
    if unknown or node.attr("activation_alpha") or node.attr("activation_beta"):
        raise NotImplementedError(f"{node.where()}: activations {chosen}; supported: Sigmoid, Tanh, Relu "
                                  "without alpha or beta")
    return [_ACTIVATIONS[a.lower()] for a in names]


def _check(node: Node, peepholes=None) -> None:
    if node.attr("clip") is not None or peepholes is not None:
        raise NotImplementedError(f"{node.where()}: clip and peepholes are not supported")


def _run(node: Node, x, w, r, b, lengths, h0, c0=None, peepholes=None):
    layout = node.attr("layout", 0)
    if layout:
        x = F.transpose(x, (1, 0, 2))
    _check(node, peepholes)
    steps, batch = x.shape[0], x.shape[1]
    hidden = node.attr("hidden_size") or r.shape[-1]
    direction = node.attr("direction", "forward")
    gates = _GATES[node.op_type]
    ys, hs, cs = [], [], []
    for d in range(2 if direction == "bidirectional" else 1):
        reverse = direction == "reverse" or d == 1
        acts = _activations(node, d)
        wd, rd = F.getitem(w, d), F.getitem(r, d)
        bias_x = bias_h = None
        if b is not None:
            bias_x = F.getitem(b, (d, slice(0, gates * hidden)))
            bias_h = F.getitem(b, (d, slice(gates * hidden, 2 * gates * hidden)))
        h = F.getitem(h0, d) if h0 is not None else constant(np.zeros((batch, hidden), dtype=x.dtype))
        c = F.getitem(c0, d) if c0 is not None else None
        if c is None and node.op_type == "LSTM":
            c = constant(np.zeros((batch, hidden), dtype=x.dtype))
        projected = F.matmul(x, F.transpose(wd, (1, 0)))
        if bias_x is not None:
            projected = projected + bias_x
        outs = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            h_new, c_new = _STEP[node.op_type](acts, F.getitem(projected, t), h, c, rd, bias_h, hidden,
                                               node.attr("linear_before_reset", 0))
            if lengths is None:
                h, c, outs[t] = h_new, c_new, h_new
                continue
            # a sequence shorter than t + 1 steps skips the step: states kept, output 0
            inside = (t < array(lengths))[:, None]
            h = F.where(inside, h_new, h)
            c = F.where(inside, c_new, c) if c is not None else None
            outs[t] = F.where(inside, h_new, 0.0)
        ys.append(F.stack(outs, axis=0))
        hs.append(h)
        cs.append(c)
    y = F.stack(ys, axis=1)                                          # (T, D, N, H)
    if layout:
        y = F.transpose(y, (2, 0, 1, 3))
    results = [y, _stack_states(hs, layout), _stack_states(cs, layout) if cs[0] is not None else None]
    return tuple(results[:node.outputs])


def _stack_states(states, layout: int):
    s = F.stack(states, axis=0)                                      # (D, N, H)
    return F.transpose(s, (1, 0, 2)) if layout else s


def _recurrent(h, rd, bias_h):
    out = F.matmul(h, F.transpose(rd, (1, 0)))
    return out + bias_h if bias_h is not None else out


def _rnn_step(acts, xw, h, c, rd, bias_h, hidden, linear_before_reset=0):
    """h' = f(x W^T + h R^T + b), f tanh by default."""
    return acts[0](xw + _recurrent(h, rd, bias_h)), None


def _gate(a, k: int, hidden: int):
    return F.getitem(a, (Ellipsis, slice(k * hidden, (k + 1) * hidden)))


def _rows(a, k: int, hidden: int):
    return F.getitem(a, slice(k * hidden, (k + 1) * hidden))


def _gru_step(acts, xw, h, c, rd, bias_h, hidden, linear_before_reset=0):
    """z, r = f(x W^T + h R^T + b) (their parts); n = g(x W_h^T + r (h R_h^T + b_Rh)) with
    linear_before_reset, else g(x W_h^T + (r h) R_h^T + b_Rh); h' = (1 - z) n + z h; f
    sigmoid and g tanh by default."""
    f, g = acts
    r_z, r_r, r_h = (_rows(rd, k, hidden) for k in range(3))
    b_z, b_r, b_h = (_rows(bias_h, k, hidden) if bias_h is not None else None for k in range(3))
    z = f(_gate(xw, 0, hidden) + _recurrent(h, r_z, b_z))
    r = f(_gate(xw, 1, hidden) + _recurrent(h, r_r, b_r))
    if linear_before_reset:
        n = g(_gate(xw, 2, hidden) + r * _recurrent(h, r_h, b_h))
    else:
        n = g(_gate(xw, 2, hidden) + _recurrent(r * h, r_h, b_h))
    return (1.0 - z) * n + z * h, None


def _lstm_step(acts, xw, h, c, rd, bias_h, hidden, linear_before_reset=0):
    """With a = x W^T + h R^T + b: i, o, f = act_f(a's parts), g = act_g(its last part);
    c' = f c + i g; h' = o act_h(c'); act_f sigmoid, act_g and act_h tanh by default."""
    act_f, act_g, act_h = acts
    a = xw + _recurrent(h, rd, bias_h)
    i, o, f = (act_f(_gate(a, k, hidden)) for k in range(3))
    g = act_g(_gate(a, 3, hidden))
    c = i * g if c is None else f * c + i * g
    return o * act_h(c), c


_STEP = {"RNN": _rnn_step, "GRU": _gru_step, "LSTM": _lstm_step}


@register_onnx_op("RNN")
def _rnn(node: Node, x, w, r, b=None, lengths=None, h0=None):
    return _run(node, x, w, r, b, lengths, h0)


@register_onnx_op("GRU")
def _gru(node: Node, x, w, r, b=None, lengths=None, h0=None):
    return _run(node, x, w, r, b, lengths, h0)


@register_onnx_op("LSTM")
def _lstm(node: Node, x, w, r, b=None, lengths=None, h0=None, c0=None, peepholes=None):
    return _run(node, x, w, r, b, lengths, h0, c0, peepholes)
