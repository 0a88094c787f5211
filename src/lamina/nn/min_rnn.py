"""Minimal recurrent layers (Feng et al. 2024, "Were RNNs All We Needed?"): GRU and LSTM
whose gates read the input only, so the recurrence is linear in the state and the whole
sequence comes from one :func:`lamina.functional.linear_scan`.

minGRU, with z_t = sigmoid(x_t W_z + b_z) and h~_t = x_t W_h + b_h:

    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

minLSTM, with f_t, i_t = sigmoid(x_t W_f + b_f), sigmoid(x_t W_i + b_i) normalised to
f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t):

    h_t = f'_t * h_{t-1} + i'_t * h~_t

Inputs are (N, T, input_size), outputs (N, T, hidden_size), the state (N, hidden_size).
``mode``: ``"parallel"`` (the log-depth scan), ``"sequential"`` (a step loop) or ``"log"``
(the paper's log-space scan: h~ passes through g(x) = x + 1/2 for x >= 0, sigmoid(x) below,
so every state stays positive; its initial state must then be positive too). :meth:`step`
runs one time step from a carried state and gives the same values as ``forward``.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.linear_scan import linear_scan, log_linear_scan
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["MinGRU", "MinLSTM", "log_positive_activation", "positive_activation"]

_MODES = ("parallel", "sequential", "log")


def positive_activation(x) -> Tensor:
    """g(x) = x + 1/2 for x >= 0 and sigmoid(x) below: positive, continuous, with slope 1/4 at 0
    from below and 1 above (minGRU's log-space value map)."""
    return F.where(x >= 0, F.relu(x) + 0.5, F.sigmoid(x))


def log_positive_activation(x) -> Tensor:
    """log g(x): log(x + 1/2) for x >= 0 and -softplus(-x) below."""
    return F.where(x >= 0, F.log(F.relu(x) + 0.5), -F.softplus(-x))


class _MinimalRNN(Module):
    gate_count = 1

    def __init__(self, input_size: int, hidden_size: int, mode: str = "parallel", name: str | None = None):
        super().__init__(name=name)
        if mode not in _MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of {_MODES}, got {mode!r}")
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"{type(self).__name__}: input_size and hidden_size must be positive, "
                             f"got {input_size} and {hidden_size}")
        self.input_size, self.hidden_size, self.mode = input_size, hidden_size, mode
        width = (self.gate_count + 1) * hidden_size
        bound = 1.0 / math.sqrt(input_size)
        dtype = backend.get_default_dtype()
        rng = backend.rng()
        self.add_parameter("kernel", backend.xp.asarray(rng.uniform(-bound, bound, (input_size, width)), dtype=dtype))
        self.add_parameter("bias", backend.xp.asarray(rng.uniform(-bound, bound, (width,)), dtype=dtype))
        self.built = True

    def _projections(self, x: Tensor) -> list[Tensor]:
        mixed = F.matmul(x, self.kernel) + self.bias
        h = self.hidden_size
        return [mixed[..., k * h:(k + 1) * h] for k in range(self.gate_count + 1)]

    def _check_input(self, x, time_axis: bool) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))
        expected = "(N, T, input_size)" if time_axis else "(N, input_size)"
        if x.ndim != (3 if time_axis else 2) or x.shape[-1] != self.input_size:
            raise ShapeError(f"{type(self).__name__}: expected input {expected} with input_size "
                             f"{self.input_size}, got shape {x.shape}")
        if time_axis and x.shape[1] == 0:
            raise ShapeError(f"{type(self).__name__}: the input sequence is empty (shape {x.shape}, T = 0)")
        return x

    def _check_state(self, state, batch: int, dtype) -> Tensor | None:
        if state is None:
            return None
        state = state if isinstance(state, Tensor) else Tensor(backend.xp.asarray(state))
        if state.shape != (batch, self.hidden_size):
            raise ShapeError(f"{type(self).__name__}: the state has shape {state.shape}, expected "
                             f"(N, hidden_size) = {(batch, self.hidden_size)}")
        return state

    def _values(self, candidate: Tensor) -> Tensor:
        return positive_activation(candidate) if self.mode == "log" else candidate

    def forward(self, x, state=None) -> Tensor:
        """All hidden states (N, T, hidden_size) from ``state`` (N, hidden_size; zeros if None)."""
        x = self._check_input(x, time_axis=True)
        state = self._check_state(state, x.shape[0], x.dtype)
        if self.mode == "log":
            log_a, log_b = self._log_coefficients(x)
            return F.exp(log_linear_scan(log_a, log_b, None if state is None else F.log(state)))
        a, b = self._coefficients(x)
        return linear_scan(a, b, state, method=self.mode)

    def step(self, x_t, state=None) -> tuple[Tensor, Tensor]:
        """One step: (output h_t, new state h_t) from x_t (N, input_size) and the state."""
        x_t = self._check_input(x_t, time_axis=False)
        state = self._check_state(state, x_t.shape[0], x_t.dtype)
        a, b = self._coefficients(x_t)
        h = b if state is None else a * state + b
        return h, h

    def get_config(self) -> dict:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "mode": self.mode, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, mode={self.mode!r}"


@register_layer
class MinGRU(_MinimalRNN):
    """minGRU: h_t = (1 - z_t) h_{t-1} + z_t h~_t with gate and candidate from x_t only
    (module docstring)."""

    gate_count = 1

    def _coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gate, candidate = self._projections(x)
        z = F.sigmoid(gate)
        return 1.0 - z, z * self._values(candidate)

    def _log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gate, candidate = self._projections(x)
        return -F.softplus(gate), -F.softplus(-gate) + log_positive_activation(candidate)


@register_layer
class MinLSTM(_MinimalRNN):
    """minLSTM: h_t = f'_t h_{t-1} + i'_t h~_t with f', i' the normalised forget and input
    gates (module docstring)."""

    gate_count = 2

    def _coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        forget, inp, candidate = self._projections(x)
        f, i = F.sigmoid(forget), F.sigmoid(inp)
        total = f + i
        return f / total, (i / total) * self._values(candidate)

    def _log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # log f' = log f - log(f + i) = -softplus(softplus(-forget) - softplus(-inp)), and
        # log i' likewise with the difference negated.
        forget, inp, candidate = self._projections(x)
        difference = F.softplus(-forget) - F.softplus(-inp)
        return -F.softplus(difference), -F.softplus(-difference) + log_positive_activation(candidate)
