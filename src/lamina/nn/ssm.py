"""S4D (Gu, Gupta, Goel and Re 2022, "On the Parameterization and Initialization of Diagonal
State Space Models"): per feature channel h, a diagonal complex state space model

    s'(t) = A s(t) + B x(t),   y(t) = 2 Re(C s(t)) + D x(t)       (A, B, C in C^{S}, B = 1)

discretised with zero-order hold and step dt_h (log-uniform in [dt_min, dt_max]):

    A_bar = exp(dt A),   B_bar = (exp(dt A) - 1) / A,
    s_t = A_bar s_{t-1} + B_bar x_t,   y_t = 2 Re(C s_t) + D x_t.

Unrolled, y = K * x + D x with the convolution kernel K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l)
(a Vandermonde product), applied by FFT in :meth:`S4D.forward`; :meth:`S4D.step` runs the
recurrence for generation. Re A = -exp(log_A_real) stays negative. Initialisation of A:
``"lin"`` (S4D-Lin) A_n = -1/2 + i pi n, ``"inv"`` (S4D-Inv) A_n = -1/2 + i (S/pi)(S/(2n+1) - 1).
C ~ N(0, 1/2) per real and imaginary part. The output is GELU(y) mixed by a Dense to 2H
features and gated by a GLU, as the reference S4D block. Complex numbers are kept as real
and imaginary parts. Inputs (N, T, H); the state is a pair (Re s, Im s) of (N, H, S).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import fft as lfft
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.dense import Dense
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["S4D"]


@register_layer
class S4D(Module):
    """S4D layer on (N, T, ``features``) with ``state_size`` complex modes per channel
    (formulas in the module docstring). ``init``: ``"lin"`` or ``"inv"``."""

    def __init__(self, features: int, state_size: int = 32, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, name: str | None = None):
        super().__init__(name=name)
        if init not in ("lin", "inv"):
            raise ValueError(f"S4D: init must be 'lin' or 'inv', got {init!r}")
        if not 0 < dt_min < dt_max:
            raise ValueError(f"S4D: need 0 < dt_min < dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.features, self.state_size, self.init = features, state_size, init
        self.dt_min, self.dt_max = dt_min, dt_max
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        n = xp.arange(state_size)
        if init == "lin":
            imag = math.pi * n
        else:
            imag = state_size / math.pi * (state_size / (2 * n + 1) - 1)
        ones = xp.ones((features, state_size))
        self.add_parameter("log_A_real", xp.asarray(ones * math.log(0.5), dtype=dtype))
        self.add_parameter("A_imag", xp.asarray(ones * imag, dtype=dtype))
        for part in ("C_re", "C_im"):
            values = rng.standard_normal((features, state_size)) * math.sqrt(0.5)
            self.add_parameter(part, xp.asarray(values, dtype=dtype))
        log_dt = rng.uniform(size=features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.add_parameter("log_dt", xp.asarray(log_dt, dtype=dtype))
        self.add_parameter("D", xp.asarray(rng.standard_normal(features), dtype=dtype))
        self.output_linear = Dense(2 * features)
        self.output_linear.build((None, features))
        self.built = True

    def discretised(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(Re, Im) of dt A, of A_bar and of B_bar, each (H, S)."""
        dt = F.exp(self.log_dt)[:, None]
        a_re, a_im = -F.exp(self.log_A_real), self.A_imag
        dta_re, dta_im = a_re * dt, a_im * dt
        decay = F.exp(dta_re)
        bar_re, bar_im = decay * F.cos(dta_im), decay * F.sin(dta_im)
        # B_bar = (A_bar - 1) / A = (A_bar - 1) conj(A) / |A|^2
        size = a_re * a_re + a_im * a_im
        num_re, num_im = bar_re - 1.0, bar_im
        b_re, b_im = (num_re * a_re + num_im * a_im) / size, (num_im * a_re - num_re * a_im) / size
        return dta_re, dta_im, bar_re, bar_im, b_re, b_im

    def kernel(self, length: int) -> Tensor:
        """K (H, length): K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l), A_bar^l = exp(l dt A)."""
        dta_re, dta_im, _, _, b_re, b_im = self.discretised()
        w_re, w_im = self.C_re * b_re - self.C_im * b_im, self.C_re * b_im + self.C_im * b_re
        steps = Tensor(backend.xp.arange(length, dtype=self.log_dt.dtype))
        decay = F.exp(dta_re[..., None] * steps)               # (H, S, L)
        angle = dta_im[..., None] * steps
        terms = w_re[..., None] * F.cos(angle) - w_im[..., None] * F.sin(angle)
        return 2.0 * (decay * terms).sum(axis=1)

    def _output(self, y: Tensor) -> Tensor:
        return F.glu(self.output_linear(F.gelu(y)), axis=-1)

    def _check_input(self, x, time_axis: bool) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))
        expected = "(N, T, features)" if time_axis else "(N, features)"
        if x.ndim != (3 if time_axis else 2) or x.shape[-1] != self.features:
            raise ShapeError(f"S4D: expected input {expected} with features {self.features}, got shape {x.shape}")
        if time_axis and x.shape[1] == 0:
            raise ShapeError(f"S4D: the input sequence is empty (shape {x.shape}, T = 0)")
        return x

    def convolve(self, x) -> Tensor:
        """The state space model's output K * x + D x (N, T, H) before the GELU/GLU output, by FFT."""
        x = self._check_input(x, time_axis=True)
        length = x.shape[1]
        k = self.kernel(length)                                  # (H, L)
        x_f = lfft.rfft(x, n=2 * length, dim=1)                  # (N, L+1, H, 2)
        k_f = lfft.rfft(k.T, n=2 * length, dim=0)                # (L+1, H, 2)
        y = lfft.irfft(lfft.mul(x_f, k_f), n=2 * length, dim=1)[:, :length]
        return y + x * self.D

    def forward(self, x) -> Tensor:
        """Outputs (N, T, H) from a zero state (the convolutional form)."""
        return self._output(self.convolve(x))

    def step(self, x_t, state=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step of the recurrence: (output (N, H), new state (Re s, Im s), each (N, H, S))."""
        x_t = self._check_input(x_t, time_axis=False)
        _, _, bar_re, bar_im, b_re, b_im = self.discretised()
        u = x_t[..., None]
        new_re, new_im = b_re * u, b_im * u
        if state is not None:
            expected = (x_t.shape[0], self.features, self.state_size)
            if not (isinstance(state, (tuple, list)) and len(state) == 2) or any(
                    tuple(s.shape) != expected for s in state):
                got = [tuple(s.shape) for s in state] if isinstance(state, (tuple, list)) else type(state)
                raise ShapeError(f"S4D: the state must be a pair (Re s, Im s) of shape {expected} each, got {got}")
            s_re, s_im = state
            new_re = new_re + bar_re * s_re - bar_im * s_im
            new_im = new_im + bar_re * s_im + bar_im * s_re
        y = 2.0 * (self.C_re * new_re - self.C_im * new_im).sum(axis=-1) + self.D * x_t
        return self._output(y), (new_re, new_im)

    def get_config(self) -> dict:
        return {"features": self.features, "state_size": self.state_size, "init": self.init, "dt_min": self.dt_min,
                "dt_max": self.dt_max, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.features}, state_size={self.state_size}, init={self.init!r}"
