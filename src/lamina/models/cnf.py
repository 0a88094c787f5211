"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019).

A sample moves along dz/dt = f(z, t) from x = z(0) to the code z(T); by the instantaneous
change of variables d log p(z(t)) / dt = -tr(df/dz), so

    log p(x) = log N(z(T); 0, I) + int_0^T tr(df/dz(z(t), t)) dt,

the integral being the flow's log|det dz(T)/dx|. It is solved with lamina's ``odeint`` on the
augmented state (z, the integral) (``adjoint=True``: ``odeint_adjoint``, memory constant in the
steps). The trace is exact (one backward pass per dimension: small dimensions) or Hutchinson's
unbiased estimate tr(J) ~ e^T J e with e drawn once per solve, Gaussian or Rademacher (one
backward pass). ``kinetic_energy=True`` also integrates ||f||^2 (the RNODE regularizer of
Finlay et al. 2020), which :meth:`CNF.integrate` returns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, checkpoint, enable_grad, grad, is_grad_enabled, no_grad
from lamina.errors import ShapeError
from lamina.models.flows import InvertibleLayer, _hidden_sizes, _sample_dtype
from lamina.nn import Dense, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["CNF", "CNFDynamics", "CNFResult", "TRACE_ESTIMATORS", "TRACE_NOISE", "exact_trace", "hutchinson_trace"]

TRACE_ESTIMATORS = ("exact", "hutchinson")
TRACE_NOISE = ("gaussian", "rademacher")


@register_with_arguments
class CNFDynamics(Module):
    """f(z, t): a Dense network (``hidden`` widths, ``activation``) that sees the time as one
    more input at every layer; ``forward(t, z)`` as the ODE solvers call it."""

    def __init__(self, dim: int, hidden=(64, 64), activation: str = "tanh", name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "CNFDynamics: dim")
        self.hidden = _hidden_sizes(hidden, "CNFDynamics")
        self.layers = ModuleList([Dense(n, activation=activation) for n in self.hidden] + [Dense(self.dim)])

    def forward(self, t, z) -> Tensor:
        z = as_tensor(z)
        time = as_tensor(t).reshape(1, 1) + Tensor._wrap(backend.xp.zeros((z.shape[0], 1), dtype=z.dtype))
        h = z
        for layer in self.layers:
            h = layer(F.concat([h, time], axis=1))
        return h


def _as_tensor(gradient) -> Tensor:
    """A gradient from ``grad`` (a tensor with ``create_graph``, else an array) as a tensor of its dtype."""
    return gradient if isinstance(gradient, Tensor) else Tensor._wrap(gradient)


def exact_trace(f: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """tr(df/dz) per sample, one backward pass per dimension."""
    total = None
    for i in range(z.shape[1]):
        row = _as_tensor(grad(f[:, i].sum(), z, retain_graph=True, create_graph=create_graph)[0])
        total = row[:, i] if total is None else total + row[:, i]
    return total


def hutchinson_trace(f: Tensor, z: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
    """e^T (df/dz) e per sample: an unbiased estimate of the trace when E[e e^T] = I."""
    product = _as_tensor(grad(f, z, grad_output=noise, retain_graph=True, create_graph=create_graph)[0])
    return (product * noise).sum(axis=1)


class _Augmented(Module):
    """d/dt (z, int tr, int ||f||^2) = (f, tr(df/dz), ||f||^2): the right-hand side the solver sees.

    The rates are computed under :func:`checkpoint`, from a fresh leaf holding z: the trace's
    backward passes then walk this evaluation's graph only, not the solver's steps before it
    (which would make a solve's cost grow with the square of its steps)."""

    def __init__(self, dynamics, trace: str, noise: Tensor | None, kinetic: bool):
        super().__init__()
        self.dynamics, self.trace, self.noise, self.kinetic = dynamics, trace, noise, kinetic

    def _rates(self, t, z: Tensor, create_graph: bool) -> Tensor:
        """(f, tr, ||f||^2) side by side, (batch, features + 1 or 2)."""
        with enable_grad():
            if not z.requires_grad:
                z = Tensor(z.data, dtype=z.dtype, requires_grad=True)
            f = self.dynamics(t, z)
            if self.trace == "exact":
                trace = exact_trace(f, z, create_graph=create_graph)
            else:
                trace = hutchinson_trace(f, z, self.noise, create_graph=create_graph)
            parts = [f, trace.reshape(-1, 1)] + ([(f * f).sum(axis=1).reshape(-1, 1)] if self.kinetic else [])
            packed = F.concat(parts, axis=1)
        return packed if create_graph else Tensor._wrap(packed.data)

    def forward(self, t, state):
        z = state[0]
        if is_grad_enabled():
            packed = checkpoint(lambda leaf: self._rates(t, leaf, create_graph=True), z)
        else:
            packed = self._rates(t, z, create_graph=False)
        d = z.shape[1]
        return (packed[:, :d],) + tuple(packed[:, k] for k in range(d, packed.shape[1]))


class CNFResult(NamedTuple):
    """The end of a solve: the state, log|det| of the map, and int ||f||^2 dt per sample (or None)."""

    z: Tensor
    log_det: Tensor
    kinetic_energy: Tensor | None


@register_with_arguments(modules=("dynamics",))
class CNF(InvertibleLayer):
    """A continuous normalizing flow over (batch, features) with ``dynamics`` f(t, z) (a module
    called as ``dynamics(t, z)``, e.g. :class:`CNFDynamics`) integrated from 0 to ``end_time``.

    ``forward(x)`` -> (z(T), int tr(df/dz)); ``inverse(z)`` solves backwards; ``log_prob(x)``
    under the standard normal base; ``sample(n)``. ``trace``: ``'exact'`` or ``'hutchinson'``
    (with ``noise`` ``'gaussian'`` or ``'rademacher'``); ``method``, ``rtol``, ``atol``,
    ``options``: the solver's (see ``odeint``); ``adjoint``: solve the gradients by the adjoint
    method; ``kinetic_energy``: integrate ||f||^2 too (see :meth:`integrate`)."""

    def __init__(self, dynamics, end_time: float = 1.0, trace: str = "exact", noise: str = "gaussian",
                 method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, options: dict | None = None,
                 adjoint: bool = False, kinetic_energy: bool = False, name: str | None = None):
        super().__init__(name=name)
        if trace not in TRACE_ESTIMATORS:
            raise ValueError(f"CNF: unknown trace estimator {trace!r}; expected one of {TRACE_ESTIMATORS}")
        if noise not in TRACE_NOISE:
            raise ValueError(f"CNF: unknown noise {noise!r} for Hutchinson's estimator; expected one of {TRACE_NOISE}")
        if not callable(dynamics):
            raise TypeError(f"CNF: dynamics must be callable as dynamics(t, z), got {type(dynamics).__name__}")
        if not float(end_time) > 0:
            raise ValueError(f"CNF: end_time must be positive, got {end_time!r}")
        self.dynamics = dynamics
        self.end_time = float(end_time)
        self.trace, self.noise = trace, noise
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options
        self.adjoint, self.kinetic_energy = bool(adjoint), bool(kinetic_energy)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dim = getattr(self.dynamics, "dim", None)
        if dim is not None and dim != self.features:
            raise ShapeError(f"{self._label()}: the dynamics are for {dim} features but the input shape is "
                             f"{tuple(input_shape)}")

    def _draw_noise(self, z: Tensor) -> Tensor | None:
        if self.trace == "exact":
            return None
        rng = backend.rng()
        if self.noise == "gaussian":
            e = rng.standard_normal(z.shape)
        else:
            e = rng.integers(0, 2, z.shape) * 2.0 - 1.0
        return Tensor._wrap(backend.xp.asarray(e.astype(z.dtype)))

    def _solve(self, func, state, times):
        if self.adjoint:
            return F.odeint_adjoint(func, state, times, method=self.method, rtol=self.rtol, atol=self.atol,
                                    options=self.options)
        return F.odeint(func, state, times, method=self.method, rtol=self.rtol, atol=self.atol, options=self.options)

    def _integrate(self, z: Tensor, times) -> CNFResult:
        zeros = Tensor._wrap(backend.xp.zeros(z.shape[0], dtype=z.dtype))
        state = (z, zeros) + ((zeros,) if self.kinetic_energy else ())
        func = _Augmented(self.dynamics, self.trace, self._draw_noise(z), self.kinetic_energy)
        solution = self._solve(func, state, np.asarray(times, dtype=np.float64))
        ends = [part[-1] for part in solution]
        return CNFResult(ends[0], ends[1], ends[2] if self.kinetic_energy else None)

    def integrate(self, x) -> CNFResult:
        """x carried from t = 0 to T: (z(T), int_0^T tr(df/dz) dt, int_0^T ||f||^2 dt or None)."""
        return self._integrate(self._checked(x, "integrate"), [0.0, self.end_time])

    def _forward(self, x):
        result = self._integrate(x, [0.0, self.end_time])
        return result.z, result.log_det

    def _inverse(self, z):
        result = self._integrate(z, [self.end_time, 0.0])
        return result.z, result.log_det

    def log_prob(self, x) -> Tensor:
        """log N(z(T); 0, I) + int_0^T tr(df/dz) dt, per sample."""
        z, log_det = self.forward(x)
        return -0.5 * (z * z).sum(axis=1) - 0.5 * z.shape[1] * np.log(2.0 * np.pi) + log_det

    def sample(self, num_samples: int, dtype=None) -> Tensor:
        """``num_samples`` standard normal codes carried back from T to 0 (only z: no trace), off the graph."""
        dtype = _sample_dtype(self, num_samples, dtype)
        with no_grad():
            codes = backend.rng().standard_normal((num_samples, self.features)).astype(dtype)
            z = Tensor._wrap(backend.xp.asarray(codes))
            path = F.odeint(self.dynamics, z, np.array([self.end_time, 0.0]), method=self.method, rtol=self.rtol,
                            atol=self.atol, options=self.options)
        return path[-1]

    def extra_repr(self) -> str:
        return f"trace={self.trace!r}, end_time={self.end_time}, method={self.method!r}, adjoint={self.adjoint}"
