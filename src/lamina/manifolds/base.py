"""The manifold interface and the flat case, :class:`Euclidean`.

A manifold here is a set of points (arrays whose last ``ndim`` axes form one point, the
axes before are a batch) with, at each point x, a tangent space of vectors u and a metric
<u, v>_x. What optimisation on the manifold needs of it (Bonnabel, "Stochastic gradient
descent on Riemannian manifolds"; Becigneul and Ganea, "Riemannian adaptive optimization
methods"):

* ``egrad2rgrad(x, g)``: the Riemannian gradient from the Euclidean one (the metric's
  inverse applied to g, then the projection onto the tangent space);
* ``retr(x, u)``: a retraction, a cheap first-order stand-in for ``expmap(x, u)``;
* ``transp(x, y, v)``: carries a tangent vector at x to the tangent space at y (for
  momentum buffers);
* ``component_inner(x, u)``: u's squared size under the metric, by component (Adam's second
  moment).

Every method accepts tensors or arrays and records its computation on the autograd graph
(it is built from lamina's differentiable ops), so losses may be written with distances
and maps of the manifold.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["Euclidean", "Manifold", "as_tensor", "check_positive", "dot", "norm"]

#: The floor of a squared norm before its square root: norms are at least 1e-15, as geoopt's.
SQUARED_NORM_FLOOR = 1e-30


def as_tensor(x) -> Tensor:
    """A tensor (a floating array keeps its dtype; other values take the default dtype)."""
    if isinstance(x, Tensor):
        return x
    array = backend.xp.asarray(x)
    return Tensor._wrap(array) if array.dtype.kind == "f" else Tensor(array)


def dot(u: Tensor, v: Tensor, keepdim: bool = True) -> Tensor:
    """<u, v> over the last axis."""
    return F.sum(u * v, axis=-1, keepdims=keepdim)


def norm(u: Tensor, keepdim: bool = True) -> Tensor:
    """||u|| over the last axis, at least 1e-15 (so that u / ||u|| stays finite at 0; the
    gradient through the floor is 0)."""
    return F.sqrt(F.clip(dot(u, u, keepdim), low=SQUARED_NORM_FLOOR))


def check_positive(value, what: str) -> float:
    """``value`` as a float; a ValueError naming ``what`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


class Manifold:
    """The operations every manifold offers (see the module docstring). ``ndim``: how many
    trailing axes form one point (1 for vectors, 2 for matrices)."""

    ndim = 1
    name = "Manifold"

    # -- checks --------------------------------------------------------------
    def _check_shapes(self, who: str, *arrays) -> None:
        """The last ``ndim`` axes of every argument agree and the batch axes broadcast."""
        shapes = [tuple(a.shape) for a in arrays]
        for s in shapes:
            if len(s) < self.ndim:
                raise ShapeError(f"{self.name}.{who}: expected arrays with at least {self.ndim} axes "
                                 f"(one point per trailing {self.ndim}), got shapes {shapes}")
        points = {s[len(s) - self.ndim:] for s in shapes}
        if len(points) > 1:
            raise ShapeError(f"{self.name}.{who}: the last {self.ndim} axes must agree, got shapes {shapes}")
        try:
            backend.xp.broadcast_shapes(*shapes)
        except ValueError:
            raise ShapeError(f"{self.name}.{who}: shapes {shapes} do not broadcast together") from None

    def check_point(self, x, who: str = "check_point") -> None:
        """Raise ValueError if ``x`` is not a point of the manifold (within a tolerance)."""

    # -- metric --------------------------------------------------------------
    def inner(self, x, u, v=None, keepdim: bool = False) -> Tensor:
        """<u, v>_x (``v=None``: <u, u>_x)."""
        raise NotImplementedError(f"{self.name}.inner")

    def norm(self, x, u, keepdim: bool = False) -> Tensor:
        """||u||_x = sqrt(<u, u>_x)."""
        return F.sqrt(F.clip(self.inner(x, u, keepdim=keepdim), low=SQUARED_NORM_FLOOR))

    def component_inner(self, x, u) -> Tensor:
        """u's squared size under the metric at x, by component, shaped like u (the second
        moment of :class:`~lamina.optim.RiemannianAdam`)."""
        u = as_tensor(u)
        return u * u

    # -- projections and gradients --------------------------------------------
    def projx(self, x) -> Tensor:
        """The nearest point of the manifold (or a point the numerics keep inside it)."""
        raise NotImplementedError(f"{self.name}.projx")

    def proju(self, x, u) -> Tensor:
        """u projected onto the tangent space at x."""
        raise NotImplementedError(f"{self.name}.proju")

    def egrad2rgrad(self, x, u) -> Tensor:
        """The Riemannian gradient at x of a function whose Euclidean gradient is u."""
        return self.proju(x, u)

    # -- moving ----------------------------------------------------------------
    def expmap(self, x, u) -> Tensor:
        """The point reached at time 1 by the geodesic leaving x with velocity u."""
        raise NotImplementedError(f"{self.name}.expmap")

    def logmap(self, x, y) -> Tensor:
        """The tangent vector at x whose geodesic reaches y at time 1 (expmap's inverse)."""
        raise NotImplementedError(f"{self.name}.logmap")

    def retr(self, x, u) -> Tensor:
        """A retraction (first-order agreement with expmap); the exponential map by default."""
        return self.expmap(x, u)

    def transp(self, x, y, v) -> Tensor:
        """Transport of the tangent vector v at x to the tangent space at y."""
        raise NotImplementedError(f"{self.name}.transp")

    def retr_transp(self, x, u, v) -> tuple[Tensor, Tensor]:
        """(y, v') = (retr(x, u), transp(x, y, v)): a step and its carried momentum."""
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(self, x, u, v) -> tuple[Tensor, Tensor]:
        """(y, v') = (expmap(x, u), transp(x, y, v))."""
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def dist(self, x, y, keepdim: bool = False) -> Tensor:
        """The geodesic distance between x and y."""
        raise NotImplementedError(f"{self.name}.dist")

    def __repr__(self) -> str:
        return f"{self.name}()"


class Euclidean(Manifold):
    """R^n with <u, v> = u . v: every map is the flat one (expmap(x, u) = x + u, transport
    is the identity), so Riemannian optimizers reduce to their Euclidean forms on it.
    ``ndim``: how many trailing axes form one point (for ``inner``/``dist``)."""

    name = "Euclidean"

    def __init__(self, ndim: int = 1):
        if isinstance(ndim, bool) or not isinstance(ndim, int) or ndim < 0:
            raise ValueError(f"Euclidean: ndim must be an int >= 0, got {ndim!r}")
        self.ndim = ndim

    def _reduce(self, t: Tensor, keepdim: bool) -> Tensor:
        if self.ndim == 0:
            return t
        axes = tuple(range(-self.ndim, 0))
        return F.sum(t, axis=axes, keepdims=keepdim)

    def inner(self, x, u, v=None, keepdim: bool = False) -> Tensor:
        u = as_tensor(u)
        v = u if v is None else as_tensor(v)
        return self._reduce(u * v, keepdim)

    def projx(self, x) -> Tensor:
        return as_tensor(x)

    def proju(self, x, u) -> Tensor:
        return as_tensor(u)

    def expmap(self, x, u) -> Tensor:
        x, u = as_tensor(x), as_tensor(u)
        self._check_shapes("expmap", x, u)
        return x + u

    def logmap(self, x, y) -> Tensor:
        x, y = as_tensor(x), as_tensor(y)
        self._check_shapes("logmap", x, y)
        return y - x

    def transp(self, x, y, v) -> Tensor:
        return as_tensor(v)

    def dist(self, x, y, keepdim: bool = False) -> Tensor:
        diff = self.logmap(x, y)
        return F.sqrt(F.clip(self._reduce(diff * diff, keepdim), low=SQUARED_NORM_FLOOR))

    def __repr__(self) -> str:
        return f"Euclidean(ndim={self.ndim})"
