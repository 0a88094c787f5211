"""Physics-informed neural networks (Raissi, Perdikaris & Karniadakis 2019).

A network u(x; w) is fitted so that the PDE residual vanishes at collocation points inside
the domain and the boundary and initial conditions hold::

    loss = w_r mean_i r(x_i)^2 + w_b mean_j (u(x_j) - g_j)^2 + w_0 mean_k (u(x_k) - h_k)^2

where r is the problem's residual (:mod:`lamina.models.physics.problems`), computed with
derivatives of u with respect to its inputs (:mod:`lamina.models.physics.derivatives`).
Training is Adam, then optionally L-BFGS on the same fixed points (the paper's recipe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.physics.problems import Conditions, PDEProblem
from lamina.nn import Dense, Sequential
from lamina.nn.module import Module

__all__ = ["PINN", "PINNLoss", "mlp_network", "relative_l2_error"]


def mlp_network(input_dim: int, output_dim: int = 1, hidden: Sequence[int] = (32, 32),
                activation: str = "tanh") -> Sequential:
    """A built Dense network (Xavier-initialised, ``activation`` between layers, linear output):
    the usual PINN approximator. Smooth activations only (ReLU's second derivative is zero)."""
    layers = [Dense(width, activation=activation, kernel_init="xavier_uniform") for width in hidden]
    network = Sequential(*layers, Dense(output_dim, kernel_init="xavier_uniform"))
    network.build((None, input_dim))
    return network


def relative_l2_error(predicted, expected) -> float:
    """||predicted - expected||_2 / ||expected||_2 over all entries."""
    predicted = numpy.asarray(predicted.numpy() if isinstance(predicted, Tensor) else predicted, dtype=numpy.float64)
    expected = numpy.asarray(expected, dtype=numpy.float64)
    if predicted.size != expected.size:
        raise ShapeError(f"relative_l2_error: {predicted.shape} and {expected.shape} hold different numbers of values")
    return float(numpy.linalg.norm(predicted.reshape(-1) - expected.reshape(-1)) / numpy.linalg.norm(expected))


@dataclass
class PINNLoss:
    """``loss`` (the weighted sum) and its terms, scalar tensors (a term is None when it has no points)."""

    loss: Tensor
    residual: Tensor
    boundary: Tensor | None
    initial: Tensor | None


class PINN(Module):
    """A network trained to solve ``problem`` (a :class:`PDEProblem`, or any object with
    ``input_dim`` and ``residual(u, x)``); ``weights`` = (w_r, w_b, w_0) of the module docstring.

    Example::

        problem = Poisson1D()                               # -u'' = pi^2 sin(pi x), u(+-1) = 0
        pinn = PINN(mlp_network(1, hidden=(20, 20)), problem)
        pinn.fit(num_residual=64, adam_steps=1000, lbfgs_steps=200)
        relative_l2_error(pinn.predict(x), problem.solution(x))
    """

    def __init__(self, network: Module, problem: PDEProblem, weights=(1.0, 1.0, 1.0), name: str | None = None):
        super().__init__(name=name)
        if len(weights) != 3 or any(not w >= 0 for w in weights):
            raise ValueError(f"PINN: weights must be three numbers >= 0 (residual, boundary, initial), got {weights!r}")
        self.network = network
        self.problem = problem
        self.weights = tuple(float(w) for w in weights)
        self.built = True

    def _points(self, points, where: str, grad: bool = False) -> Tensor:
        array = numpy.asarray(points.data if isinstance(points, Tensor) else points)
        if array.ndim == 1 and self.problem.input_dim == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != self.problem.input_dim:
            raise ShapeError(f"PINN.{where}: points must have shape (N, {self.problem.input_dim}) for "
                             f"{type(self.problem).__name__}, got {array.shape}")
        dtype = next(iter(self.parameters())).dtype
        return Tensor(array.astype(dtype), dtype=dtype, requires_grad=grad)

    def forward(self, x) -> Tensor:
        return self.network(self._points(x, "forward"))

    def predict(self, points) -> numpy.ndarray:
        """u at ``points`` (N, d), as an array (N, outputs)."""
        with no_grad():
            return self.forward(points).numpy()

    def residual(self, points) -> Tensor:
        """The problem's residual at ``points`` (N, d), on the graph."""
        x = self._points(points, "residual", grad=True)
        return self.problem.residual(self.network(x), x)

    def _mismatch(self, conditions: Conditions | None, where: str) -> Tensor | None:
        if conditions is None:
            return None
        points, values = conditions
        u = self.network(self._points(points, where))
        target = numpy.asarray(values, dtype=u.dtype)
        if target.size != u.size:
            raise ShapeError(f"PINN.{where}: {u.shape[0]} points need {u.size} values, got shape {target.shape}")
        return F.mean((u - Tensor._wrap(target.reshape(u.shape))) ** 2)

    def loss(self, residual_points, boundary: Conditions | None = None, initial: Conditions | None = None) -> PINNLoss:
        """The weighted loss on collocation ``residual_points`` (N, d) and the ``boundary`` and
        ``initial`` conditions, each (points, values) or None."""
        w_r, w_b, w_0 = self.weights
        residual = F.mean(self.residual(residual_points) ** 2)
        boundary_term = self._mismatch(boundary, "boundary")
        initial_term = self._mismatch(initial, "initial")
        total = w_r * residual
        for weight, term in ((w_b, boundary_term), (w_0, initial_term)):
            if term is not None:
                total = total + weight * term
        return PINNLoss(total, residual, boundary_term, initial_term)

    def fit(self, residual_points=None, boundary: Conditions | None = None, initial: Conditions | None = None,
            num_residual: int = 256, num_boundary: int = 64, num_initial: int = 64, adam_steps: int = 1000,
            lr: float = 1e-3, lbfgs_steps: int = 0, seed: int | None = 0) -> list[float]:
        """Adam for ``adam_steps`` updates, then L-BFGS (strong Wolfe line search) for up to
        ``lbfgs_steps`` iterations, on fixed points: those given, else drawn from the problem
        (``num_residual`` inside the domain, ``num_boundary`` and ``num_initial`` on its edges).
        Returns the loss at every evaluation."""
        from lamina import optim

        rng = numpy.random.default_rng(seed)
        if residual_points is None:
            residual_points = self.problem.sample_interior(num_residual, rng)
        if boundary is None and hasattr(self.problem, "boundary_data"):
            boundary = self.problem.boundary_data(num_boundary, rng)
        if initial is None and hasattr(self.problem, "initial_data"):
            initial = self.problem.initial_data(num_initial, rng)
        history: list[float] = []

        def closure():
            value = self.loss(residual_points, boundary, initial).loss
            self.zero_grad()
            value.backward()
            history.append(float(value.item()))
            return value

        adam = optim.Adam(self.parameters(), lr=lr)
        for _ in range(int(adam_steps)):
            closure()
            adam.step()
        if lbfgs_steps > 0:
            lbfgs = optim.LBFGS(self.parameters(), lr=1.0, max_iter=int(lbfgs_steps), history_size=50,
                                tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")
            lbfgs.step(closure)
        return history
