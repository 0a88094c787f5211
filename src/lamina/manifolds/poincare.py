r"""The Poincaré ball of curvature -c: {x in R^n : c ||x||^2 < 1} with the metric
lambda_x^2 <u, v>, lambda_x = 2 / (1 - c ||x||^2) (conformal to the Euclidean one).

The formulas are the gyrovector ones of Ganea, Becigneul and Hofmann, "Hyperbolic Neural
Networks" (2018), as geoopt writes them::

    x (+) y     = ((1 + 2c<x,y> + c|y|^2) x + (1 - c|x|^2) y) / (1 + 2c<x,y> + c^2 |x|^2 |y|^2)
    r (x) x     = tanh(r artanh(sqrt(c)|x|)) x / (sqrt(c)|x|)
    M (x) x     = tanh(|Mx|/|x| artanh(sqrt(c)|x|)) Mx / (sqrt(c)|Mx|)            (0 if Mx = 0)
    exp_x(u)    = x (+) tanh(sqrt(c) lambda_x |u| / 2) u / (sqrt(c)|u|)
    log_x(y)    = 2 / (sqrt(c) lambda_x) artanh(sqrt(c)|w|) w / |w|,   w = (-x) (+) y
    d(x, y)     = 2 / sqrt(c) artanh(sqrt(c) |(-x) (+) y|)
    P_{x->y}(v) = gyr[y, -x] v  lambda_x / lambda_y

Points are pulled back inside by ``projx`` to the norm (1 - eps) / sqrt(c), eps = 4e-3 in
float32 and 1e-5 in float64 (geoopt's margins: nearer the boundary the float rounding of
1 - c|x|^2 swamps the distances).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.manifolds.base import Manifold, as_tensor, check_positive, dot, norm

__all__ = ["PoincareBall", "artanh", "boundary_eps"]

#: projx's margin from the boundary, by dtype.
BOUNDARY_EPS = {"float32": 4e-3, "float64": 1e-5}
#: How close to +-1 artanh's argument may come, by dtype.
ARTANH_MARGIN = {"float32": 1e-7, "float64": 1e-15}


def boundary_eps(dtype) -> float:
    """projx's margin for arrays of ``dtype`` (float32's for other floats)."""
    return BOUNDARY_EPS.get(str(dtype), BOUNDARY_EPS["float32"])


def artanh(x: Tensor) -> Tensor:
    """artanh with its argument clipped to (-1 + m, 1 - m), m = 1e-7 (float32) or 1e-15."""
    margin = ARTANH_MARGIN.get(str(x.dtype), ARTANH_MARGIN["float32"])
    return F.atanh(F.clip(x, low=-1.0 + margin, high=1.0 - margin))


def _tanh(x: Tensor) -> Tensor:
    return F.tanh(F.clip(x, low=-15.0, high=15.0))


class PoincareBall(Manifold):
    """The Poincaré ball of curvature -c (c > 0), radius 1/sqrt(c); see the module docstring."""

    name = "PoincareBall"

    def __init__(self, c: float = 1.0):
        self.c = check_positive(c, "PoincareBall: the curvature magnitude c")
        self.sqrt_c = self.c ** 0.5

    def __repr__(self) -> str:
        return f"PoincareBall(c={self.c:g})"

    # -- checks --------------------------------------------------------------
    def check_point(self, x, who: str = "check_point") -> None:
        """A ValueError if some point has c ||x||^2 >= 1 (on or outside the boundary)."""
        data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
        squared = self.c * (data * data).sum(axis=-1)
        if squared.size and not bool((squared < 1.0).all()):
            worst = float(squared.max() ** 0.5 / self.sqrt_c)
            raise ValueError(f"{self.name}.{who}: a point lies outside the ball: its norm is {worst:.6g}, the "
                             f"radius is 1/sqrt(c) = {1 / self.sqrt_c:.6g} (use projx to pull points inside)")

    def _points(self, who: str, *points, vectors=()) -> list[Tensor]:
        tensors = [as_tensor(p) for p in (*points, *vectors)]
        self._check_shapes(who, *tensors)
        for p in tensors[: len(points)]:
            self.check_point(p, who)
        return tensors

    # -- gyrovector operations -------------------------------------------------
    def lambda_x(self, x, keepdim: bool = True) -> Tensor:
        """The conformal factor lambda_x = 2 / (1 - c ||x||^2)."""
        (x,) = self._points("lambda_x", x)
        return self._lambda(x, keepdim)

    def _lambda(self, x: Tensor, keepdim: bool = True) -> Tensor:
        return 2.0 / F.clip(1.0 - self.c * dot(x, x, keepdim), low=1e-15)

    def mobius_add(self, x, y) -> Tensor:
        """x (+) y (see the module docstring); not commutative, (-x) (+) (x (+) y) = y."""
        x, y = as_tensor(x), as_tensor(y)
        self._check_shapes("mobius_add", x, y)
        return self._add(x, y)

    def _add(self, x: Tensor, y: Tensor) -> Tensor:
        c = self.c
        xy, x2, y2 = dot(x, y), dot(x, x), dot(y, y)
        numerator = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
        return numerator / F.clip(1.0 + 2.0 * c * xy + c * c * x2 * y2, low=1e-15)

    def mobius_sub(self, x, y) -> Tensor:
        """x (-) y = x (+) (-y)."""
        return self.mobius_add(x, -as_tensor(y))

    def mobius_scalar_mul(self, r, x) -> Tensor:
        """r (x) x = tanh(r artanh(sqrt(c)|x|)) x / (sqrt(c)|x|)."""
        (x,) = self._points("mobius_scalar_mul", x)
        x_norm = norm(x)
        return _tanh(r * artanh(self.sqrt_c * x_norm)) * x / (self.sqrt_c * x_norm)

    def mobius_matvec(self, m, x) -> Tensor:
        """M (x) x for a matrix ``m`` of shape (out, in) and points x (..., in): the linear map
        carried to the ball, exp_0(M log_0(x)) (0 where Mx = 0)."""
        m, x = as_tensor(m), as_tensor(x)
        if m.ndim != 2 or m.shape[-1] != x.shape[-1]:
            raise ShapeError(f"{self.name}.mobius_matvec: expected a matrix (out, in) and points (..., in), "
                             f"got shapes {tuple(m.shape)} and {tuple(x.shape)}")
        self.check_point(x, "mobius_matvec")
        x_norm = norm(x)
        mx = x @ F.transpose(m)
        mx_norm = norm(mx)
        scaled = _tanh(mx_norm / x_norm * artanh(self.sqrt_c * x_norm)) * mx / (mx_norm * self.sqrt_c)
        zero = backend.xp.all(mx.data == 0, axis=-1, keepdims=True)
        return F.where(zero, 0.0 * scaled, scaled) if bool(zero.any()) else scaled

    def gyration(self, a, b, u) -> Tensor:
        """gyr[a, b] u = (-(a (+) b)) (+) (a (+) (b (+) u)), in closed form (geoopt's)."""
        a, b, u = as_tensor(a), as_tensor(b), as_tensor(u)
        self._check_shapes("gyration", a, b, u)
        return self._gyration(a, b, u)

    def _gyration(self, a: Tensor, b: Tensor, u: Tensor) -> Tensor:
        k = -self.c
        a2, b2, ab, au, bu = dot(a, a), dot(b, b), dot(a, b), dot(a, u), dot(b, u)
        k2 = k * k
        coef_a = -k2 * au * b2 - k * bu + 2.0 * k2 * ab * bu
        coef_b = -k2 * bu * a2 + k * au
        denominator = 1.0 - 2.0 * k * ab + k2 * a2 * b2
        return u + 2.0 * (coef_a * a + coef_b * b) / F.clip(denominator, low=1e-15)

    # -- metric --------------------------------------------------------------
    def inner(self, x, u, v=None, keepdim: bool = False) -> Tensor:
        """<u, v>_x = lambda_x^2 u . v."""
        x, u = self._points("inner", x, vectors=(u,))
        v = u if v is None else as_tensor(v)
        return self._lambda(x, keepdim) ** 2 * dot(u, v, keepdim)

    def component_inner(self, x, u) -> Tensor:
        x, u = as_tensor(x), as_tensor(u)
        return self._lambda(x) ** 2 * u * u

    def projx(self, x) -> Tensor:
        """x scaled back to the norm (1 - eps) / sqrt(c) where it lies beyond it."""
        x = as_tensor(x)
        x_norm = norm(x)
        largest = (1.0 - boundary_eps(x.dtype)) / self.sqrt_c
        outside = x_norm.data > largest
        if not bool(outside.any()):
            return x
        return F.where(outside, x / x_norm * largest, x)

    def proju(self, x, u) -> Tensor:
        """Every vector is tangent (the tangent space is R^n)."""
        return as_tensor(u)

    def egrad2rgrad(self, x, u) -> Tensor:
        """u / lambda_x^2 = u (1 - c||x||^2)^2 / 4 (the inverse metric)."""
        x, u = self._points("egrad2rgrad", x, vectors=(u,))
        return u / self._lambda(x) ** 2

    # -- maps ------------------------------------------------------------------
    def expmap(self, x, u, project: bool = True) -> Tensor:
        x, u = self._points("expmap", x, vectors=(u,))
        u_norm = norm(u)
        step = _tanh(self.sqrt_c * self._lambda(x) * u_norm / 2.0) * u / (self.sqrt_c * u_norm)
        y = self._add(x, step)
        return self.projx(y) if project else y

    def expmap0(self, u, project: bool = True) -> Tensor:
        """exp_0(u) = tanh(sqrt(c)|u|) u / (sqrt(c)|u|)."""
        u = as_tensor(u)
        u_norm = norm(u)
        y = _tanh(self.sqrt_c * u_norm) * u / (self.sqrt_c * u_norm)
        return self.projx(y) if project else y

    def logmap(self, x, y) -> Tensor:
        x, y = self._points("logmap", x, y)
        w = self._add(-x, y)
        w_norm = norm(w)
        return 2.0 / (self.sqrt_c * self._lambda(x)) * artanh(self.sqrt_c * w_norm) * w / w_norm

    def logmap0(self, y) -> Tensor:
        """log_0(y) = artanh(sqrt(c)|y|) y / (sqrt(c)|y|)."""
        (y,) = self._points("logmap0", y)
        y_norm = norm(y)
        return artanh(self.sqrt_c * y_norm) * y / (self.sqrt_c * y_norm)

    def retr(self, x, u) -> Tensor:
        """projx(x + u): the first-order retraction (Nickel and Kiela's update)."""
        x, u = as_tensor(x), as_tensor(u)
        self._check_shapes("retr", x, u)
        return self.projx(x + u)

    def transp(self, x, y, v) -> Tensor:
        x, y, v = self._points("transp", x, y, vectors=(v,))
        return self._gyration(y, -x, v) * self._lambda(x) / self._lambda(y)

    def transp0(self, y, v) -> Tensor:
        """Transport from the origin: v lambda_0 / lambda_y = v (1 - c|y|^2)."""
        y, v = self._points("transp0", y, vectors=(v,))
        return v * (2.0 / self._lambda(y))

    def dist(self, x, y, keepdim: bool = False) -> Tensor:
        x, y = self._points("dist", x, y)
        return 2.0 / self.sqrt_c * artanh(self.sqrt_c * norm(self._add(-x, y), keepdim))

    def dist0(self, y, keepdim: bool = False) -> Tensor:
        """d(0, y) = 2 / sqrt(c) artanh(sqrt(c)|y|)."""
        (y,) = self._points("dist0", y)
        return 2.0 / self.sqrt_c * artanh(self.sqrt_c * norm(y, keepdim))

    def origin(self, *shape, dtype=None):
        """Zeros of ``shape`` (the centre of the ball)."""
        return backend.xp.zeros(shape, dtype=dtype or backend.get_default_dtype())
