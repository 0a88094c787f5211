"""The sLSTM and mLSTM of xLSTM (Beck et al. 2024).

sLSTM: a scalar memory per unit with exponential gating, a normaliser n and a stabiliser m,
with recurrent connections R (so it runs step by step):

    z_t = tanh(x W_z + h_{t-1} R_z + b_z),   o_t = sigmoid(x W_o + h_{t-1} R_o + b_o)
    i~_t, f~_t likewise (no squashing), log f_t = log sigmoid(f~_t)
    m_t = max(log f_t + m_{t-1}, i~_t),  i'_t = exp(i~_t - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)
    c_t = f'_t c_{t-1} + i'_t z_t,   n_t = f'_t n_{t-1} + i'_t,   h_t = o_t c_t / n_t

(c and n are the unstabilised ones times exp(-m_t): h_t is unchanged).

mLSTM: an LSTM whose memory is a matrix C (d x d) updated
by a covariance rule, with exponential input gates and a stabiliser state m. From
x_t (N, T, input_size): q_t = x_t W_q, k_t = x_t W_k / sqrt(d), v_t = x_t W_v,
o_t = sigmoid(x_t W_o + b_o), input and forget preactivations i~_t, f~_t (scalars), log f_t =
log sigmoid(f~_t), and

    m_t = max(log f_t + m_{t-1}, i~_t)
    i'_t = exp(i~_t - m_t),   f'_t = exp(log f_t + m_{t-1} - m_t)
    C_t = f'_t C_{t-1} + i'_t v_t k_t^T,   n_t = f'_t n_{t-1} + i'_t k_t
    h_t = o_t * C_t q_t / max(|n_t . q_t|, exp(-m_t))

C and n are the unstabilised memory times exp(-m_t), so h_t equals the unstabilised
C q / max(|n . q|, 1) for any m. The parallel form used in training: with
log D_ts = sum_{s<r<=t} log f_r + i~_s (s <= t), m_t = max_s log D_ts, D'_ts = exp(log D_ts - m_t),
S = (q k^T) * D', h_t = o_t * (S v)_t / max(|sum_s S_ts|, exp(-m_t)).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["mLSTM", "sLSTM"]


@register_layer
class mLSTM(Module):  # noqa: N801  (the paper's name)
    """Single-head mLSTM layer (N, T, ``input_size``) -> (N, T, ``hidden_size``) (formulas in
    the module docstring). ``forward`` uses the parallel form; :meth:`step` the recurrence
    with state (C (N, d, d), n (N, d), m (N,))."""

    def __init__(self, input_size: int, hidden_size: int, name: str | None = None):
        super().__init__(name=name)
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"mLSTM: input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size, self.hidden_size = input_size, hidden_size
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        bound = 1.0 / math.sqrt(input_size)
        width = 4 * hidden_size + 2
        self.add_parameter("kernel", xp.asarray(rng.uniform(-bound, bound, (input_size, width)), dtype=dtype))
        bias = xp.zeros(width)
        bias[-1] = 3.0          # forget preactivation: start remembering
        self.add_parameter("bias", xp.asarray(bias, dtype=dtype))
        self.built = True

    def _projections(self, x: Tensor):
        d = self.hidden_size
        mixed = F.matmul(x, self.kernel) + self.bias
        q, k, v, o = (mixed[..., j * d:(j + 1) * d] for j in range(4))
        return q, k / math.sqrt(d), v, F.sigmoid(o), mixed[..., 4 * d], F.log_sigmoid(mixed[..., 4 * d + 1])

    def _check_input(self, x, time_axis: bool) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))
        expected = "(N, T, input_size)" if time_axis else "(N, input_size)"
        if x.ndim != (3 if time_axis else 2) or x.shape[-1] != self.input_size:
            raise ShapeError(f"mLSTM: expected input {expected} with input_size {self.input_size}, got shape {x.shape}")
        if time_axis and x.shape[1] == 0:
            raise ShapeError(f"mLSTM: the input sequence is empty (shape {x.shape}, T = 0)")
        return x

    def forward(self, x) -> Tensor:
        """All h_t (N, T, hidden_size) from an empty memory, by the parallel form."""
        x = self._check_input(x, time_axis=True)
        q, k, v, o, i_pre, log_f = self._projections(x)
        steps = x.shape[1]
        cumulative = F.cumsum(log_f, axis=1)                                     # (N, T)
        log_d = cumulative[:, :, None] - cumulative[:, None, :] + i_pre[:, None, :]
        causal = backend.xp.tril(backend.xp.ones((steps, steps), dtype=bool))
        log_d = F.where(causal, log_d, -math.inf)
        m = log_d.max(axis=2, keepdims=True).detach()
        weights = F.matmul(q, k.swapaxes(1, 2)) * F.exp(log_d - m)
        normaliser = F.maximum(F.abs(weights.sum(axis=2, keepdims=True)), F.exp(-m))
        return o * F.matmul(weights, v) / normaliser

    def step(self, x_t, state=None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """One step of the stabilised recurrence: (h_t (N, d), new state (C, n, m))."""
        x_t = self._check_input(x_t, time_axis=False)
        q, k, v, o, i_pre, log_f = self._projections(x_t)
        batch, d = x_t.shape[0], self.hidden_size
        if state is None:
            xp, dtype = backend.xp, x_t.dtype
            state = (Tensor(xp.zeros((batch, d, d), dtype=dtype)), Tensor(xp.zeros((batch, d), dtype=dtype)),
                     Tensor(xp.zeros(batch, dtype=dtype)))
        c, n, m = state
        if tuple(c.shape) != (batch, d, d) or tuple(n.shape) != (batch, d) or tuple(m.shape) != (batch,):
            raise ShapeError(f"mLSTM: the state (C, n, m) has shapes {tuple(c.shape)}, {tuple(n.shape)}, "
                             f"{tuple(m.shape)}, expected {(batch, d, d)}, {(batch, d)}, {(batch,)}")
        m_new = F.maximum(log_f + m, i_pre)
        i_gate, f_gate = F.exp(i_pre - m_new)[:, None], F.exp(log_f + m - m_new)[:, None]
        c = f_gate[..., None] * c + i_gate[..., None] * (v[:, :, None] * k[:, None, :])
        n = f_gate * n + i_gate * k
        numerator = (c * q[:, None, :]).sum(axis=2)
        denominator = F.maximum(F.abs((n * q).sum(axis=1, keepdims=True)), F.exp(-m_new)[:, None])
        return o * numerator / denominator, (c, n, m_new)

    def get_config(self) -> dict:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


@register_layer
class sLSTM(Module):  # noqa: N801  (the paper's name)
    """sLSTM layer (N, T, ``input_size``) -> (N, T, ``hidden_size``) (formulas in the module
    docstring; one head). ``forward`` runs :meth:`step` over time; the state is (h, c, n, m),
    each (N, hidden_size)."""

    def __init__(self, input_size: int, hidden_size: int, name: str | None = None):
        super().__init__(name=name)
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"sLSTM: input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size, self.hidden_size = input_size, hidden_size
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        bound = 1.0 / math.sqrt(hidden_size)
        self.add_parameter("kernel", xp.asarray(rng.uniform(-bound, bound, (input_size, 4 * hidden_size)), dtype=dtype))
        self.add_parameter("recurrent_kernel",
                           xp.asarray(rng.uniform(-bound, bound, (hidden_size, 4 * hidden_size)), dtype=dtype))
        bias = xp.zeros(4 * hidden_size)
        bias[3 * hidden_size:] = 3.0        # forget gates start open
        self.add_parameter("bias", xp.asarray(bias, dtype=dtype))
        self.built = True

    def _check_input(self, x, time_axis: bool) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))
        expected = "(N, T, input_size)" if time_axis else "(N, input_size)"
        if x.ndim != (3 if time_axis else 2) or x.shape[-1] != self.input_size:
            raise ShapeError(f"sLSTM: expected input {expected} with input_size {self.input_size}, got shape {x.shape}")
        if time_axis and x.shape[1] == 0:
            raise ShapeError(f"sLSTM: the input sequence is empty (shape {x.shape}, T = 0)")
        return x

    def forward(self, x, state=None) -> Tensor:
        """All h_t (N, T, hidden_size) from ``state`` (zeros if None)."""
        x = self._check_input(x, time_axis=True)
        outputs = []
        for t in range(x.shape[1]):
            h, state = self.step(x[:, t], state)
            outputs.append(h)
        return F.stack(outputs, axis=1)

    def step(self, x_t, state=None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """One step: (h_t, new state (h, c, n, m))."""
        x_t = self._check_input(x_t, time_axis=False)
        batch, d = x_t.shape[0], self.hidden_size
        if state is None:
            zeros = Tensor(backend.xp.zeros((batch, d), dtype=x_t.dtype))
            state = (zeros, zeros, zeros, zeros)
        if len(state) != 4 or any(tuple(s.shape) != (batch, d) for s in state):
            raise ShapeError(f"sLSTM: the state (h, c, n, m) must be four arrays of shape {(batch, d)}, got "
                             f"{[tuple(s.shape) for s in state]}")
        h, c, n, m = state
        mixed = F.matmul(x_t, self.kernel) + F.matmul(h, self.recurrent_kernel) + self.bias
        z, o, i_pre, f_pre = (mixed[:, j * d:(j + 1) * d] for j in range(4))
        log_f = F.log_sigmoid(f_pre)
        m_new = F.maximum(log_f + m, i_pre)
        i_gate, f_gate = F.exp(i_pre - m_new), F.exp(log_f + m - m_new)
        c = f_gate * c + i_gate * F.tanh(z)
        n = f_gate * n + i_gate
        h = F.sigmoid(o) * c / n
        return h, (h, c, n, m_new)

    def get_config(self) -> dict:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
