"""Hamiltonian neural networks (Greydanus, Dzamba & Yosinski 2019).

A network gives a scalar H(q, p); the dynamics are Hamilton's equations, read off its
gradient by automatic differentiation::

    dq/dt = dH/dp,    dp/dt = -dH/dq

so the learned vector field conserves the learned H exactly. Training matches the field to
observed (state, time derivative) pairs with a squared error, which differentiates through
the gradient (second derivatives of the network).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lamina import functional as F
from lamina.autograd import Tensor, enable_grad, grad
from lamina.models.physics._state import (
    as_column,
    check_state,
    field_array,
    fit_pairs,
    leaf,
    mean_squared,
    parameter_dtype,
    scalar_network,
)
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["HamiltonianNN", "hamiltonian_vector_field"]


def hamiltonian_vector_field(hamiltonian: Callable, states, create_graph: bool = True) -> Tensor:
    """(dH/dp, -dH/dq) at ``states`` (N, 2n) = (q, p) side by side, for any ``hamiltonian``
    mapping such states (a tensor) to H (N,) or (N, 1). ``create_graph`` keeps the result on
    the graph (to train through it); without it the result is a constant tensor. Gradients are
    recorded even under ``no_grad`` (the field is a gradient)."""
    x = leaf(states)
    n = check_state(x, None, "hamiltonian_vector_field")
    with enable_grad():
        energy = as_column(hamiltonian(x), x.shape[0], "hamiltonian_vector_field")
        (dh,) = grad(energy.sum(), x, create_graph=create_graph)
    dh = dh if isinstance(dh, Tensor) else Tensor._wrap(dh)
    return F.concat([dh[:, n:], -dh[:, :n]], axis=1)


@register_with_arguments
class HamiltonianNN(Module):
    """A Hamiltonian network for ``dim`` degrees of freedom (states (N, 2 dim) = (q, p)):
    ``network`` maps a state to H (``hidden`` widths, a smooth ``activation``).

    Example::

        hnn = HamiltonianNN(1, hidden=(64, 64))
        hnn.fit(states, derivatives, steps=2000, lr=1e-3)        # pairs (x, dx/dt)
        trajectory = leapfrog(hnn.field, x0, dt=0.1, steps=500)
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "HamiltonianNN: dim")
        self.network = scalar_network(2 * self.dim, hidden, activation)
        self.built = True

    def hamiltonian(self, states) -> Tensor:
        """H at ``states`` (N, 2 dim), shape (N, 1)."""
        x = leaf(states, parameter_dtype(self))
        check_state(x, 2 * self.dim, "HamiltonianNN.hamiltonian")
        return self.network(x)

    def time_derivative(self, states, create_graph: bool = True) -> Tensor:
        """(dH/dp, -dH/dq) at ``states`` (N, 2 dim), shape (N, 2 dim)."""
        x = leaf(states, parameter_dtype(self))
        check_state(x, 2 * self.dim, "HamiltonianNN.time_derivative")
        return hamiltonian_vector_field(self.network, x, create_graph=create_graph)

    def forward(self, states) -> Tensor:
        return self.time_derivative(states)

    def field(self, states):
        """The vector field as an array, off the graph: what an integrator calls (states of any shape
        (..., 2 dim))."""
        return field_array(self.time_derivative, states)

    def loss(self, states, derivatives) -> Tensor:
        """mean ||field(x) - dx/dt||^2 over the pairs (states (N, 2 dim), derivatives alike)."""
        return mean_squared(self.time_derivative(states), derivatives)

    def fit(self, states, derivatives, steps: int = 1000, lr: float = 1e-3, batch_size: int | None = None,
            seed: int | None = 0) -> list[float]:
        """Adam on :meth:`loss` for ``steps`` updates (mini-batches of ``batch_size`` pairs, None:
        all of them); returns the losses."""
        return fit_pairs(self, self.loss, states, derivatives, steps, lr, batch_size, seed, "HamiltonianNN.fit")
