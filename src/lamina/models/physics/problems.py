"""Problem definitions for physics-informed networks: a PDE residual, a box domain, and the
boundary and initial conditions, with the exact solution where one is known.

* :class:`Poisson1D`: -u'' = f on [a, b], u(a), u(b) given (default f = pi^2 sin(pi x) on
  [-1, 1], whose solution is u = sin(pi x)).
* :class:`Heat1D`: u_t = alpha u_xx on [0, L] x [0, T], u = 0 at x = 0 and x = L,
  u(x, 0) = sin(n pi x / L); solution exp(-alpha (n pi / L)^2 t) sin(n pi x / L).
* :class:`Burgers1D`: u_t + u u_x = nu u_xx on [-1, 1] x [0, 1], nu = 0.01 / pi, u = 0 at
  x = +-1, u(x, 0) = -sin(pi x) (Raissi et al. 2019); it forms a steep front at x = 0.

Inputs are rows of the points array: (x,) for Poisson, (x, t) for heat and Burgers.
A new problem subclasses :class:`PDEProblem` and defines :meth:`PDEProblem.residual`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from lamina.autograd import Tensor
from lamina.models.physics.derivatives import derivative

__all__ = ["Burgers1D", "Heat1D", "PDEProblem", "Poisson1D"]

Conditions = tuple[numpy.ndarray, numpy.ndarray]


class PDEProblem:
    """A PDE on the box ``lower`` <= x <= ``upper`` (one bound per input coordinate).

    :meth:`residual` gives the equation's residual from the network's output u (N, 1) at the
    points x (N, d) it was computed from (x requires grad: use :func:`derivative`);
    :meth:`boundary_data` and :meth:`initial_data` give (points, values) to match, or None.
    """

    def __init__(self, lower, upper):
        self.lower = numpy.asarray(lower, dtype=numpy.float64).reshape(-1)
        self.upper = numpy.asarray(upper, dtype=numpy.float64).reshape(-1)
        if self.lower.shape != self.upper.shape or not numpy.all(self.lower < self.upper):
            raise ValueError(f"{type(self).__name__}: the domain needs lower < upper in every coordinate, got "
                             f"lower={self.lower.tolist()}, upper={self.upper.tolist()}")

    @property
    def input_dim(self) -> int:
        return len(self.lower)

    def residual(self, u: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.residual: a PDEProblem subclass must define it")

    def sample_interior(self, n: int, rng: numpy.random.Generator) -> numpy.ndarray:
        """``n`` points drawn uniformly in the box, (n, d)."""
        return self.lower + (self.upper - self.lower) * rng.random((n, self.input_dim))

    def boundary_data(self, n: int, rng: numpy.random.Generator) -> Conditions | None:
        return None

    def initial_data(self, n: int, rng: numpy.random.Generator) -> Conditions | None:
        return None

    def solution(self, points) -> numpy.ndarray:
        raise NotImplementedError(f"{type(self).__name__}: no exact solution is known")


def _sine_source(x: numpy.ndarray) -> numpy.ndarray:
    return math.pi ** 2 * numpy.sin(math.pi * x)


def _sine_solution(x: numpy.ndarray) -> numpy.ndarray:
    return numpy.sin(math.pi * x)


class Poisson1D(PDEProblem):
    """-u''(x) = f(x) on [a, b] = ``domain`` with u(a), u(b) = ``boundary_values``.

    ``source`` f maps points (N, 1) to (N, 1) (NumPy); ``solution`` (same form) is the exact
    u if known. Without a source: f = pi^2 sin(pi x) and u = sin(pi x) (zero at every integer).
    """

    def __init__(self, source: Callable | None = None, domain=(-1.0, 1.0), boundary_values=(0.0, 0.0),
                 solution: Callable | None = None):
        super().__init__([domain[0]], [domain[1]])
        if source is None:
            source, solution = _sine_source, solution or _sine_solution
        self.source, self.exact = source, solution
        self.boundary_values = tuple(float(v) for v in boundary_values)

    def residual(self, u: Tensor, x: Tensor) -> Tensor:
        f = numpy.asarray(self.source(numpy.asarray(x.data)), dtype=x.dtype).reshape(-1, 1)
        return -derivative(u, x, wrt=0, order=2) - Tensor._wrap(f)

    def boundary_data(self, n: int, rng: numpy.random.Generator) -> Conditions:
        """The two end points (``n`` is not used)."""
        points = numpy.array([[self.lower[0]], [self.upper[0]]])
        return points, numpy.array(self.boundary_values).reshape(2, 1)

    def solution(self, points) -> numpy.ndarray:
        if self.exact is None:
            return super().solution(points)
        return numpy.asarray(self.exact(numpy.asarray(points, dtype=numpy.float64)))


class _SpaceTime(PDEProblem):
    """Inputs (x, t) on [x0, x1] x [0, T], u = 0 at both ends of space."""

    def boundary_data(self, n: int, rng: numpy.random.Generator) -> Conditions:
        """``n`` points on the two ends x = x0, x = x1 (alternating), t uniform; u = 0 there."""
        ends = numpy.where(numpy.arange(n) % 2 == 0, self.lower[0], self.upper[0])
        times = self.upper[1] * rng.random(n)
        return numpy.stack([ends, times], axis=1), numpy.zeros((n, 1))

    def initial_data(self, n: int, rng: numpy.random.Generator) -> Conditions:
        """``n`` points at t = 0, x uniform, with the initial profile u(x, 0)."""
        x = self.lower[0] + (self.upper[0] - self.lower[0]) * rng.random(n)
        return numpy.stack([x, numpy.zeros(n)], axis=1), self.initial_profile(x).reshape(n, 1)

    def initial_profile(self, x: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError


class Heat1D(_SpaceTime):
    """u_t = alpha u_xx on [0, ``length``] x [0, ``t_end``], u = 0 at both ends, u(x, 0) =
    sin(n pi x / L) with n = ``mode``; exact u = exp(-alpha (n pi / L)^2 t) sin(n pi x / L)."""

    def __init__(self, alpha: float = 0.4, length: float = 1.0, t_end: float = 1.0, mode: int = 1):
        if not alpha > 0:
            raise ValueError(f"Heat1D: alpha must be positive, got {alpha!r}")
        super().__init__([0.0, 0.0], [length, t_end])
        self.alpha, self.length, self.mode = float(alpha), float(length), int(mode)

    def residual(self, u: Tensor, x: Tensor) -> Tensor:
        return derivative(u, x, wrt=1) - self.alpha * derivative(u, x, wrt=0, order=2)

    def initial_profile(self, x: numpy.ndarray) -> numpy.ndarray:
        return numpy.sin(self.mode * math.pi * x / self.length)

    def solution(self, points) -> numpy.ndarray:
        points = numpy.asarray(points, dtype=numpy.float64)
        x, t = points[:, :1], points[:, 1:2]
        rate = self.alpha * (self.mode * math.pi / self.length) ** 2
        return numpy.exp(-rate * t) * self.initial_profile(x)


class Burgers1D(_SpaceTime):
    """u_t + u u_x = nu u_xx on [-1, 1] x [0, ``t_end``], nu = 0.01 / pi by default, u = 0 at
    x = +-1, u(x, 0) = -sin(pi x). No closed form: compare with a numerical solution."""

    def __init__(self, nu: float = 0.01 / math.pi, t_end: float = 1.0):
        if not nu > 0:
            raise ValueError(f"Burgers1D: nu must be positive, got {nu!r}")
        super().__init__([-1.0, 0.0], [1.0, t_end])
        self.nu = float(nu)

    def residual(self, u: Tensor, x: Tensor) -> Tensor:
        u_x = derivative(u, x, wrt=0)
        return derivative(u, x, wrt=1) + u * u_x - self.nu * derivative(u_x, x, wrt=0)

    def initial_profile(self, x: numpy.ndarray) -> numpy.ndarray:
        return -numpy.sin(math.pi * x)
