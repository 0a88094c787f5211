"""The classical orthogonal polynomials of ``torch.special``, p_n(x) for integer degrees n
(broadcast against x; n < 0 gives 0, a fractional n is truncated, as torch), each computed by its
three-term recurrence p_(k+1) = a_k(x) p_k - b_k p_(k-1) run with lamina's ops, so that the
derivative in x comes from the recurrence (torch gives none):

    Chebyshev T: T_0 = 1, T_1 = x,      T_(k+1) = 2x T_k - T_(k-1)    (U: U_1 = 2x; V: V_1 = 2x - 1;
                                                                       W: W_1 = 2x + 1; same step)
    Hermite H:   H_0 = 1, H_1 = 2x,     H_(k+1) = 2x H_k - 2k H_(k-1)
    Hermite He:  He_0 = 1, He_1 = x,    He_(k+1) = x He_k - k He_(k-1)
    Laguerre L:  L_0 = 1, L_1 = 1 - x,  L_(k+1) = ((2k + 1 - x) L_k - k L_(k-1)) / (k + 1)
    Legendre P:  P_0 = 1, P_1 = x,      P_(k+1) = ((2k + 1) x P_k - k P_(k-1)) / (k + 1)

and the shifted Chebyshev polynomials T*_n(x) = T_n(2x - 1) (likewise U*, V*, W*). The cost is
n steps over the broadcast shape, for the largest n asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional.elementwise import abs as abs_
from lamina.functional.elementwise import minimum, where
from lamina.functional.shape import broadcast_to


def _degrees(n, who: str):
    xp = backend.xp
    data = n.data if isinstance(n, Tensor) else xp.asarray(n)
    if data.dtype.kind not in "iuf" or (data.dtype.kind == "f" and not bool(xp.all(xp.isfinite(data)))):
        raise ValueError(f"{who}: n must hold finite numbers (the degrees), got dtype {data.dtype}")
    return xp.trunc(data).astype(xp.int64) if data.dtype.kind == "f" else data.astype(xp.int64)


def _polynomial(x, n, first: Callable, step: Callable, who: str) -> Tensor:
    x = _floating(x)
    degrees = _degrees(n, who)
    xp = backend.xp
    shape = xp.broadcast_shapes(x.shape, degrees.shape)
    if x.shape != shape:
        x = broadcast_to(x, shape)
    degrees = xp.broadcast_to(degrees, shape)
    before = Tensor._wrap(xp.ones(shape, dtype=x.dtype)) + minimum(abs_(x), 0.0)   # 1, on the graph of x
    out = where(degrees == 0, before, 0.0)
    top = int(degrees.max()) if degrees.size else 0
    if top < 1:
        return out
    current = first(x)
    out = where(degrees == 1, current, out)
    for k in range(1, top):
        before, current = current, step(k, x, current, before)
        out = where(degrees == k + 1, current, out)
    return out


def _floating(x) -> Tensor:
    """x as a tensor of a floating dtype (integers take the default one, as torch)."""
    if isinstance(x, Tensor):
        return x if x.dtype.kind == "f" else Tensor._wrap(x.data.astype(backend.get_default_dtype()))
    return Tensor(x)


def _chebyshev_step(k, x, p, q):
    return 2.0 * x * p - q


def chebyshev_polynomial_t(x, n) -> Tensor:
    """T_n(x), the Chebyshev polynomial of the first kind."""
    return _polynomial(x, n, lambda x: x, _chebyshev_step, "chebyshev_polynomial_t")


def chebyshev_polynomial_u(x, n) -> Tensor:
    """U_n(x), the Chebyshev polynomial of the second kind."""
    return _polynomial(x, n, lambda x: 2.0 * x, _chebyshev_step, "chebyshev_polynomial_u")


def chebyshev_polynomial_v(x, n) -> Tensor:
    """V_n(x), the Chebyshev polynomial of the third kind."""
    return _polynomial(x, n, lambda x: 2.0 * x - 1.0, _chebyshev_step, "chebyshev_polynomial_v")


def chebyshev_polynomial_w(x, n) -> Tensor:
    """W_n(x), the Chebyshev polynomial of the fourth kind."""
    return _polynomial(x, n, lambda x: 2.0 * x + 1.0, _chebyshev_step, "chebyshev_polynomial_w")


def _shifted(x) -> Tensor:
    return 2.0 * _floating(x) - 1.0


def shifted_chebyshev_polynomial_t(x, n) -> Tensor:
    """T*_n(x) = T_n(2x - 1), orthogonal on [0, 1]."""
    return chebyshev_polynomial_t(_shifted(x), n)


def shifted_chebyshev_polynomial_u(x, n) -> Tensor:
    """U*_n(x) = U_n(2x - 1)."""
    return chebyshev_polynomial_u(_shifted(x), n)


def shifted_chebyshev_polynomial_v(x, n) -> Tensor:
    """V*_n(x) = V_n(2x - 1)."""
    return chebyshev_polynomial_v(_shifted(x), n)


def shifted_chebyshev_polynomial_w(x, n) -> Tensor:
    """W*_n(x) = W_n(2x - 1)."""
    return chebyshev_polynomial_w(_shifted(x), n)


def hermite_polynomial_h(x, n) -> Tensor:
    """H_n(x), the physicists' Hermite polynomial."""
    return _polynomial(x, n, lambda x: 2.0 * x, lambda k, x, p, q: 2.0 * x * p - (2.0 * k) * q,
                       "hermite_polynomial_h")


def hermite_polynomial_he(x, n) -> Tensor:
    """He_n(x), the probabilists' Hermite polynomial."""
    return _polynomial(x, n, lambda x: x, lambda k, x, p, q: x * p - float(k) * q, "hermite_polynomial_he")


def laguerre_polynomial_l(x, n) -> Tensor:
    """L_n(x), the Laguerre polynomial."""
    return _polynomial(x, n, lambda x: 1.0 - x,
                       lambda k, x, p, q: ((2.0 * k + 1.0 - x) * p - float(k) * q) / (k + 1.0),
                       "laguerre_polynomial_l")


def legendre_polynomial_p(x, n) -> Tensor:
    """P_n(x), the Legendre polynomial."""
    return _polynomial(x, n, lambda x: x, lambda k, x, p, q: ((2.0 * k + 1.0) * x * p - float(k) * q) / (k + 1.0),
                       "legendre_polynomial_p")


__all__ = ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
           "hermite_polynomial_h", "hermite_polynomial_he", "laguerre_polynomial_l", "legendre_polynomial_p",
           "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
           "shifted_chebyshev_polynomial_w"]
