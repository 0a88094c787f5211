"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks
for Long Sequences"): a complex diagonal linear recurrence over (N, T, features) inputs,

    lambda = exp(-exp(nu_log) + i exp(theta_log))          (|lambda| < 1 for any parameters)
    h_t = lambda * h_{t-1} + gamma * (B x_t),   gamma = sqrt(1 - |lambda|^2)
    y_t = Re(C h_t) + D * x_t

with B (features, S) and C (S, features) complex (kept as real and imaginary parts) and D
(features,). At initialisation |lambda| is uniform on the ring r_min <= |lambda| <= r_max (by
area) and arg lambda uniform in [0, max_phase]. The whole sequence is one
:func:`lamina.functional.linear_scan.complex_linear_scan`; :meth:`LRU.step` advances one step
from a carried state (Re h, Im h), each (N, S).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.linear_scan import complex_linear_scan
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["LRU"]


@register_layer
class LRU(Module):
    """Linear Recurrent Unit on (N, T, ``features``) with a complex state of ``state_size``
    entries (formulas in the module docstring)."""

    def __init__(self, features: int, state_size: int, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 2 * math.pi, name: str | None = None):
        super().__init__(name=name)
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"LRU: need 0 <= r_min < r_max <= 1 for the eigenvalue ring, got r_min={r_min}, "
                             f"r_max={r_max}")
        if features < 1 or state_size < 1:
            raise ValueError(f"LRU: features and state_size must be positive, got {features} and {state_size}")
        self.features, self.state_size = features, state_size
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        u1, u2 = rng.uniform(size=state_size), rng.uniform(size=state_size)
        nu = -0.5 * xp.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2)
        theta = xp.maximum(u2 * max_phase, 1e-12)
        modulus = xp.exp(-nu)
        self.add_parameter("nu_log", xp.asarray(xp.log(nu), dtype=dtype))
        self.add_parameter("theta_log", xp.asarray(xp.log(theta), dtype=dtype))
        self.add_parameter("gamma_log", xp.asarray(0.5 * xp.log(1 - modulus ** 2), dtype=dtype))
        for part in ("B_re", "B_im"):
            scale = 1.0 / math.sqrt(2 * features)
            self.add_parameter(part, xp.asarray(rng.standard_normal((features, state_size)) * scale, dtype=dtype))
        for part in ("C_re", "C_im"):
            scale = 1.0 / math.sqrt(state_size)
            self.add_parameter(part, xp.asarray(rng.standard_normal((state_size, features)) * scale, dtype=dtype))
        self.add_parameter("D", xp.asarray(rng.standard_normal(features), dtype=dtype))
        self.built = True

    def eigenvalues(self) -> tuple[Tensor, Tensor]:
        """(Re lambda, Im lambda), each (S,)."""
        modulus = F.exp(-F.exp(self.nu_log))
        phase = F.exp(self.theta_log)
        return modulus * F.cos(phase), modulus * F.sin(phase)

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gamma = F.exp(self.gamma_log)
        return F.matmul(x, self.B_re) * gamma, F.matmul(x, self.B_im) * gamma

    def _readout(self, h_re: Tensor, h_im: Tensor, x: Tensor) -> Tensor:
        return F.matmul(h_re, self.C_re) - F.matmul(h_im, self.C_im) + x * self.D

    def _check_input(self, x, time_axis: bool) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))
        expected = "(N, T, features)" if time_axis else "(N, features)"
        if x.ndim != (3 if time_axis else 2) or x.shape[-1] != self.features:
            raise ShapeError(f"LRU: expected input {expected} with features {self.features}, got shape {x.shape}")
        if time_axis and x.shape[1] == 0:
            raise ShapeError(f"LRU: the input sequence is empty (shape {x.shape}, T = 0)")
        return x

    def _check_state(self, state, batch: int):
        if state is None:
            return None, None
        expected = (batch, self.state_size)
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise ShapeError(f"LRU: the state must be a pair (Re h, Im h) of shape {expected} each, got {type(state)}")
        parts = [s if isinstance(s, Tensor) else Tensor(backend.xp.asarray(s)) for s in state]
        if any(p.shape != expected for p in parts):
            raise ShapeError(f"LRU: the state parts have shapes {[p.shape for p in parts]}, expected "
                             f"(N, state_size) = {expected} each")
        return parts

    def forward(self, x, state=None) -> Tensor:
        """Outputs (N, T, features) from ``state`` (a pair (Re h, Im h); zeros if None)."""
        x = self._check_input(x, time_axis=True)
        h0_re, h0_im = self._check_state(state, x.shape[0])
        u_re, u_im = self._inputs(x)
        lam_re, lam_im = self.eigenvalues()
        zeros = u_re * 0.0
        h_re, h_im = complex_linear_scan(zeros + lam_re, zeros + lam_im, u_re, u_im, h0_re, h0_im)
        return self._readout(h_re, h_im, x)

    def step(self, x_t, state=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step: (y_t (N, features), new state (Re h_t, Im h_t))."""
        x_t = self._check_input(x_t, time_axis=False)
        h_re, h_im = self._check_state(state, x_t.shape[0])
        u_re, u_im = self._inputs(x_t)
        if h_re is not None:
            lam_re, lam_im = self.eigenvalues()
            u_re, u_im = lam_re * h_re - lam_im * h_im + u_re, lam_re * h_im + lam_im * h_re + u_im
        return self._readout(u_re, u_im, x_t), (u_re, u_im)

    def get_config(self) -> dict:
        return {"features": self.features, "state_size": self.state_size, "r_min": self.r_min, "r_max": self.r_max,
                "max_phase": self.max_phase, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.features}, state_size={self.state_size}, r_min={self.r_min}, r_max={self.r_max}"
