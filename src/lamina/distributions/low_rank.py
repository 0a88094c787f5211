"""The multivariate normal with a low-rank-plus-diagonal covariance Sigma = W W^T + D, W (d, k)
with k << d and D diagonal positive, evaluated in O(d k^2) through the k x k capacitance
matrix C = I_k + W^T D^-1 W (L_C its Cholesky factor):

    log det Sigma = 2 sum_i log (L_C)_ii + sum_j log D_jj       (matrix determinant lemma)
    v^T Sigma^-1 v = v^T D^-1 v - |L_C^-1 W^T D^-1 v|^2         (Woodbury identity)
    rsample: mu + W e_1 + sqrt(D) e_2,  e_1 ~ N(0, I_k), e_2 ~ N(0, I_d)
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, _float_dtype, as_tensor
from lamina.distributions.kl import register_kl
from lamina.distributions.multivariate import MultivariateNormal, _transposed, kl_multivariate_normal
from lamina.errors import ShapeError
from lamina.functional import broadcast_to, diagonal, log, matmul, sqrt
from lamina.functional import sum as total
from lamina.functional.linalg import cholesky, solve_triangular

LOG_2PI = math.log(2.0 * math.pi)


def _diag_embed(values):
    """Square matrices (..., d, d) with ``values`` (..., d) on the diagonal."""
    d = values.shape[-1]
    return values.reshape(*values.shape, 1) * as_tensor(numpy.eye(d, dtype=values.dtype), values.dtype)


class LowRankMultivariateNormal(Distribution):
    """N(loc, cov_factor cov_factor^T + diag(cov_diag)) over vectors of d values: ``loc``
    (..., d), ``cov_factor`` W (..., d, k), ``cov_diag`` (..., d) positive. The batch shape is
    the broadcast of the three's leading axes; see the module docstring for the formulas."""

    arg_constraints = {"loc": constraints.real_vector, "cov_factor": constraints.IndependentConstraint(
        constraints.real, 2), "cov_diag": constraints.IndependentConstraint(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, cov_factor, cov_diag, validate_args: bool | None = None):
        dtype = _float_dtype([loc, cov_factor, cov_diag])
        loc, factor, diag = (as_tensor(v, dtype) for v in (loc, cov_factor, cov_diag))
        if loc.ndim < 1 or factor.ndim < 2 or diag.ndim < 1 or not (
                loc.shape[-1] == factor.shape[-2] == diag.shape[-1]):
            raise ShapeError(f"LowRankMultivariateNormal: loc of shape {tuple(loc.shape)}, cov_factor of shape "
                             f"{tuple(factor.shape)} and cov_diag of shape {tuple(diag.shape)}; expected (..., d), "
                             "(..., d, k) and (..., d)")
        try:
            batch = numpy.broadcast_shapes(tuple(loc.shape[:-1]), tuple(factor.shape[:-2]), tuple(diag.shape[:-1]))
        except ValueError:
            raise ShapeError(f"LowRankMultivariateNormal: the batch axes of loc {tuple(loc.shape)}, cov_factor "
                             f"{tuple(factor.shape)} and cov_diag {tuple(diag.shape)} do not broadcast") from None
        d, k = factor.shape[-2:]

        def full(t, shape):
            return t if tuple(t.shape) == shape else broadcast_to(t, shape)

        self.loc, self.cov_factor = full(loc, batch + (d,)), full(factor, batch + (d, k))
        self.cov_diag = full(diag, batch + (d,))
        super().__init__(batch, (d,), validate_args=validate_args)

    def _capacitance_tril(self):
        """Cholesky factor of C = I_k + W^T D^-1 W."""
        w_over_d = self.cov_factor / self.cov_diag.reshape(*self.cov_diag.shape, 1)
        k = self.cov_factor.shape[-1]
        capacitance = matmul(_transposed(self.cov_factor), w_over_d) + as_tensor(numpy.eye(k), self.dtype)
        return cholesky(capacitance)

    def _log_det(self):
        """log det Sigma by the matrix determinant lemma."""
        return total(log(diagonal(self._capacitance_tril())), axis=-1) * 2.0 + total(log(self.cov_diag), axis=-1)

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return total(self.cov_factor * self.cov_factor, axis=-1) + self.cov_diag

    @property
    def covariance_matrix(self):
        return matmul(self.cov_factor, _transposed(self.cov_factor)) + _diag_embed(self.cov_diag)

    @property
    def scale_tril(self):
        return cholesky(self.covariance_matrix)

    @property
    def precision_matrix(self):
        """Sigma^-1 by the Woodbury identity: D^-1 - (D^-1 W L^-T)(D^-1 W L^-T)^T with L the
        Cholesky factor of the capacitance C = I + W^T D^-1 W (no d x d inverse)."""
        inverse_diag = 1.0 / self.cov_diag
        w_over_d = self.cov_factor * inverse_diag.reshape(*inverse_diag.shape, 1)
        a = _transposed(solve_triangular(self._capacitance_tril(), _transposed(w_over_d), upper=False))
        return _diag_embed(inverse_diag) - matmul(a, _transposed(a))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        k = self.cov_factor.shape[-1]
        e_factor = numpy.asarray(backend.rng().standard_normal(shape[:-1] + (k, 1)), dtype=self.dtype)
        lifted = matmul(self.cov_factor, as_tensor(backend.xp.asarray(e_factor), self.dtype)).reshape(*shape)
        return self.loc + lifted + sqrt(self.cov_diag) * self._noise("standard_normal", sample_shape)

    def log_prob(self, value):
        v = self._value(value, "log_prob") - self.loc
        batch = tuple(v.shape[:-1])
        d, k = self.cov_factor.shape[-2:]
        factor = self.cov_factor if tuple(self.cov_factor.shape[:-2]) == batch else broadcast_to(
            self.cov_factor, batch + (d, k))
        v_over_d = v / self.cov_diag
        projected = matmul(_transposed(factor), v_over_d.reshape(*batch, d, 1))          # W^T D^-1 v
        tril = self._capacitance_tril()
        tril = tril if tuple(tril.shape[:-2]) == batch else broadcast_to(tril, batch + (k, k))
        whitened = solve_triangular(tril, projected, upper=False)
        mahalanobis = total(v * v_over_d, axis=-1) - total(whitened * whitened, axis=(-2, -1))
        return (mahalanobis + self._log_det() + d * LOG_2PI) * -0.5

    def entropy(self):
        d = self._event_shape[0]
        return (self._log_det() + d * (1.0 + LOG_2PI)) * 0.5

    @property
    def mode(self) -> Tensor:
        """The most probable value: ``loc``."""
        return self.loc


def _as_full(distribution):
    if isinstance(distribution, LowRankMultivariateNormal):
        return MultivariateNormal(distribution.loc, scale_tril=distribution.scale_tril, validate_args=False)
    return distribution


@register_kl(LowRankMultivariateNormal, LowRankMultivariateNormal)
@register_kl(LowRankMultivariateNormal, MultivariateNormal)
@register_kl(MultivariateNormal, LowRankMultivariateNormal)
def _kl_low_rank(p, q):
    """That of the full-covariance normals (O(d^3), through their Cholesky factors)."""
    return kl_multivariate_normal(_as_full(p), _as_full(q))
