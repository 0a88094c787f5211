"""The rest of ``torch.special``: the scaled complementary error function, entropy terms,
x log(1 + y), the upper incomplete gamma function, the multivariate log-gamma, Hurwitz's
zeta, Bessel functions of the first and second kind (J, Y), modified Bessel functions of the
second kind (K) and their scaled forms, the spherical Bessel j_0 and Airy's Ai. Each op has
its derivative (where PyTorch has none, as for J, Y, K and Ai, lamina gives the classical one):

    erfcx'(x) = 2 x erfcx(x) - 2 / sqrt(pi),      entr'(x) = -(log x + 1),
    J_0' = -J_1,   J_1' = J_0 - J_1 / x,          Y_0' = -Y_1,   Y_1' = Y_0 - Y_1 / x,
    K_0' = -K_1,   K_1' = -K_0 - K_1 / x,         Ai'' = x Ai,
    d/dq zeta(x, q) = -x zeta(x + 1, q)           (none in x, as in PyTorch).

Values come from SciPy (CuPy's on the GPU) in the input's precision.
"""

from __future__ import annotations

import math
import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.bessel import _over_x
from lamina.functional.elementwise import log, where
from lamina.functional.math_more import cos, log1p, sin
from lamina.functional.reduce import sum as sum_
from lamina.functional.shape import stack
from lamina.functional.special import GammaInc, _in_dtype_of, _quiet, _Unary, lgamma, scipy_special

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _tensor_over_x(values: Tensor, x: Tensor) -> Tensor:
    return values / where(x.data == 0, 1.0, x)


class Erfcx(_Unary):
    """y = erfcx(x) = e^(x^2) erfc(x); dy/dx = 2 x y - 2 / sqrt(pi)."""

    def value(self, x):
        return scipy_special("erfcx")(x)

    def slope(self, x, y):
        return 2.0 * x * y - TWO_OVER_SQRT_PI

    def slope_of(self, x, y):
        return 2.0 * x * y - TWO_OVER_SQRT_PI


class Entr(_Unary):
    """y = -x log x (0 at 0, -inf below); dy/dx = -(log x + 1), as PyTorch (inf at 0, NaN below)."""

    def value(self, x):
        return scipy_special("entr")(x)

    def slope(self, x, y):
        with _quiet():
            return -(backend.xp.log(x) + 1.0)

    def slope_of(self, x, y):
        return -(log(x) + 1.0)


def _bessel(class_name: str, name: str, derivative: str, doc: str) -> type[_Unary]:
    """The op y = scipy.special's ``name``(x), whose slope is ``_SLOPES[derivative](x, y, as_tensor)``
    (on arrays for backward, on tensors for the recorded backward)."""
    return type(class_name, (_Unary,), {"__doc__": doc, "__module__": __name__,
                                        "value": lambda self, x: scipy_special(name)(x),
                                        "slope": lambda self, x, y: _SLOPES[derivative](x, y, False),
                                        "slope_of": lambda self, x, y: _SLOPES[derivative](x, y, True)})


def _special(name: str, x, as_tensor: bool):
    if as_tensor:
        return _OPS[name](x)
    return _in_dtype_of(scipy_special(name)(x), x)


def _minus(name: str):
    return lambda x, y, t: -_special(name, x, t)


def _first_order_slope(zeroth: str, at_zero: float | None):
    """d/dx of an order-1 function f_1 whose derivative is f_0 - f_1 / x (J_1, I_1-like; Y_1, K_1
    with signs below); ``at_zero`` is the limit at x = 0 (None: no finite limit)."""
    def slope(x, y, as_tensor):
        if as_tensor:
            value = _special(zeroth, x, True) - _tensor_over_x(y, x)
            return value if at_zero is None else where(x.data == 0, at_zero, value)
        value = _special(zeroth, x, False) - _over_x(y, x)
        return value if at_zero is None else backend.xp.where(x == 0, value.dtype.type(at_zero), value)
    return slope


def _k1_slope(x, y, as_tensor):
    if as_tensor:
        return -_special("k0", x, True) - _tensor_over_x(y, x)
    return -_special("k0", x, False) - _over_x(y, x)


def _k0e_slope(x, y, as_tensor):
    return y - _special("k1e", x, as_tensor)


def _k1e_slope(x, y, as_tensor):
    if as_tensor:
        return y - _tensor_over_x(y, x) - _special("k0e", x, True)
    return y - _over_x(y, x) - _special("k0e", x, False)


_SLOPES = {
    "-j1": _minus("j1"), "j1": _first_order_slope("j0", 0.5),
    "-y1": _minus("y1"), "y1": _first_order_slope("y0", None),
    "-k1": _minus("k1"), "k1": _k1_slope, "k0e": _k0e_slope, "k1e": _k1e_slope,
}

BesselJ0 = _bessel("BesselJ0", "j0", "-j1", "y = J_0(x); dy/dx = -J_1(x).")
BesselJ1 = _bessel("BesselJ1", "j1", "j1", "y = J_1(x); dy/dx = J_0(x) - y / x (1/2 at 0).")
BesselY0 = _bessel("BesselY0", "y0", "-y1", "y = Y_0(x) (x > 0); dy/dx = -Y_1(x).")
BesselY1 = _bessel("BesselY1", "y1", "y1", "y = Y_1(x) (x > 0); dy/dx = Y_0(x) - y / x.")
BesselK0 = _bessel("BesselK0", "k0", "-k1", "y = K_0(x) (x > 0); dy/dx = -K_1(x).")
BesselK1 = _bessel("BesselK1", "k1", "k1", "y = K_1(x) (x > 0); dy/dx = -K_0(x) - y / x.")
BesselK0e = _bessel("BesselK0e", "k0e", "k0e", "y = e^x K_0(x); dy/dx = y - e^x K_1(x).")
BesselK1e = _bessel("BesselK1e", "k1e", "k1e", "y = e^x K_1(x); dy/dx = y (1 - 1 / x) - e^x K_0(x).")


#: Beyond this |x| (and SciPy's Airy functions give NaN from about 5e6): Ai and Ai' have underflowed to
#: 0 for large positive x, and for large negative x their leading asymptotic terms are within 1e-9.
AIRY_ASYMPTOTIC = 1e6


def _airy(x, derivative: bool):
    """Ai(x) or Ai'(x) on arrays: SciPy's inside +-AIRY_ASYMPTOTIC, the asymptotic forms outside
    (Ai(-z) ~ pi^(-1/2) z^(-1/4) sin(zeta + pi/4), Ai'(-z) ~ -pi^(-1/2) z^(1/4) cos(zeta + pi/4),
    zeta = 2/3 z^(3/2); both 0 for large positive x)."""
    xp = backend.xp
    inside = xp.abs(x) < AIRY_ASYMPTOTIC
    value = scipy_special("airy")(xp.where(inside, x, 0.0))[1 if derivative else 0]
    if bool(xp.all(inside)):
        return value
    with _quiet():
        z = xp.where(x < 0, -x, 1.0)
        phase = 2.0 / 3.0 * z ** 1.5 + math.pi / 4
        far = (-(z ** 0.25) * xp.cos(phase) if derivative else z ** -0.25 * xp.sin(phase)) / math.sqrt(math.pi)
    return xp.where(inside, value, xp.where(x < 0, far, 0.0))


class AiryAiPrime(_Unary):
    """y = Ai'(x); dy/dx = x Ai(x) (Airy's equation)."""

    def value(self, x):
        return _airy(x, True)

    def slope(self, x, y):
        return x * _in_dtype_of(_airy(x, False), x)

    def slope_of(self, x, y):
        return x * airy_ai(x)


class AiryAi(_Unary):
    """y = Ai(x); dy/dx = Ai'(x)."""

    def value(self, x):
        return _airy(x, False)

    def slope(self, x, y):
        return _in_dtype_of(_airy(x, True), x)

    def slope_of(self, x, y):
        return AiryAiPrime.apply(x)


class SphericalJ0(_Unary):
    """y = j_0(x) = sin(x) / x (1 at 0, 0 at +-inf); dy/dx = (x cos x - sin x) / x^2 (0 at 0)."""

    def value(self, x):
        xp = backend.xp
        with _quiet():
            return xp.where(x == 0, 1.0, xp.where(xp.isinf(x), 0.0, xp.sin(x) / xp.where(x == 0, 1.0, x)))

    def slope(self, x, y):
        xp = backend.xp
        safe = xp.where(x == 0, 1.0, x)
        return xp.where(x == 0, 0.0, (xp.cos(x) - y) / safe)

    def slope_of(self, x, y):
        zero = x.data == 0
        safe = where(zero, 1.0, x)
        return where(zero, x * (-1.0 / 3.0), (cos(x) - sin(x) / safe) / safe)   # j_0''(0) = -1/3


class Xlog1py(Function):
    """z = x log(1 + y), 0 where x = 0 (as PyTorch, for any y but NaN); dz/dx = log(1 + y), taken
    as 0 where x = 0 and y <= -1 (as PyTorch), dz/dy = x / (1 + y)."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return _in_dtype_of(scipy_special("xlog1py")(x, y), x, y)

    def backward(self, dz):
        xp = backend.xp
        dx = dy = None
        if self.needs_grad[0]:
            has_log = (self.x != 0) | (self.y > -1)
            with _quiet():
                dx = unbroadcast(xp.where(has_log, dz * xp.log1p(xp.where(has_log, self.y, 0)), 0), self.x.shape)
        if self.needs_grad[1]:
            dy = unbroadcast(dz * self.x / (1.0 + self.y), self.y.shape)
        return dx, dy

    def backward_graph(self, dz):
        x, y = self.inputs
        dx = dy = None
        if self.needs_grad[0]:
            has_log = (self.x != 0) | (self.y > -1)
            dx = sum_to(where(has_log, dz * log1p(where(has_log, y, 0.0)), 0.0), x.shape)
        if self.needs_grad[1]:
            dy = sum_to(dz * x / (1.0 + y), y.shape)
        return dx, dy


class GammaIncc(GammaInc):
    """Q(a, x) = 1 - P(a, x), the regularized upper incomplete gamma function (computed directly,
    precise where it is small); dQ/dx = -x^(a-1) e^(-x) / Gamma(a), none in a (as PyTorch)."""

    name = "gammaincc"
    sign = -1.0


class Zeta(Function):
    """zeta(x, q) = sum_k (k + q)^(-x), Hurwitz's zeta function; d/dq = -x zeta(x + 1, q). The
    derivative in x is not provided (as in PyTorch)."""

    def forward(self, x, q):
        self.x, self.q = x, q
        return _in_dtype_of(scipy_special("zeta")(x, q), x, q)

    def backward(self, dy):
        if self.needs_grad[0]:
            raise NotImplementedError("zeta(x, q): the derivative with respect to x is not implemented; pass x as a "
                                      "constant (detach it)")
        slope = -self.x * _in_dtype_of(scipy_special("zeta")(self.x + 1, self.q), self.x, self.q)
        return None, unbroadcast(dy * slope, self.q.shape)

    def backward_graph(self, dy):
        if self.needs_grad[0]:
            raise NotImplementedError("zeta(x, q): the derivative with respect to x is not implemented")
        x, q = self.inputs
        x = Tensor._wrap(x.data)
        return None, sum_to(dy * -x * zeta(x + 1.0, q), q.shape)


# -- wrappers -----------------------------------------------------------------------------------
def erfcx(x) -> Tensor:
    """e^(x^2) erfc(x), finite where erfc underflows."""
    return Erfcx.apply(x)


def entr(x) -> Tensor:
    """-x log x element-wise (0 at 0, -inf for x < 0): the terms of an entropy."""
    return Entr.apply(x)


def xlog1py(x, y) -> Tensor:
    """x log(1 + y) element-wise (broadcast), 0 where x = 0."""
    return Xlog1py.apply(x, y)


def gammaincc(a, x) -> Tensor:
    """Q(a, x) = 1 - P(a, x), the regularized upper incomplete gamma function; differentiable in x only."""
    return GammaIncc.apply(a, x)


def multigammaln(a, p: int) -> Tensor:
    """log Gamma_p(a) = p (p - 1) / 4 log(pi) + sum_{j<p} log Gamma(a - j / 2), the multivariate
    log-gamma function (a > (p - 1) / 2), as torch.special.multigammaln."""
    if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1:
        raise ValueError(f"multigammaln: p must be an integer >= 1, got {p!r}")
    a = a if isinstance(a, Tensor) else Tensor(a)
    if bool(backend.xp.any(a.data <= (p - 1) / 2)):
        raise ValueError(f"multigammaln: every a must exceed (p - 1) / 2 = {(p - 1) / 2} for p = {p}, got "
                         f"{float(backend.xp.min(a.data))}")
    terms = stack([lgamma(a - j / 2.0) for j in range(p)], axis=-1)
    return sum_(terms, axis=-1) + p * (p - 1) / 4.0 * math.log(math.pi)


def zeta(x, q) -> Tensor:
    """Hurwitz's zeta function sum_k (k + q)^(-x) (broadcast); differentiable in q only."""
    return Zeta.apply(x, q)


def bessel_j0(x) -> Tensor:
    """J_0(x), the Bessel function of the first kind of order 0."""
    return BesselJ0.apply(x)


def bessel_j1(x) -> Tensor:
    """J_1(x), the Bessel function of the first kind of order 1."""
    return BesselJ1.apply(x)


def bessel_y0(x) -> Tensor:
    """Y_0(x), the Bessel function of the second kind of order 0 (x > 0)."""
    return BesselY0.apply(x)


def bessel_y1(x) -> Tensor:
    """Y_1(x), the Bessel function of the second kind of order 1 (x > 0)."""
    return BesselY1.apply(x)


def modified_bessel_k0(x) -> Tensor:
    """K_0(x), the modified Bessel function of the second kind of order 0 (x > 0)."""
    return BesselK0.apply(x)


def modified_bessel_k1(x) -> Tensor:
    """K_1(x), the modified Bessel function of the second kind of order 1 (x > 0)."""
    return BesselK1.apply(x)


def scaled_modified_bessel_k0(x) -> Tensor:
    """e^x K_0(x), finite where K_0 underflows."""
    return BesselK0e.apply(x)


def scaled_modified_bessel_k1(x) -> Tensor:
    """e^x K_1(x), finite where K_1 underflows."""
    return BesselK1e.apply(x)


def spherical_bessel_j0(x) -> Tensor:
    """j_0(x) = sin(x) / x (1 at 0), the spherical Bessel function of the first kind of order 0."""
    return SphericalJ0.apply(x)


def airy_ai(x) -> Tensor:
    """Ai(x), the Airy function of the first kind."""
    return AiryAi.apply(x)


_OPS = {"j0": bessel_j0, "j1": bessel_j1, "y0": bessel_y0, "y1": bessel_y1, "k0": modified_bessel_k0,
        "k1": modified_bessel_k1, "k0e": scaled_modified_bessel_k0, "k1e": scaled_modified_bessel_k1}

__all__ = ["airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "entr", "erfcx", "gammaincc",
           "modified_bessel_k0", "modified_bessel_k1", "multigammaln", "scaled_modified_bessel_k0",
           "scaled_modified_bessel_k1", "spherical_bessel_j0", "xlog1py", "zeta"]
