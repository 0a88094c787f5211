r"""The unit sphere {x in R^n : ||x|| = 1} with the metric of R^n::

    proj_x(u)   = u - <x, u> x
    exp_x(u)    = cos|u| x + sin|u| u / |u|
    log_x(y)    = d(x, y) w / |w|,       w = proj_x(y - x)
    d(x, y)     = arccos <x, y>
    retr_x(u)   = (x + u) / |x + u|,     P_{x->y}(v) = proj_y(v)  (transport by projection)
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.manifolds.base import Manifold, as_tensor, dot, norm

__all__ = ["Sphere"]


class Sphere(Manifold):
    """The unit sphere of the last axis; see the module docstring."""

    name = "Sphere"

    def _args(self, who: str, *tensors) -> list[Tensor]:
        tensors = [as_tensor(t) for t in tensors]
        self._check_shapes(who, *tensors)
        return tensors

    def check_point(self, x, who: str = "check_point", atol: float = 1e-4) -> None:
        data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
        norms = backend.xp.sqrt((data * data).sum(axis=-1))
        if norms.size and not bool((abs(norms - 1.0) <= atol).all()):
            raise ValueError(f"{self.name}.{who}: not on the unit sphere: norms range over "
                             f"[{float(norms.min()):.6g}, {float(norms.max()):.6g}] (projx normalises)")

    def inner(self, x, u, v=None, keepdim: bool = False) -> Tensor:
        u = as_tensor(u)
        return dot(u, u if v is None else as_tensor(v), keepdim)

    def projx(self, x) -> Tensor:
        x = as_tensor(x)
        return x / norm(x)

    def proju(self, x, u) -> Tensor:
        x, u = self._args("proju", x, u)
        return u - dot(x, u) * x

    def expmap(self, x, u) -> Tensor:
        x, u = self._args("expmap", x, u)
        u_norm = norm(u)
        return self.projx(F.cos(u_norm) * x + F.sin(u_norm) * u / u_norm)

    def retr(self, x, u) -> Tensor:
        x, u = self._args("retr", x, u)
        return self.projx(x + u)

    def logmap(self, x, y) -> Tensor:
        x, y = self._args("logmap", x, y)
        w = self.proju(x, y - x)
        return self._dist(x, y, keepdim=True) * w / norm(w)

    def transp(self, x, y, v) -> Tensor:
        return self.proju(y, v)

    def dist(self, x, y, keepdim: bool = False) -> Tensor:
        x, y = self._args("dist", x, y)
        return self._dist(x, y, keepdim)

    @staticmethod
    def _dist(x: Tensor, y: Tensor, keepdim: bool) -> Tensor:
        margin = 1e-7 if x.dtype == backend.xp.float32 else 1e-15
        return F.acos(F.clip(dot(x, y, keepdim), low=-1.0 + margin, high=1.0 - margin))
