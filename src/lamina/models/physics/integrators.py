"""Symplectic integrators for Hamiltonian systems, on any vector field.

``field(states)`` returns the time derivative (dq/dt, dp/dt) of states (..., 2n) = (q, p) side
by side (an array or a tensor: a NumPy function, :meth:`HamiltonianNN.field`, ...). With step h:

* :func:`leapfrog` (= :func:`stormer_verlet`), kick-drift-kick, second order::

      p_1/2 = p_0 + h/2 dp/dt(q_0, p_0)
      q_1   = q_0 + h   dq/dt(q_0, p_1/2)
      p_1   = p_1/2 + h/2 dp/dt(q_1, p_1/2)

* :func:`symplectic_euler`, first order: p_1 = p_0 + h dp/dt(q_0, p_0), then
  q_1 = q_0 + h dq/dt(q_0, p_1).

For a separable H(q, p) = T(p) + V(q) (dp/dt depends on q only, dq/dt on p only) both are
symplectic: the energy error stays bounded for all time, O(h^2) for leapfrog and O(h) for
symplectic Euler, instead of drifting as with explicit Runge-Kutta methods. For a
non-separable H (a learned one) they remain explicit, time-reversible (leapfrog) schemes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy

__all__ = ["leapfrog", "stormer_verlet", "symplectic_euler"]


def _prepare(state, dt, steps, where: str) -> tuple[numpy.ndarray, int]:
    array = numpy.array(state.numpy() if hasattr(state, "numpy") else state, dtype=numpy.float64)
    if array.ndim < 1 or array.shape[-1] % 2 or array.shape[-1] == 0:
        raise ValueError(f"{where}: the state must end in an axis of even size 2n, (q, p) side by side, "
                         f"got shape {array.shape}")
    if not dt > 0:
        raise ValueError(f"{where}: dt must be positive, got {dt!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}: steps must be a positive int, got {steps!r}")
    return array, array.shape[-1] // 2


def _evaluate(field: Callable, q: numpy.ndarray, p: numpy.ndarray, where: str) -> numpy.ndarray:
    state = numpy.concatenate([q, p], axis=-1)
    rate = field(state)
    rate = numpy.asarray(rate.numpy() if hasattr(rate, "numpy") else rate, dtype=numpy.float64)
    if rate.shape != state.shape:
        raise ValueError(f"{where}: the field must return an array of the state's shape {state.shape}, "
                         f"got {rate.shape}")
    return rate


def leapfrog(field: Callable, state, dt: float, steps: int) -> numpy.ndarray:
    """The trajectory (steps + 1, *state.shape) from ``state`` by kick-drift-kick steps of ``dt``
    (module docstring), the first row being ``state``; float64."""
    x, n = _prepare(state, dt, steps, "leapfrog")
    trajectory = [x]
    q, p = x[..., :n], x[..., n:]
    for _ in range(steps):
        p_half = p + 0.5 * dt * _evaluate(field, q, p, "leapfrog")[..., n:]
        q = q + dt * _evaluate(field, q, p_half, "leapfrog")[..., :n]
        p = p_half + 0.5 * dt * _evaluate(field, q, p_half, "leapfrog")[..., n:]
        trajectory.append(numpy.concatenate([q, p], axis=-1))
    return numpy.stack(trajectory)


stormer_verlet = leapfrog


def symplectic_euler(field: Callable, state, dt: float, steps: int) -> numpy.ndarray:
    """The trajectory (steps + 1, *state.shape) by symplectic Euler steps (momentum first)."""
    x, n = _prepare(state, dt, steps, "symplectic_euler")
    trajectory = [x]
    q, p = x[..., :n], x[..., n:]
    for _ in range(steps):
        p = p + dt * _evaluate(field, q, p, "symplectic_euler")[..., n:]
        q = q + dt * _evaluate(field, q, p, "symplectic_euler")[..., :n]
        trajectory.append(numpy.concatenate([q, p], axis=-1))
    return numpy.stack(trajectory)
