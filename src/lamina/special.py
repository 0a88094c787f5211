"""``lamina.special``: the special functions under ``torch.special``'s names, with gradients.

Most live in :mod:`lamina.functional` (gamma and error functions, the modified Bessel functions
of the first kind); :mod:`lamina.functional.special_more` adds the rest, and
:mod:`lamina.functional.orthogonal_polynomials` the classical orthogonal polynomials. ``psi`` and ``gammaln``
are ``digamma`` and ``lgamma``; ``modified_bessel_i0`` and ``modified_bessel_i1`` are ``i0`` and
``i1``. Arguments follow torch (``dim`` where torch has one)::

    import lamina
    from lamina import special

    x = lamina.tensor([0.5, 2.0], requires_grad=True)
    special.bessel_j0(x).sum().backward()        # x.grad = -J_1(x)
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.activation import log_softmax as _log_softmax
from lamina.functional.activation import softmax as _softmax
from lamina.functional.bessel import i0, i0e, i1, i1e
from lamina.functional.math_more import expm1, log1p, round  # noqa: A004 - torch's name
from lamina.functional.math_parity import exp2, sinc
from lamina.functional.orthogonal_polynomials import (
    chebyshev_polynomial_t,
    chebyshev_polynomial_u,
    chebyshev_polynomial_v,
    chebyshev_polynomial_w,
    hermite_polynomial_h,
    hermite_polynomial_he,
    laguerre_polynomial_l,
    legendre_polynomial_p,
    shifted_chebyshev_polynomial_t,
    shifted_chebyshev_polynomial_u,
    shifted_chebyshev_polynomial_v,
    shifted_chebyshev_polynomial_w,
)
from lamina.functional.reduce_more import logsumexp as _logsumexp
from lamina.functional.special import (
    digamma,
    erf,
    erfc,
    erfinv,
    expit,
    gammainc,
    lgamma,
    log_ndtr,
    logit,
    ndtr,
    ndtri,
    polygamma,
    xlogy,
)
from lamina.functional.special_more import (
    airy_ai,
    bessel_j0,
    bessel_j1,
    bessel_y0,
    bessel_y1,
    entr,
    erfcx,
    gammaincc,
    modified_bessel_k0,
    modified_bessel_k1,
    multigammaln,
    scaled_modified_bessel_k0,
    scaled_modified_bessel_k1,
    spherical_bessel_j0,
    xlog1py,
    zeta,
)

psi = digamma
gammaln = lgamma
modified_bessel_i0 = i0
modified_bessel_i1 = i1


def softmax(input, dim: int) -> Tensor:  # noqa: A002 - torch's name
    """softmax over ``dim``, as torch.special.softmax."""
    return _softmax(input, dim)


def log_softmax(input, dim: int) -> Tensor:  # noqa: A002 - torch's name
    """log softmax over ``dim``, as torch.special.log_softmax."""
    return _log_softmax(input, dim)


def logsumexp(input, dim, keepdim: bool = False) -> Tensor:  # noqa: A002 - torch's name
    """log sum exp over ``dim``, as torch.special.logsumexp."""
    return _logsumexp(input, dim, keepdim)


__all__ = ["airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "chebyshev_polynomial_t",
           "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w", "hermite_polynomial_h",
           "hermite_polynomial_he", "laguerre_polynomial_l", "legendre_polynomial_p", "shifted_chebyshev_polynomial_t",
           "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v", "shifted_chebyshev_polynomial_w",
           "digamma", "entr", "erf", "erfc", "erfcx",
           "erfinv", "exp2", "expit", "expm1", "gammainc", "gammaincc", "gammaln", "i0", "i0e", "i1", "i1e",
           "log1p", "log_ndtr", "log_softmax", "logit", "logsumexp", "modified_bessel_i0", "modified_bessel_i1",
           "modified_bessel_k0", "modified_bessel_k1", "multigammaln", "ndtr", "ndtri", "polygamma", "psi", "round",
           "scaled_modified_bessel_k0", "scaled_modified_bessel_k1", "sinc", "softmax", "spherical_bessel_j0",
           "xlog1py", "xlogy", "zeta"]
