"""Special functions of probability and statistics, each an op with its derivatives:
log-gamma, digamma and polygamma, the error function and its inverse, the normal CDF and
its log, x log y, the regularized lower incomplete gamma function, logit.

Values come from SciPy (CuPy's SciPy on the GPU) evaluated in the input's precision; the
derivatives form a ladder, each rung an op of this module, so that every op here is also
differentiable twice or more:

    d lgamma(x)/dx = digamma(x),  d digamma(x)/dx = polygamma(1, x),
    d polygamma(n, x)/dx = polygamma(n + 1, x),
    d erf(x)/dx = 2 e^(-x^2) / sqrt(pi),  d erfinv(y)/dy = sqrt(pi) e^(erfinv(y)^2) / 2.
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import cast
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.activation import sigmoid
from lamina.functional.elementwise import clip, exp, log, where
from lamina.functional.math_more import log1p

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
SQRT_PI_OVER_2 = math.sqrt(math.pi) / 2.0
SQRT_2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)


def scipy_special(name: str):
    """The element-wise function ``name`` of ``scipy.special`` for the active arrays (CuPy's
    ``cupyx.scipy.special`` on the GPU)."""
    if backend.xp.__name__ == "numpy":
        import scipy.special as module
    else:  # pragma: no cover - depends on the machine
        import cupyx.scipy.special as module
    return getattr(module, name)


def _in_dtype_of(values, *arrays):
    """``values`` in the floating dtype of the inputs (SciPy computes some functions in float64
    whatever it is given); integer inputs give the default floating dtype."""
    floats = [a.dtype for a in arrays if a.dtype.kind == "f"]
    dtype = backend.xp.result_type(*floats) if floats else backend.get_default_dtype()
    return backend.xp.asarray(values).astype(dtype, copy=False)


class _Unary(Function):
    """y = f(x) element-wise with dy/dx = ``slope(x, y)`` on arrays and ``slope_of(x, y)`` on
    tensors (the recorded form, differentiated again for second derivatives)."""

    def forward(self, x):
        self.x = x
        self.y = _in_dtype_of(self.value(x), x)
        return self.y

    def backward(self, dy):
        return (dy * self.slope(self.x, self.y),)

    def backward_graph(self, dy):
        return (dy * self.slope_of(self.inputs[0], self.recorded_output(self.y)),)


class Lgamma(_Unary):
    """y = log|Gamma(x)|; dy/dx = digamma(x)."""

    def value(self, x):
        return scipy_special("gammaln")(x)

    def slope(self, x, y):
        return _in_dtype_of(scipy_special("psi")(x), x)

    def slope_of(self, x, y):
        return digamma(x)


class Polygamma(_Unary):
    """y = psi^(n)(x), the n-th derivative of digamma (n = 0: digamma itself, psi(x) =
    Gamma'(x) / Gamma(x)); dy/dx = psi^(n+1)(x)."""

    def value(self, x):
        return scipy_special("psi")(x) if self.n == 0 else scipy_special("polygamma")(self.n, x)

    def slope(self, x, y):
        return _in_dtype_of(scipy_special("polygamma")(self.n + 1, x), x)

    def slope_of(self, x, y):
        return polygamma(self.n + 1, x)


class Erf(_Unary):
    """y = erf(x) = (2 / sqrt(pi)) int_0^x e^(-t^2) dt; dy/dx = 2 e^(-x^2) / sqrt(pi)."""

    sign = 1.0

    def value(self, x):
        return scipy_special("erf")(x)

    def slope(self, x, y):
        return (self.sign * TWO_OVER_SQRT_PI) * backend.xp.exp(-(x * x))

    def slope_of(self, x, y):
        return exp(-(x * x)) * (self.sign * TWO_OVER_SQRT_PI)


class Erfc(Erf):
    """y = erfc(x) = 1 - erf(x), without erf's cancellation for large x; dy/dx = -2 e^(-x^2) / sqrt(pi)."""

    sign = -1.0

    def value(self, x):
        return scipy_special("erfc")(x)


class Erfinv(_Unary):
    """y = erf^-1(x) for x in [-1, 1]; dy/dx = 1 / erf'(y) = sqrt(pi) e^(y^2) / 2."""

    def value(self, x):
        return scipy_special("erfinv")(x)

    def slope(self, x, y):
        return SQRT_PI_OVER_2 * backend.xp.exp(y * y)

    def slope_of(self, x, y):
        return exp(y * y) * SQRT_PI_OVER_2


class Ndtri(_Unary):
    """y = Phi^-1(p), the standard normal quantile; dy/dp = 1 / phi(y) = sqrt(2 pi) e^(y^2 / 2)."""

    def value(self, x):
        return scipy_special("ndtri")(x)

    def slope(self, x, y):
        return SQRT_2PI * backend.xp.exp(0.5 * y * y)

    def slope_of(self, x, y):
        return exp(y * y * 0.5) * SQRT_2PI


class LogNdtr(_Unary):
    """y = log Phi(x), accurate far into the left tail; dy/dx = phi(x) / Phi(x) =
    e^(-x^2 / 2 - y) / sqrt(2 pi)."""

    def value(self, x):
        return scipy_special("log_ndtr")(x)

    def slope(self, x, y):
        return backend.xp.exp(-0.5 * x * x - y) / SQRT_2PI

    def slope_of(self, x, y):
        return exp(x * x * -0.5 - y) / SQRT_2PI


class Xlogy(Function):
    """z = x log y, and 0 where x = 0 (whatever y is, as the limit of x log x); dz/dx = log y,
    taken as 0 where x = 0 and y <= 0 (as PyTorch), dz/dy = x / y."""
    dtype_rule = "float"

    def forward(self, x, y):
        self.x, self.y = x, y
        return _in_dtype_of(scipy_special("xlogy")(x, y), x, y)

    def backward(self, dy):
        xp = backend.xp
        x, y = self.x, self.y
        dx = dz_dy = None
        if self.needs_grad[0]:
            has_log = _has_log(x, y)
            with _quiet():
                dx = unbroadcast(xp.where(has_log, dy * xp.log(xp.where(has_log, y, 1)), 0), x.shape)
        if self.needs_grad[1]:
            dz_dy = unbroadcast(dy * x / y, y.shape)
        return dx, dz_dy

    def backward_graph(self, dy):
        x, y = self.inputs
        dx = dz_dy = None
        if self.needs_grad[0]:
            has_log = _has_log(self.x, self.y)
            dx = sum_to(where(has_log, dy * log(where(has_log, y, 1.0)), 0.0), x.shape)
        if self.needs_grad[1]:
            dz_dy = sum_to(dy * x / y, y.shape)
        return dx, dz_dy


def _has_log(x, y):
    """Where dz/dx = log y is taken (everywhere but x = 0 with y <= 0)."""
    return (x != 0) | (y > 0)


def _quiet():
    return numpy.errstate(divide="ignore", invalid="ignore")


class GammaInc(Function):
    """P(a, x) = gamma(a, x) / Gamma(a), the regularized lower incomplete gamma function (the
    CDF of Gamma(a, 1) at x); dP/dx = x^(a-1) e^(-x) / Gamma(a). The derivative in a has no
    closed form and is not provided (as in PyTorch). Subclasses change ``name`` (the SciPy
    function and the op's name in errors) and ``sign`` (of dy/dx)."""

    name = "gammainc"
    sign = 1.0

    def forward(self, a, x):
        self.a, self.x = a, x
        return _in_dtype_of(scipy_special(self.name)(a, x), a, x)

    def _refuse_a(self):
        if self.needs_grad[0]:
            raise NotImplementedError(f"{self.name}(a, x): the derivative with respect to a is not implemented; "
                                      "pass a as a constant (detach it)")

    def backward(self, dy):
        self._refuse_a()
        xp = backend.xp
        a, x = self.a, self.x
        with _quiet():
            log_density = scipy_special("xlogy")(a - 1, x) - x - scipy_special("gammaln")(a)
        return None, unbroadcast(self.sign * dy * _in_dtype_of(xp.exp(log_density), a, x), x.shape)

    def backward_graph(self, dy):
        self._refuse_a()
        a, x = self.inputs
        a = Tensor._wrap(a.data)
        return None, sum_to(self.sign * dy * exp(xlogy(a - 1.0, x) - x - lgamma(a)), x.shape)


# -- wrappers -----------------------------------------------------------------------------
def lgamma(x) -> Tensor:
    """log|Gamma(x)|, element-wise."""
    return Lgamma.apply(x)


def digamma(x) -> Tensor:
    """psi(x) = d log Gamma(x) / dx, element-wise."""
    return Polygamma.apply(x, n=0)


def polygamma(n: int, x) -> Tensor:
    """psi^(n)(x), the n-th derivative of digamma (n >= 0; n = 0 is digamma), element-wise."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"polygamma: n must be a whole number >= 0 (an int), got {n!r}")
    return Polygamma.apply(x, n=int(n))


def erf(x) -> Tensor:
    """The error function erf(x) = (2 / sqrt(pi)) int_0^x e^(-t^2) dt, element-wise."""
    return Erf.apply(x)


def erfc(x) -> Tensor:
    """The complementary error function 1 - erf(x), element-wise."""
    return Erfc.apply(x)


def erfinv(x) -> Tensor:
    """The inverse error function on [-1, 1] (+-inf at +-1), element-wise."""
    return Erfinv.apply(x)


def ndtr(x) -> Tensor:
    """Phi(x), the standard normal CDF: erfc(-x / sqrt 2) / 2 (precise in the left tail)."""
    return erfc(x * (-1.0 / SQRT_2)) * 0.5


def ndtri(p) -> Tensor:
    """Phi^-1(p), the standard normal quantile function, element-wise."""
    return Ndtri.apply(p)


def log_ndtr(x) -> Tensor:
    """log Phi(x), the log of the standard normal CDF, element-wise."""
    return LogNdtr.apply(x)


def xlogy(x, y) -> Tensor:
    """x log y element-wise (broadcast), 0 where x = 0: the terms of an entropy or a log-likelihood."""
    return Xlogy.apply(x, y)


def gammainc(a, x) -> Tensor:
    """P(a, x), the regularized lower incomplete gamma function (broadcast); differentiable in x only."""
    return GammaInc.apply(a, x)


def logit(p, eps: float | None = None) -> Tensor:
    """log(p / (1 - p)), the inverse of the sigmoid; ``eps`` clamps p to [eps, 1 - eps] first.
    Integer or boolean p is taken in the default float dtype (as PyTorch: logit(True) = inf)."""
    p = p if isinstance(p, Tensor) else Tensor(p)
    if p.dtype.kind in "biu":
        p = cast(p, backend.get_default_dtype())
    if eps is not None:
        p = clip(p, eps, 1.0 - eps)
    return log(p) - log1p(-p)


def expit(x) -> Tensor:
    """1 / (1 + e^-x), the logistic sigmoid (the inverse of :func:`logit`)."""
    return sigmoid(x)
