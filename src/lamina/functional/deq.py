"""Deep equilibrium layers (Bai, Kolter and Koltun, 2019): the output is the fixed point
z* = f(z*, x), found by a solver with the graph off, and differentiated implicitly.

Differentiating z* = f(z*, x; theta) gives dz* = J dz* + df, J = df/dz at z*, so for a loss L

    dL/dx = g^T df/dx,   dL/dtheta = g^T df/dtheta,   where   g = J^T g + dL/dz*,

a second fixed point, solved by the same kind of solver; each step is one vector-Jacobian
product g^T J taken by backward through ONE recorded call of f at z*. Memory does not grow
with the number of forward iterations (none of them is recorded).

``gradient='phantom'`` instead returns z = f(z*, x) recorded once: the Jacobian-free gradient
of Fung et al. 2022, which drops the inverse (I - J)^{-1}; ``phantom_steps`` damped steps
z <- (1 - tau) z + tau f(z, x) from z* give Geng et al.'s (2021) phantom gradients.
:func:`jacobian_penalty` gives Bai et al.'s (2021) Hutchinson estimate of ||J||_F^2 / dim for a
regularising term. The implicit gradient is first order only: differentiating it again
(``create_graph=True``) raises; the phantom gradient, being recorded steps of f, has all orders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor, enable_grad, grad, no_grad
from lamina.errors import ShapeError
from lamina.functional.fixed_point import SOLVERS, FixedPointResult, solve_fixed_point

__all__ = ["DEQStats", "deq_fixed_point", "jacobian_penalty"]

GRADIENTS = ("implicit", "phantom")


@dataclass
class DEQStats:
    """The solvers' results of one call: ``forward`` (z* = f(z*, x)) and ``backward`` (the
    implicit gradient's fixed point g = J^T g + dL/dz*; None until a backward pass ran, and
    always for the phantom gradient)."""

    forward: FixedPointResult | None = None
    backward: FixedPointResult | None = None


def deq_fixed_point(f: Callable, x, z0=None, params: Sequence[Tensor] | None = None, solver: str = "anderson",
                    tol: float = 1e-6, max_iter: int = 50, solver_options: dict | None = None,
                    backward_solver: str | None = None, backward_tol: float | None = None,
                    backward_max_iter: int | None = None, gradient: str = "implicit", phantom_steps: int = 1,
                    phantom_damping: float = 1.0, raise_on_failure: bool = False,
                    stats: DEQStats | None = None) -> Tensor:
    """z* with z* = ``f(z*, x)`` (module docstring), differentiable in ``x`` and ``params``.

    ``f(z, x)`` returns a tensor of z's shape. ``z0``: the start (zeros of x's shape by default).
    ``params``: the tensors f reads that get gradients (a module's trainable parameters when f
    is a module). ``solver``: ``'anderson'``, ``'broyden'`` or ``'fixed_point'``, with ``tol``,
    ``max_iter`` and any other keywords of that solver in ``solver_options``; the backward
    solve uses ``backward_solver``, ``backward_tol`` and ``backward_max_iter`` (the forward
    ones by default). ``raise_on_failure``: raise :class:`FixedPointError` when a solve does
    not reach its tolerance (by default the best iterate is used, as DEQ training does).
    ``stats``: a :class:`DEQStats` filled with the solvers' results.
    """
    who = "deq_fixed_point"
    if not callable(f):
        raise TypeError(f"{who}: f must be callable as f(z, x), got {type(f).__name__}")
    if gradient not in GRADIENTS:
        raise ValueError(f"{who}: gradient must be one of {GRADIENTS}, got {gradient!r}")
    for name, value in (("solver", solver), ("backward_solver", backward_solver)):
        if value is not None and value not in SOLVERS:
            raise ValueError(f"{who}: unknown {name} {value!r}; expected one of {sorted(SOLVERS)}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    z0 = Tensor._wrap(backend.xp.zeros(x.shape, dtype=x.dtype)) if z0 is None else z0
    z0 = z0 if isinstance(z0, Tensor) else Tensor(z0, dtype=numpy.asarray(z0).dtype)
    if params is None:
        params = f.parameters() if callable(getattr(f, "parameters", None)) else []
    params = [p for p in params if isinstance(p, Tensor) and p.requires_grad]
    options = dict(solver_options or {}, tol=tol, max_iter=max_iter, raise_on_failure=raise_on_failure)
    backward_options = dict(options)
    backward_options.update({k: v for k, v in (("tol", backward_tol), ("max_iter", backward_max_iter))
                             if v is not None})
    if backward_solver is not None and backward_solver != solver:
        backward_options = {k: backward_options[k] for k in ("tol", "max_iter", "raise_on_failure")}
    stats = DEQStats() if stats is None else stats
    if gradient == "phantom":
        return _phantom(f, x, z0, solver, options, phantom_steps, phantom_damping, stats, who)
    return EquilibriumSolve.apply(x, *params, f=f, z0=z0.data, params=params, solver=solver, options=options,
                                  backward_solver=backward_solver or solver, backward_options=backward_options,
                                  stats=stats, who=who)


def _forward_solve(f: Callable, x: Tensor, z0, solver: str, options: dict, stats: DEQStats, who: str) -> Tensor:
    x_constant = Tensor._wrap(x.data)
    with no_grad():
        z_start = Tensor._wrap(z0)
        _check_shape(f(z_start, x_constant), z_start, who)
        result = solve_fixed_point(solver, lambda z: f(z, x_constant), Tensor._wrap(z0), **options)
    stats.forward = result
    return result.solution


def _check_shape(out, z: Tensor, who: str) -> None:
    if not isinstance(out, Tensor) or out.shape != z.shape:
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ShapeError(f"{who}: f(z, x) returned {shape} for z of shape {tuple(z.shape)}; an equilibrium "
                         "layer needs a tensor of z's shape")


def _phantom(f: Callable, x: Tensor, z0: Tensor, solver: str, options: dict, steps: int, damping: float,
             stats: DEQStats, who: str) -> Tensor:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{who}: phantom_steps must be an int >= 1, got {steps!r}")
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"{who}: phantom_damping must be in (0, 1], got {damping!r}")
    z = _forward_solve(f, x, z0.data, solver, options, stats, who)
    for _ in range(steps):
        z = f(z, x) if damping == 1.0 else (1.0 - damping) * z + damping * f(z, x)
    return z


class EquilibriumSolve(Function):
    """z* as one node over (x, parameters); backward solves g = J^T g + dy by vector-Jacobian
    products through one recorded call of f. Keywords: ``f``, ``z0`` (an array), ``params``,
    ``solver``, ``options``, ``backward_solver``, ``backward_options``, ``stats``, ``who``."""

    def forward(self, x, *param_arrays):
        self.x = x
        self.z_star = _forward_solve(self.f, Tensor._wrap(x), self.z0, self.solver, self.options, self.stats,
                                     self.who).data
        return self.z_star.copy()

    def backward(self, dy):
        needs = self.needs_grad
        with enable_grad():
            z_leaf = Tensor(self.z_star, requires_grad=True, dtype=self.z_star.dtype)
            x_leaf = Tensor(self.x, requires_grad=needs[0], dtype=self.x.dtype)
            out = self.f(z_leaf, x_leaf)
        wanted = [x_leaf] if needs[0] else []
        wanted += [p for p, need in zip(self.params, needs[1:]) if need]
        if not out.requires_grad:               # f reads neither z, x nor the parameters
            self.stats.backward = None
            return tuple(None for _ in needs)

        def transposed_step(g: Tensor) -> Tensor:
            (vjp,) = grad(out, [z_leaf], g.data, retain_graph=True, allow_unused=True)
            return Tensor._wrap(dy if vjp is None else vjp + dy)

        result = solve_fixed_point(self.backward_solver, transposed_step, Tensor._wrap(dy.copy()),
                                   **self.backward_options)
        self.stats.backward = result
        found = iter(grad(out, wanted, result.solution.data, allow_unused=True) if wanted else [])
        grads = []
        for t, need in zip(self.inputs, needs):
            g = next(found) if need else None
            grads.append(backend.xp.zeros(t.shape, dtype=t.dtype) if need and g is None else g)
        return tuple(grads)


def jacobian_penalty(f: Callable, z, x, samples: int = 1, seed: int | None = None) -> Tensor:
    """Hutchinson's estimate of ||J||_F^2 / dim, J = df/dz at ``z`` (Bai et al. 2021): the mean over
    ``samples`` Gaussian vectors eps of ||eps^T J||^2 / z.size. Recorded with ``create_graph``,
    so it can be added to a loss and differentiated (in x and f's parameters, z being fixed:
    pass the equilibrium, detached)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"jacobian_penalty: samples must be an int >= 1, got {samples!r}")
    z_data = z.data if isinstance(z, Tensor) else backend.xp.asarray(z)
    z_leaf = Tensor(z_data, requires_grad=True, dtype=z_data.dtype)
    with enable_grad():
        out = f(z_leaf, x)
        _check_shape(out, z_leaf, "jacobian_penalty")
        generator = backend.rng() if seed is None else numpy.random.default_rng(seed)
        total = None
        for _ in range(samples):
            eps = generator.standard_normal(z_data.shape).astype(z_data.dtype)
            (vjp,) = grad(out, [z_leaf], eps, create_graph=True)
            term = (vjp * vjp).sum()
            total = term if total is None else total + term
    return total * (1.0 / (samples * z_data.size))
