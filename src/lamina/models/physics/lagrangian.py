"""Lagrangian neural networks (Cranmer, Greydanus, Hoyer, Battaglia, Spergel & Ho 2020).

A network gives a scalar L(q, q'); the Euler-Lagrange equations d/dt dL/dq' = dL/dq, expanded
by the chain rule, give the acceleration::

    q'' = (grad_q' grad_q'^T L)^-1 [grad_q L - (grad_q grad_q'^T L) q']

with (grad_q' grad_q'^T L)_ij = d2L/dq'_i dq'_j and (grad_q grad_q'^T L)_ij = d2L/dq'_i dq_j.
Unlike a Hamiltonian network it needs no canonical momenta: states are (q, q').
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lamina import functional as F
from lamina.autograd import Tensor, enable_grad, grad
from lamina.errors import ShapeError
from lamina.functional.linalg import solve
from lamina.models.physics._state import (
    as_column,
    check_state,
    field_array,
    fit_pairs,
    gradient_or_zeros,
    leaf,
    mean_squared,
    parameter_dtype,
    scalar_network,
)
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["LagrangianNN", "lagrangian_acceleration"]


def lagrangian_acceleration(lagrangian: Callable, q, qdot, create_graph: bool = True) -> Tensor:
    """q'' (N, n) from the Euler-Lagrange equations (module docstring) for any ``lagrangian``
    mapping tensors q, q' (N, n) to L (N,) or (N, 1). One backward pass per coordinate builds
    the Hessian blocks; the (N, n, n) systems are solved together. Gradients are recorded
    even under ``no_grad``."""
    q, qdot = leaf(q), leaf(qdot)
    if q.ndim != 2 or tuple(q.shape) != tuple(qdot.shape):
        raise ShapeError(f"lagrangian_acceleration: q and q' must both have shape (N, n), got "
                         f"{tuple(q.shape)} and {tuple(qdot.shape)}")
    with enable_grad():
        value = as_column(lagrangian(q, qdot), q.shape[0], "lagrangian_acceleration")
        dl_dq, dl_dqdot = (gradient_or_zeros(g, t) for g, t in
                           zip(grad(value.sum(), [q, qdot], allow_unused=True, create_graph=True), (q, qdot)))
        mass_rows, mixed_rows = [], []
        for i in range(q.shape[1]):
            component = dl_dqdot[:, i]
            rows = grad(component.sum(), [q, qdot], allow_unused=True, create_graph=True) \
                if component.requires_grad else (None, None)
            mixed_rows.append(gradient_or_zeros(rows[0], q))
            mass_rows.append(gradient_or_zeros(rows[1], qdot))
        mass = F.stack(mass_rows, axis=1)
        mixed = F.stack(mixed_rows, axis=1)
        force = dl_dq - F.einsum("nij,nj->ni", mixed, qdot)
        acceleration = solve(mass, force)
    return acceleration if create_graph else Tensor._wrap(acceleration.data)


@register_with_arguments
class LagrangianNN(Module):
    """A Lagrangian network for ``dim`` coordinates: ``network`` maps (q, q') (N, 2 dim) to L
    (``hidden`` widths; softplus by default, as in the paper: its second derivatives are
    nowhere zero, so the mass matrix d2L/dq'^2 is rarely singular).

    Example::

        lnn = LagrangianNN(1, hidden=(64, 64))
        lnn.fit(states, accelerations, steps=2000)     # states (N, 2) = (q, q'), q'' (N, 1)
        lnn.time_derivative(states)                     # (q', q'')
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), activation: str = "softplus",
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "LagrangianNN: dim")
        self.network = scalar_network(2 * self.dim, hidden, activation)
        self.built = True

    def lagrangian(self, q, qdot) -> Tensor:
        """L(q, q') (N, 1)."""
        return self.network(F.concat([q, qdot], axis=1))

    def _split(self, states, where: str) -> tuple[Tensor, Tensor]:
        x = leaf(states, parameter_dtype(self))
        check_state(x, 2 * self.dim, where, "(q, q')")
        return leaf(x.data[:, :self.dim]), leaf(x.data[:, self.dim:])

    def acceleration(self, states, create_graph: bool = True) -> Tensor:
        """q'' (N, dim) at ``states`` (N, 2 dim) = (q, q')."""
        q, qdot = self._split(states, "LagrangianNN.acceleration")
        return lagrangian_acceleration(self.lagrangian, q, qdot, create_graph=create_graph)

    def time_derivative(self, states, create_graph: bool = True) -> Tensor:
        """(q', q'') (N, 2 dim)."""
        q, qdot = self._split(states, "LagrangianNN.time_derivative")
        return F.concat([qdot, lagrangian_acceleration(self.lagrangian, q, qdot, create_graph)], axis=1)

    def forward(self, states) -> Tensor:
        return self.time_derivative(states)

    def field(self, states):
        """(q', q'') as an array, off the graph: what an integrator calls (states of any shape
        (..., 2 dim))."""
        return field_array(self.time_derivative, states)

    def loss(self, states, accelerations) -> Tensor:
        """mean ||q''(states) - accelerations||^2 (accelerations (N, dim))."""
        return mean_squared(self.acceleration(states), accelerations)

    def fit(self, states, accelerations, steps: int = 1000, lr: float = 1e-3, batch_size: int | None = None,
            seed: int | None = 0) -> list[float]:
        """Adam on :meth:`loss` for ``steps`` updates; returns the losses."""
        return fit_pairs(self, self.loss, states, accelerations, steps, lr, batch_size, seed, "LagrangianNN.fit")
