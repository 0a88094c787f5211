"""DeepONet (Lu, Jin, Pang, Zhang & Karniadakis 2021): a network that learns an operator G,
a map from functions u to functions G(u), in its unstacked form::

    G(u)(y) ~ sum_k b_k(u(x_1), ..., u(x_m)) t_k(y) + b_0

The branch net b reads the input function at m fixed sensors x_1..x_m; the trunk net t reads
the query point y (its last layer activated too, as in the reference code); b_0 is a learned
scalar. :func:`antiderivative_data` makes the paper's first example, G(u)(y) = int_0^y u(s) ds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["DeepONet", "antiderivative_data"]


def _mlp(hidden: Sequence[int], width: int, activation: str, activate_last: bool) -> Sequential:
    layers = [Dense(n, activation=activation, kernel_init="xavier_uniform") for n in hidden]
    last = Dense(width, activation=activation if activate_last else None, kernel_init="xavier_uniform")
    return Sequential(*layers, last)


@register_with_arguments
class DeepONet(Module):
    """An unstacked DeepONet for input functions sampled at ``num_sensors`` points and query
    points of ``coordinate_dim`` coordinates; ``latent_dim`` is the number p of basis terms.

    ``model(u, y)``: u (batch, num_sensors) sensor values; y (n, coordinate_dim) query points
    shared by every function (output (batch, n)) or (batch, n, coordinate_dim), one set per
    function (output (batch, n)).
    """

    def __init__(self, num_sensors: int, coordinate_dim: int = 1, latent_dim: int = 40,
                 branch_hidden: Sequence[int] = (40, 40), trunk_hidden: Sequence[int] = (40, 40),
                 activation: str = "tanh", name: str | None = None):
        super().__init__(name=name)
        self.num_sensors = positive_int(num_sensors, "DeepONet: num_sensors")
        self.coordinate_dim = positive_int(coordinate_dim, "DeepONet: coordinate_dim")
        self.latent_dim = positive_int(latent_dim, "DeepONet: latent_dim")
        branch_hidden = tuple(positive_int(n, "DeepONet: branch_hidden widths") for n in branch_hidden)
        trunk_hidden = tuple(positive_int(n, "DeepONet: trunk_hidden widths") for n in trunk_hidden)
        self.branch = _mlp(branch_hidden, self.latent_dim, activation, activate_last=False)
        self.trunk = _mlp(trunk_hidden, self.latent_dim, activation, activate_last=True)
        self.build((None, self.num_sensors))

    def build(self, input_shape) -> None:
        self.branch.build((None, self.num_sensors))
        self.trunk.build((None, self.coordinate_dim))
        self.add_parameter("bias", backend.xp.zeros((), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, u, y) -> Tensor:
        u, y = as_tensor(u), as_tensor(y)
        if u.ndim != 2 or u.shape[1] != self.num_sensors:
            raise ShapeError(f"DeepONet: the input functions must have shape (batch, {self.num_sensors}) "
                             f"(values at the sensors), got {tuple(u.shape)}")
        shared = y.ndim == 2
        if not (shared or (y.ndim == 3 and y.shape[0] == u.shape[0])) or y.shape[-1] != self.coordinate_dim:
            raise ShapeError(f"DeepONet: query points must have shape (n, {self.coordinate_dim}) or "
                             f"({u.shape[0]}, n, {self.coordinate_dim}), got {tuple(y.shape)}")
        b = self.branch(u)
        t = self.trunk(y)
        products = F.einsum("bp,np->bn", b, t) if shared else F.einsum("bp,bnp->bn", b, t)
        return products + self.bias


def antiderivative_data(num_functions: int, num_sensors: int = 50, num_points: int = 20, modes: int = 4,
                        seed: int | None = 0) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Random smooth functions on [0, 1] and their antiderivatives, for operator learning:

        u(x) = c + sum_{k=1}^{modes} (a_k cos(2 pi k x) + b_k sin(2 pi k x)) / k,  c, a, b ~ N(0, 1)
        G(u)(y) = c y + sum_k (a_k sin(2 pi k y) + b_k (1 - cos(2 pi k y))) / (2 pi k^2)

    Returns (u at ``num_sensors`` equispaced sensors (num_functions, num_sensors), query points
    y drawn uniformly (num_functions, num_points, 1), G(u)(y) (num_functions, num_points)), float64.
    """
    rng = numpy.random.default_rng(seed)
    n = positive_int(num_functions, "antiderivative_data: num_functions")
    modes = positive_int(modes, "antiderivative_data: modes")
    k = numpy.arange(1, modes + 1)
    c, a, b = rng.standard_normal((n, 1)), rng.standard_normal((n, modes)), rng.standard_normal((n, modes))
    sensors = numpy.linspace(0.0, 1.0, positive_int(num_sensors, "antiderivative_data: num_sensors"))
    y = rng.random((n, positive_int(num_points, "antiderivative_data: num_points")))

    def values(x):
        angle = 2 * math.pi * k * x[..., None]
        return c + numpy.sum((a[:, None] * numpy.cos(angle) + b[:, None] * numpy.sin(angle)) / k, axis=-1)

    angle = 2 * math.pi * k * y[..., None]
    integral = c * y + numpy.sum((a[:, None] * numpy.sin(angle) + b[:, None] * (1 - numpy.cos(angle)))
                                 / (2 * math.pi * k ** 2), axis=-1)
    return values(numpy.broadcast_to(sensors, (n, len(sensors)))), y[..., None], integral
