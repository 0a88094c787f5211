r"""The hyperboloid (Lorentz) model of curvature -k: {x in R^{n+1} : <x, x>_L = -1/k, x_0 > 0}
with the Minkowski product <u, v>_L = -u_0 v_0 + u_1 v_1 + ... + u_n v_n.

With K = 1/k (the squared radius; geoopt's ``k``, HGCN's ``K``)::

    d(x, y)     = sqrt(K) arcosh(-<x, y>_L / K)
    exp_x(u)    = cosh(|u|_L / sqrt(K)) x + sqrt(K) sinh(|u|_L / sqrt(K)) u / |u|_L
    log_x(y)    = d(x, y) w / |w|_L,               w = y + <x, y>_L x / K
    proj_x(v)   = v + <x, v>_L x / K                 (the tangent space: <x, v>_L = 0)
    P_{x->y}(v) = v + <y, v>_L (x + y) / (K - <x, y>_L)

and the isometry with the Poincaré ball of curvature -k (``to_poincare``/``from_poincare``)::

    p = sqrt(K) x_{1:} / (x_0 + sqrt(K)),    x = (sqrt(K) (1 + k|p|^2), 2 p) / (1 - k|p|^2)
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.manifolds.base import SQUARED_NORM_FLOOR, Manifold, as_tensor, check_positive, dot

__all__ = ["Lorentz"]

#: arcosh's argument is kept at least 1 + this, by dtype (its slope is infinite at 1).
ACOSH_MARGIN = {"float32": 1e-6, "float64": 1e-12}


def _time_space(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., :1], x[..., 1:]


class Lorentz(Manifold):
    """The hyperboloid of curvature -k (k > 0); points have n + 1 coordinates, the first the
    time-like one. See the module docstring for the formulas."""

    name = "Lorentz"

    def __init__(self, k: float = 1.0):
        self.k = check_positive(k, "Lorentz: the curvature magnitude k")
        self.radius2 = 1.0 / self.k
        self.radius = self.radius2 ** 0.5

    def __repr__(self) -> str:
        return f"Lorentz(k={self.k:g})"

    def _args(self, who: str, *tensors) -> list[Tensor]:
        tensors = [as_tensor(t) for t in tensors]
        self._check_shapes(who, *tensors)
        if tensors[0].shape[-1] < 2:
            raise ShapeError(f"{self.name}.{who}: points need at least 2 coordinates (time and space), got "
                             f"shape {tuple(tensors[0].shape)}")
        return tensors

    def check_point(self, x, who: str = "check_point", rtol: float = 1e-4) -> None:
        """A ValueError unless <x, x>_L = -1/k (within ``rtol``) and x_0 > 0."""
        data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
        form = -data[..., 0] ** 2 + (data[..., 1:] ** 2).sum(axis=-1)
        error = abs(form + self.radius2) / (self.radius2 + data[..., 0] ** 2)
        if form.size and not (bool((error <= rtol).all()) and bool((data[..., 0] > 0).all())):
            raise ValueError(f"{self.name}.{who}: not a point of the upper hyperboloid: <x, x>_L ranges over "
                             f"[{float(form.min()):.6g}, {float(form.max()):.6g}], expected -1/k = "
                             f"{-self.radius2:.6g} with x_0 > 0 (projx maps points onto it)")

    # -- metric --------------------------------------------------------------
    def minkowski(self, u, v=None, keepdim: bool = False) -> Tensor:
        """<u, v>_L = -u_0 v_0 + sum_i u_i v_i over the last axis."""
        u = as_tensor(u)
        v = u if v is None else as_tensor(v)
        return dot(u, v, keepdim) - 2.0 * (u[..., :1] * v[..., :1] if keepdim else u[..., 0] * v[..., 0])

    def inner(self, x, u, v=None, keepdim: bool = False) -> Tensor:
        """The metric at x: the Minkowski product (positive on tangent vectors)."""
        return self.minkowski(u, v, keepdim)

    def _tangent_norm(self, u: Tensor) -> Tensor:
        return F.sqrt(F.clip(self.minkowski(u, keepdim=True), low=SQUARED_NORM_FLOOR))

    def component_inner(self, x, u) -> Tensor:
        """<u, u>_L, the same for every coordinate of a point (a coordinate's own square
        is not a size in this metric)."""
        u = as_tensor(u)
        return F.broadcast_to(F.clip(self.minkowski(u, keepdim=True), low=0.0), u.shape)

    # -- projections -------------------------------------------------------------
    def projx(self, x) -> Tensor:
        """The point above x's space part: x_0 = sqrt(1/k + |x_{1:}|^2)."""
        (x,) = self._args("projx", x)
        _, space = _time_space(x)
        return F.concat([F.sqrt(self.radius2 + dot(space, space)), space], axis=-1)

    def proju(self, x, v) -> Tensor:
        x, v = self._args("proju", x, v)
        return v + self.minkowski(x, v, keepdim=True) * x / self.radius2

    def egrad2rgrad(self, x, u) -> Tensor:
        """The metric's inverse (the sign of the time coordinate flipped), then proju."""
        x, u = self._args("egrad2rgrad", x, u)
        time, space = _time_space(u)
        return self.proju(x, F.concat([-time, space], axis=-1))

    # -- maps ------------------------------------------------------------------
    def dist(self, x, y, keepdim: bool = False) -> Tensor:
        x, y = self._args("dist", x, y)
        return self._dist(x, y, keepdim)

    def _dist(self, x: Tensor, y: Tensor, keepdim: bool) -> Tensor:
        margin = ACOSH_MARGIN.get(str(x.dtype), ACOSH_MARGIN["float32"])
        argument = F.clip(-self.minkowski(x, y, keepdim) / self.radius2, low=1.0 + margin)
        return self.radius * F.acosh(argument)

    def expmap(self, x, u, project: bool = True) -> Tensor:
        x, u = self._args("expmap", x, u)
        u_norm = self._tangent_norm(u)
        theta = F.clip(u_norm / self.radius, high=50.0)
        y = F.cosh(theta) * x + self.radius * F.sinh(theta) * u / u_norm
        return self.projx(y) if project else y

    def logmap(self, x, y) -> Tensor:
        x, y = self._args("logmap", x, y)
        w = y + self.minkowski(x, y, keepdim=True) * x / self.radius2
        return self._dist(x, y, keepdim=True) * w / self._tangent_norm(w)

    def origin(self, *shape, dtype=None):
        """The bottom of the hyperboloid, (1/sqrt(k), 0, ..., 0), repeated to ``shape``."""
        out = backend.xp.zeros(shape, dtype=dtype or backend.get_default_dtype())
        out[..., 0] = self.radius
        return out

    def expmap0(self, u, project: bool = True) -> Tensor:
        """exp from the origin of a tangent vector there (its time coordinate is ignored)."""
        u = as_tensor(u)
        _, space = _time_space(u)
        o = self.origin(*u.shape, dtype=u.dtype)
        return self.expmap(o, F.concat([0.0 * u[..., :1], space], axis=-1), project=project)

    def logmap0(self, y) -> Tensor:
        y = as_tensor(y)
        return self.logmap(self.origin(*y.shape, dtype=y.dtype), y)

    def transp(self, x, y, v) -> Tensor:
        x, y, v = self._args("transp", x, y, v)
        coefficient = self.minkowski(y, v, keepdim=True) / (self.radius2 - self.minkowski(x, y, keepdim=True))
        return v + coefficient * (x + y)

    # -- the Poincaré ball ---------------------------------------------------------
    def to_poincare(self, x) -> Tensor:
        """The point of the Poincaré ball of curvature -k isometric to x: sqrt(K) x_{1:} / (x_0 + sqrt(K))."""
        (x,) = self._args("to_poincare", x)
        time, space = _time_space(x)
        return self.radius * space / (time + self.radius)

    def from_poincare(self, p) -> Tensor:
        """The inverse of :meth:`to_poincare`: (sqrt(K) (1 + k|p|^2), 2p) / (1 - k|p|^2)."""
        p = as_tensor(p)
        squared = self.k * dot(p, p)
        if squared.size and not bool((squared.data < 1.0).all()):
            raise ValueError(f"{self.name}.from_poincare: a point lies outside the Poincaré ball of radius "
                             f"1/sqrt(k) = {self.radius:.6g} (largest c|p|^2 = {float(squared.data.max()):.6g})")
        denominator = 1.0 - squared
        return F.concat([self.radius * (1.0 + squared) / denominator, 2.0 * p / denominator], axis=-1)
