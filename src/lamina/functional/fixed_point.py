"""Fixed-point solvers: find z* = f(z*) for a map f on arrays or tensors.

Three solvers, each counting its evaluations of f and recording the residual after each:

* :func:`fixed_point_iteration`: z_{k+1} = (1 - tau) z_k + tau f(z_k) (plain iteration for tau = 1);
* :func:`anderson_acceleration`: the next iterate mixes the last m iterates with the weights
  alpha that minimise ||sum_i alpha_i (f(z_i) - z_i)||^2 + lam ||alpha||^2 subject to
  sum_i alpha_i = 1 (a small (m + 1) x (m + 1) linear system; lam is scaled by the largest
  ||f(z_i) - z_i||^2 unless ``relative_lam=False``), then
  z_{k+1} = beta sum_i alpha_i f(z_i) + (1 - beta) sum_i alpha_i z_i;
* :func:`broyden`: a root of g(z) = f(z) - z by quasi-Newton steps z <- z - H g(z), H the
  inverse Jacobian estimate -I + U V^T updated by Broyden's "good" rank-one rule
  (H <- H + (dz - H dg) dz^T H / (dz^T H dg)), keeping the last ``memory`` pairs (u, v).

A tensor z0 of two or more axes is a batch (axis 0): Anderson's and Broyden's small systems
are solved per sample; the stopping residual is over the whole batch. The residual of an
iterate z is ||f(z) - z|| (``stop_mode='abs'``) or that over ||f(z)|| + 1e-9 (``'rel'``, the
default). f runs with the graph off; a tensor z0 gives a tensor solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy

from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError

__all__ = ["FixedPointError", "FixedPointResult", "SOLVERS", "anderson_acceleration", "broyden",
           "fixed_point_iteration", "solve_fixed_point"]

_RELATIVE_GUARD = 1e-9


class FixedPointError(RuntimeError):
    """A fixed-point solver stopped at ``max_iter`` without reaching its tolerance."""


@dataclass
class FixedPointResult:
    """What a solver found: the ``solution`` (the iterate with the smallest residual; an array
    or a tensor as z0 was), the ``residuals`` after each evaluation of f, the number of
    evaluations (``steps``), whether the tolerance was met, and the solver's name."""

    solution: object
    residuals: list[float] = field(default_factory=list)
    steps: int = 0
    converged: bool = False
    solver: str = ""

    @property
    def residual(self) -> float:
        """The smallest residual reached (that of ``solution``)."""
        return min(self.residuals) if self.residuals else math.inf


def _check_count(value, name: str, who: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}")


class _Problem:
    """f as a map on (batch, n) float arrays, with the bookkeeping every solver shares."""

    def __init__(self, f: Callable, z0, tol: float, max_iter: int, stop_mode: str, who: str):
        if not callable(f):
            raise TypeError(f"{who}: f must be callable, got {type(f).__name__}")
        _check_count(max_iter, "max_iter", who)
        if not tol >= 0:
            raise ValueError(f"{who}: tol must be >= 0, got {tol!r}")
        if stop_mode not in ("rel", "abs"):
            raise ValueError(f"{who}: stop_mode must be 'rel' or 'abs', got {stop_mode!r}")
        self.f, self.tol, self.max_iter, self.stop_mode, self.who = f, tol, max_iter, stop_mode, who
        self.as_tensor = isinstance(z0, Tensor)
        start = numpy.asarray(z0.data if self.as_tensor else z0)
        if start.dtype.kind != "f":
            start = start.astype(numpy.float64)
        self.shape, self.dtype = start.shape, start.dtype
        batch = start.shape[0] if start.ndim >= 2 else 1
        self.start = start.reshape(batch, -1).copy()
        self.residuals: list[float] = []
        self.best, self.best_residual = self.start, math.inf

    def __call__(self, z: numpy.ndarray) -> numpy.ndarray:
        """f(z) on the flat batch."""
        value = z.reshape(self.shape)
        if self.as_tensor:
            with no_grad():
                out = self.f(Tensor._wrap(value))
            out = out.data if isinstance(out, Tensor) else numpy.asarray(out)
        else:
            out = numpy.asarray(self.f(value))
        if out.shape != self.shape:
            raise ShapeError(f"{self.who}: f returned shape {tuple(out.shape)} for z of shape {tuple(self.shape)}; "
                             "a fixed point needs f(z) of z's shape")
        return out.reshape(z.shape).astype(self.dtype, copy=False)

    def record(self, z: numpy.ndarray, fz: numpy.ndarray) -> bool:
        """Note the residual of z (f(z) given); True once it is within tolerance."""
        gap = float(numpy.linalg.norm(fz - z))
        residual = gap / (_RELATIVE_GUARD + float(numpy.linalg.norm(fz))) if self.stop_mode == "rel" else gap
        self.residuals.append(residual)
        if not residual >= self.best_residual:         # also takes the first, and a NaN never wins
            self.best, self.best_residual = z.copy(), residual
        return residual <= self.tol

    def result(self, converged: bool, raise_on_failure: bool) -> FixedPointResult:
        if not converged and raise_on_failure:
            raise FixedPointError(
                f"{self.who}: did not converge in {len(self.residuals)} evaluations of f: smallest residual "
                f"{self.best_residual:.3g} ({self.stop_mode}), tolerance {self.tol:.3g}; raise max_iter, loosen tol, "
                "or make f a contraction")
        solution = self.best.reshape(self.shape)
        if self.as_tensor:
            solution = Tensor._wrap(solution)
        return FixedPointResult(solution, list(self.residuals), len(self.residuals), converged, self.who)


def fixed_point_iteration(f: Callable, z0, tol: float = 1e-6, max_iter: int = 100, damping: float = 1.0,
                          stop_mode: str = "rel", raise_on_failure: bool = True) -> FixedPointResult:
    """z* = f(z*) by z_{k+1} = (1 - damping) z_k + damping f(z_k) from ``z0``, at most ``max_iter``
    evaluations of f. Converges when f is a contraction (for damping = 1)."""
    problem = _Problem(f, z0, tol, max_iter, stop_mode, "fixed_point_iteration")
    z = problem.start
    for _ in range(max_iter):
        fz = problem(z)
        if problem.record(z, fz):
            return problem.result(True, raise_on_failure)
        z = fz if damping == 1.0 else (1.0 - damping) * z + damping * fz
    return problem.result(False, raise_on_failure)


def anderson_acceleration(f: Callable, z0, m: int = 5, lam: float = 1e-4, beta: float = 1.0, tol: float = 1e-6,
                          max_iter: int = 50, stop_mode: str = "rel", relative_lam: bool = True,
                          raise_on_failure: bool = True) -> FixedPointResult:
    """z* = f(z*) by Anderson acceleration over the last ``m`` iterates (module docstring):
    ``lam`` regularises the small least-squares system, ``beta`` mixes f's values (1) with the
    iterates themselves (0). At most ``max_iter`` evaluations of f.

    ``relative_lam=True`` (the default) scales ``lam`` by the largest squared residual norm
    among the kept iterates, so the regularisation fades as the residuals shrink; with
    ``False`` it is added as it is, as in the implicit-layers tutorial, where a fixed ``lam``
    ends up dominating once the residuals fall below about sqrt(lam) and the iteration
    slows to a running average of the last m steps (fine for tolerances of 1e-2 to 1e-4)."""
    who = "anderson_acceleration"
    _check_count(m, "m", who)
    problem = _Problem(f, z0, tol, max_iter, stop_mode, who)
    batch, n = problem.start.shape
    xs = numpy.zeros((batch, m, n), dtype=problem.dtype)
    fs = numpy.zeros((batch, m, n), dtype=problem.dtype)
    z = problem.start
    for k in range(max_iter):
        fz = problem(z)
        xs[:, k % m], fs[:, k % m] = z, fz
        if problem.record(z, fz):
            return problem.result(True, raise_on_failure)
        if k == 0:
            z = fz
            continue
        count = min(k + 1, m)
        gaps = fs[:, :count] - xs[:, :count]                              # (batch, count, n)
        system = numpy.zeros((batch, count + 1, count + 1), dtype=numpy.float64)
        system[:, 0, 1:] = system[:, 1:, 0] = 1.0
        gram = gaps @ gaps.transpose(0, 2, 1)
        scale = numpy.diagonal(gram, axis1=1, axis2=2).max(axis=1)[:, None, None] if relative_lam else 1.0
        system[:, 1:, 1:] = gram + lam * scale * numpy.eye(count)
        rhs = numpy.zeros((batch, count + 1, 1))
        rhs[:, 0] = 1.0
        alpha = numpy.linalg.solve(system, rhs)[:, 1:, 0].astype(problem.dtype)          # (batch, count)
        mixed_f = numpy.einsum("bi,bin->bn", alpha, fs[:, :count])
        z = mixed_f if beta == 1.0 else beta * mixed_f + (1.0 - beta) * numpy.einsum("bi,bin->bn", alpha,
                                                                                      xs[:, :count])
    return problem.result(False, raise_on_failure)


def broyden(f: Callable, z0, tol: float = 1e-6, max_iter: int = 50, memory: int | None = None,
            stop_mode: str = "rel", raise_on_failure: bool = True) -> FixedPointResult:
    """z* = f(z*) as the root of g(z) = f(z) - z by limited-memory Broyden steps (module
    docstring), keeping the last ``memory`` rank-one updates (all of them by default).
    At most ``max_iter`` evaluations of f."""
    who = "broyden"
    memory = max_iter if memory is None else memory
    _check_count(memory, "memory", who)
    problem = _Problem(f, z0, tol, max_iter, stop_mode, who)
    batch, n = problem.start.shape
    us = numpy.zeros((batch, n, memory), dtype=problem.dtype)
    vts = numpy.zeros((batch, memory, n), dtype=problem.dtype)
    z = problem.start
    fz = problem(z)
    if problem.record(z, fz):
        return problem.result(True, raise_on_failure)
    gz = fz - z
    step = gz                                                # -H g with H = -I to start
    for k in range(max_iter - 1):
        z_new = z + step
        fz = problem(z_new)
        if problem.record(z_new, fz):
            return problem.result(True, raise_on_failure)
        g_new = fz - z_new
        dz, dg = z_new - z, g_new - gz
        z, gz = z_new, g_new
        stored = min(k, memory)
        u_old, vt_old = us[:, :, :stored], vts[:, :stored]
        vt = _times_inverse_jacobian_left(u_old, vt_old, dz)              # dz^T H
        denominator = numpy.einsum("bn,bn->b", vt, dg)[:, None]
        denominator = numpy.where(numpy.abs(denominator) < 1e-30, 1e-30, denominator)
        u = (dz - _times_inverse_jacobian(u_old, vt_old, dg)) / denominator
        us[:, :, k % memory], vts[:, k % memory] = u, vt
        stored = min(k + 1, memory)
        step = -_times_inverse_jacobian(us[:, :, :stored], vts[:, :stored], gz)
    return problem.result(False, raise_on_failure)


def _times_inverse_jacobian(us: numpy.ndarray, vts: numpy.ndarray, x: numpy.ndarray) -> numpy.ndarray:
    """H x for H = -I + U V^T, per sample."""
    return -x + numpy.einsum("bnk,bk->bn", us, numpy.einsum("bkn,bn->bk", vts, x))


def _times_inverse_jacobian_left(us: numpy.ndarray, vts: numpy.ndarray, x: numpy.ndarray) -> numpy.ndarray:
    """x^T H for H = -I + U V^T, per sample."""
    return -x + numpy.einsum("bk,bkn->bn", numpy.einsum("bn,bnk->bk", x, us), vts)


SOLVERS = {"fixed_point": fixed_point_iteration, "anderson": anderson_acceleration, "broyden": broyden}


def solve_fixed_point(solver: str, f: Callable, z0, **options) -> FixedPointResult:
    """Run the solver named ``solver`` (a key of :data:`SOLVERS`) with its keyword ``options``."""
    if solver not in SOLVERS:
        raise ValueError(f"solve_fixed_point: unknown solver {solver!r}; expected one of {sorted(SOLVERS)}")
    return SOLVERS[solver](f, z0, **options)
