"""The continuous Bernoulli distribution (Loaiza-Ganem and Cunningham, 2019): the Bernoulli
likelihood lambda^x (1 - lambda)^(1 - x) made a density on [0, 1] by its normalizing constant

    p(x) = C(lambda) lambda^x (1 - lambda)^(1 - x),
    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)   (2 at lambda = 1/2),

so log C = log|log(1 - lambda) - log lambda| - log|1 - 2 lambda|. The closed forms divide by
1 - 2 lambda, which vanishes at 1/2: for lambda in the band ``lims`` around 1/2 (PyTorch's
(0.499, 0.501)) the log normalizer, mean and variance are their Taylor series in lambda - 1/2,
and the cdf and icdf those of U(0, 1); elsewhere the closed forms are evaluated at lambda (and
at the band's lower edge in the unused branch, so that no gradient there is undefined).
"""

from __future__ import annotations

import math

from lamina.distributions import constraints
from lamina.distributions.discrete import _BinaryProbsOrLogits, _clamped, _softplus
from lamina.functional import exp, log, log1p, sigmoid, where


class ContinuousBernoulli(_BinaryProbsOrLogits):
    """ContinuousBernoulli(probs= | logits=) on [0, 1]: log p(x) = x logits + log(1 - lambda) +
    log C(lambda), lambda = probs = sigma(logits) (kept in [eps, 1 - eps], as PyTorch); mean
    lambda / (2 lambda - 1) + 1 / (log(1 - lambda) - log lambda), variance lambda (lambda - 1) /
    (1 - 2 lambda)^2 + 1 / (log(1 - lambda) - log lambda)^2, cdf (lambda^x (1 - lambda)^(1 - x) +
    lambda - 1) / (2 lambda - 1), entropy -E[log p(x)]; rsample icdf(u), u ~ U(0, 1)."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, probs=None, logits=None, lims: tuple[float, float] = (0.499, 0.501),
                 validate_args: bool | None = None):
        self._set_probs_or_logits(probs, logits)
        super().__init__(self._param.shape, validate_args=validate_args)
        if probs is not None:                    # checked as given, then kept off 0 and 1
            self.probs = _clamped(self.__dict__["probs"])
        self._lims = (float(lims[0]), float(lims[1]))

    def _probs_from_logits(self, logits):
        return _clamped(sigmoid(logits))

    # -- the band around 1/2 ------------------------------------------------------------
    def _outside_band(self):
        """Where lambda is far enough from 1/2 for the closed forms (a boolean array)."""
        lam = self.probs.data
        return (lam <= self._lims[0]) | (lam > self._lims[1])

    def _cut_probs(self):
        """lambda outside the band, the band's lower edge (a constant) inside it."""
        return where(self._outside_band(), self.probs, self._lims[0])

    def _log_normalizer(self):
        """log C(lambda); inside the band log 2 + (4/3 + 104/45 t) t, t = (lambda - 1/2)^2."""
        lam = self._cut_probs()
        below = lam.data <= 0.5
        log_gap = where(below, log1p(where(below, lam, 0.0) * -2.0), log(where(below, 1.0, lam) * 2.0 - 1.0))
        closed = log((log1p(-lam) - log(lam)).abs()) - log_gap
        t = (self.probs - 0.5) * (self.probs - 0.5)
        series = (t * (104.0 / 45.0) + 4.0 / 3.0) * t + math.log(2.0)
        return where(self._outside_band(), closed, series)

    # -- statistics ----------------------------------------------------------------------
    @property
    def mean(self):
        lam = self._cut_probs()
        closed = lam / (lam * 2.0 - 1.0) + 1.0 / (log1p(-lam) - log(lam))
        d = self.probs - 0.5
        series = (d * d * (16.0 / 45.0) + 1.0 / 3.0) * d + 0.5
        return where(self._outside_band(), closed, series)

    @property
    def variance(self):
        lam = self._cut_probs()
        gap = 1.0 - lam * 2.0
        log_odds = log1p(-lam) - log(lam)
        closed = lam * (lam - 1.0) / (gap * gap) + 1.0 / (log_odds * log_odds)
        t = (self.probs - 0.5) * (self.probs - 0.5)
        series = 1.0 / 12.0 - (1.0 / 15.0 - t * (128.0 / 945.0)) * t
        return where(self._outside_band(), closed, series)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return value * self.logits - _softplus(self.logits) + self._log_normalizer()

    def entropy(self):
        log_lam, log_rest = log(self.probs), log1p(-self.probs)
        return self.mean * (log_rest - log_lam) - self._log_normalizer() - log_rest

    def cdf(self, value):
        value = self._value(value, "cdf")
        lam = self._cut_probs()
        mass = exp(value * log(lam) + (1.0 - value) * log1p(-lam))
        closed = (mass + lam - 1.0) / (lam * 2.0 - 1.0)
        inside = where(self._outside_band(), closed, value)
        return where(value.data <= 0.0, 0.0, where(value.data >= 1.0, 1.0, inside))

    def icdf(self, value):
        value = self._probability(value, "icdf")
        lam = self._cut_probs()
        closed = (log1p(value * (lam * 2.0 - 1.0) - lam) - log1p(-lam)) / (log(lam) - log1p(-lam))
        return where(self._outside_band(), closed, value)

    def rsample(self, sample_shape=()):
        return self.icdf(self._noise("random", sample_shape))
