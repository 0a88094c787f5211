"""The multivariate normal distribution N(mu, Sigma), parameterized through the Cholesky
factor L of its covariance (Sigma = L L^T, L lower triangular with a positive diagonal):

    log p(x) = -(d log(2 pi) + |L^-1 (x - mu)|^2) / 2 - sum_i log L_ii
    H = d (1 + log(2 pi)) / 2 + sum_i log L_ii
    rsample: mu + L eps, eps ~ N(0, I_d)

with one triangular solve in place of the inverse of Sigma and the sum of log L_ii for half
of log det Sigma.
"""

from __future__ import annotations

import math

import numpy

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, _float_dtype, as_tensor
from lamina.errors import ShapeError
from lamina.functional import broadcast_to, diagonal, log, matmul, transpose
from lamina.functional.linalg import cholesky, inv, solve_triangular

LOG_2PI = math.log(2.0 * math.pi)


class _PositiveDefinite(constraints.Constraint):
    description = "symmetric positive definite (a square matrix in the last two axes)"

    def check(self, x):
        x = numpy.asarray(x)
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            return numpy.zeros(x.shape[:-2] if x.ndim >= 2 else (), dtype=bool)
        symmetric = numpy.all(numpy.isclose(x, numpy.swapaxes(x, -1, -2), rtol=1e-6, atol=1e-8), axis=(-2, -1))
        return symmetric & numpy.all(numpy.linalg.eigvalsh(x) > 0, axis=-1)


class _LowerCholesky(constraints.Constraint):
    description = "lower triangular with a positive diagonal (a square matrix in the last two axes)"

    def check(self, x):
        x = numpy.asarray(x)
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            return numpy.zeros(x.shape[:-2] if x.ndim >= 2 else (), dtype=bool)
        lower = numpy.all(numpy.triu(x, 1) == 0, axis=(-2, -1))
        return lower & numpy.all(numpy.diagonal(x, axis1=-2, axis2=-1) > 0, axis=-1)


positive_definite = _PositiveDefinite()
lower_cholesky = _LowerCholesky()


def _transposed(a):
    return transpose(a, *range(a.ndim - 2), a.ndim - 1, a.ndim - 2)


def _half_log_det(scale_tril):
    """log det(L) = sum_i log L_ii = half of log det Sigma."""
    return F.sum(log(diagonal(scale_tril)), axis=-1)


def _solve_lower(scale_tril, values):
    """L^-1 v for vectors v (..., d), L broadcast to their batch axes."""
    shape = tuple(values.shape[:-1]) + tuple(scale_tril.shape[-2:])
    scale_tril = scale_tril if tuple(scale_tril.shape) == shape else broadcast_to(scale_tril, shape)
    column = values.reshape(*values.shape, 1)
    return solve_triangular(scale_tril, column, upper=False).reshape(*values.shape)


class MultivariateNormal(Distribution):
    """N(loc, Sigma) over vectors of d values, given exactly one of ``covariance_matrix``
    Sigma, ``precision_matrix`` Sigma^-1 or ``scale_tril`` L (..., d, d); ``loc`` (..., d).
    The batch shape is the broadcast of loc's and the matrix's leading axes; the event shape
    is (d,). See the module docstring for the formulas."""

    arg_constraints = {"loc": constraints.real_vector, "covariance_matrix": positive_definite,
                       "precision_matrix": positive_definite, "scale_tril": lower_cholesky}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, covariance_matrix=None, precision_matrix=None, scale_tril=None,
                 validate_args: bool | None = None):
        given = {name: value for name, value in (("covariance_matrix", covariance_matrix),
                                                 ("precision_matrix", precision_matrix),
                                                 ("scale_tril", scale_tril)) if value is not None}
        if len(given) != 1:
            raise ValueError("MultivariateNormal: give exactly one of covariance_matrix, precision_matrix or "
                             f"scale_tril, got {sorted(given) or 'none'}")
        (name, matrix), = given.items()
        dtype = _float_dtype([loc, matrix])
        loc, matrix = as_tensor(loc, dtype), as_tensor(matrix, dtype)
        if loc.ndim < 1 or matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2] or \
                matrix.shape[-1] != loc.shape[-1]:
            raise ShapeError(f"MultivariateNormal: loc of shape {tuple(loc.shape)} and {name} of shape "
                             f"{tuple(matrix.shape)}; expected (..., d) and (..., d, d)")
        try:
            batch = numpy.broadcast_shapes(tuple(loc.shape[:-1]), tuple(matrix.shape[:-2]))
        except ValueError:
            raise ShapeError(f"MultivariateNormal: the batch axes of loc {tuple(loc.shape)} and {name} "
                             f"{tuple(matrix.shape)} do not broadcast") from None
        d = loc.shape[-1]
        self.loc = loc if tuple(loc.shape) == batch + (d,) else broadcast_to(loc, batch + (d,))
        full = batch + (d, d)                         # broadcast so that expand() sees the batch axes
        self.__dict__[name] = matrix if tuple(matrix.shape) == full else broadcast_to(matrix, full)
        super().__init__(batch, (d,), validate_args=validate_args)   # checks the parameter given
        if name == "scale_tril":
            factor = matrix
        elif name == "covariance_matrix":
            factor = cholesky(matrix)
        else:
            factor = cholesky(inv(matrix))
        self.scale_tril = factor if tuple(factor.shape) == batch + (d, d) else broadcast_to(factor, batch + (d, d))

    @property
    def mean(self):
        return self.loc

    @property
    def covariance_matrix(self):
        """Sigma = L L^T."""
        given = self.__dict__.get("covariance_matrix")
        return matmul(self.scale_tril, _transposed(self.scale_tril)) if given is None else given

    @property
    def precision_matrix(self):
        """Sigma^-1 = (L L^T)^-1, through the Cholesky factor as PyTorch (so that the gradient with
        respect to a given covariance matrix is symmetric, the Cholesky factorization's)."""
        given = self.__dict__.get("precision_matrix")
        if given is not None:
            return given
        return inv(matmul(self.scale_tril, _transposed(self.scale_tril)))

    @property
    def variance(self):
        """The diagonal of Sigma: the squared lengths of L's rows."""
        return F.sum(self.scale_tril * self.scale_tril, axis=-1)

    def rsample(self, sample_shape=()):
        eps = self._noise("standard_normal", sample_shape)
        lifted = matmul(self.scale_tril, as_tensor(eps[..., None], self.dtype))
        return self.loc + lifted.reshape(*eps.shape)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        z = _solve_lower(self.scale_tril, value - self.loc)
        d = self._event_shape[0]
        return F.sum(z * z, axis=-1) * -0.5 - _half_log_det(self.scale_tril) - 0.5 * d * LOG_2PI

    def entropy(self):
        d = self._event_shape[0]
        return _half_log_det(self.scale_tril) + 0.5 * d * (1.0 + LOG_2PI)

    @property
    def mode(self) -> Tensor:
        """The most probable value: ``loc``."""
        return self.loc


def kl_multivariate_normal(p: MultivariateNormal, q: MultivariateNormal):
    """KL(p || q) = (tr(Sigma_q^-1 Sigma_p) + |L_q^-1 (mu_q - mu_p)|^2 - d) / 2
    + log det L_q - log det L_p, with tr(Sigma_q^-1 Sigma_p) = |L_q^-1 L_p|_F^2."""
    if p.event_shape != q.event_shape:
        raise ShapeError(f"kl_divergence: MultivariateNormals of event shapes {p.event_shape} and {q.event_shape}")
    batch = numpy.broadcast_shapes(p.batch_shape, q.batch_shape)
    d = p.event_shape[0]
    lq = broadcast_to(q.scale_tril, batch + (d, d)) if q.batch_shape != batch else q.scale_tril
    lp = broadcast_to(p.scale_tril, batch + (d, d)) if p.batch_shape != batch else p.scale_tril
    ratio = solve_triangular(lq, lp, upper=False)
    trace_term = F.sum(ratio * ratio, axis=(-2, -1))
    z = _solve_lower(q.scale_tril, q.loc - p.loc)
    return ((trace_term + F.sum(z * z, axis=-1) - d) * 0.5 + _half_log_det(lq) - _half_log_det(lp))
