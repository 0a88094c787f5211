"""Riemannian manifolds for optimisation and hyperbolic deep learning.

:class:`PoincareBall` and :class:`Lorentz` (two models of hyperbolic space, with maps
between them), :class:`Sphere`, :class:`Stiefel` and :class:`Euclidean`. Their operations
(exp/log maps, distances, projections, parallel transport, Möbius arithmetic) are built
from lamina's differentiable ops; a parameter tagged with a manifold
(:class:`lamina.nn.ManifoldParameter`) is trained on it by
:class:`lamina.optim.RiemannianSGD` and :class:`lamina.optim.RiemannianAdam`::

    from lamina.manifolds import PoincareBall

    ball = PoincareBall(c=1.0)
    d = ball.dist(x, y)                 # 2 artanh(|(-x) (+) y|)
    y = ball.expmap(x, u)               # follow the geodesic from x along u
"""

from lamina.manifolds.base import Euclidean, Manifold
from lamina.manifolds.lorentz import Lorentz
from lamina.manifolds.poincare import PoincareBall
from lamina.manifolds.sphere import Sphere
from lamina.manifolds.stiefel import Stiefel

__all__ = ["Euclidean", "Lorentz", "Manifold", "PoincareBall", "Sphere", "Stiefel"]
