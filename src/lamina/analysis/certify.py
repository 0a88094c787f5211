"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): a certified L2 radius for any
classifier.

The smoothed classifier g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I), of a base
classifier f keeps its class within the L2 radius

    R = sigma Phi^-1(p_A)

whenever the top class A has probability at least p_A > 1/2 under the noise. The
probabilities are estimated by counting f's votes over Gaussian samples:

* :meth:`SmoothedClassifier.predict`: the top two counts n_A, n_B of n samples; abstain
  (-1) unless the two-sided binomial test of n_A out of n_A + n_B at p = 1/2 has a p-value
  at most alpha.
* :meth:`SmoothedClassifier.certify`: n0 samples select A, n fresh samples count it, and
  the one-sided Clopper-Pearson lower confidence bound at level 1 - alpha,
  p_A = Beta^-1(alpha; n_A, n - n_A + 1), gives R; abstain when p_A <= 1/2.

Both hold with probability at least 1 - alpha over the sampling. Train the base classifier
with the same Gaussian noise on its inputs (:class:`lamina.train.GaussianAugmentation`).
"""

from __future__ import annotations

from typing import NamedTuple

from lamina import backend
from lamina.analysis.adversarial import _check_radius
from lamina.analysis.saliency import as_input_batch, model_logits
from lamina.autograd import no_grad, tensor
from lamina.nn.module import Module, evaluation_mode

__all__ = ["ABSTAIN", "Certificate", "SmoothedClassifier", "certified_radius", "clopper_pearson_lower"]

ABSTAIN = -1


class Certificate(NamedTuple):
    """Per sample: the smoothed class (-1: abstain) and its certified L2 radius (0 when abstaining)."""

    classes: object
    radii: object


def _check_count(value, fn: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return value


def _check_alpha(alpha, fn: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"{fn}: alpha must be a probability in (0, 1), got {alpha!r}")
    return float(alpha)


def clopper_pearson_lower(successes, trials, alpha: float):
    """The one-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion,
    Beta^-1(alpha; k, n - k + 1) (0 for k = 0)."""
    from scipy.stats import beta

    xp = backend.xp
    alpha = _check_alpha(alpha, "clopper_pearson_lower")
    k, n = xp.asarray(successes, dtype=xp.float64), xp.asarray(trials, dtype=xp.float64)
    if (k < 0).any() or (k > n).any():
        raise ValueError(f"clopper_pearson_lower: successes must lie in [0, trials], got {successes!r} of {trials!r}")
    bound = beta.ppf(alpha, xp.maximum(k, 1e-300), n - k + 1)
    return xp.where(k > 0, bound, 0.0)


def certified_radius(p_lower, sigma: float):
    """sigma Phi^-1(p_A), 0 where p_A <= 1/2."""
    from scipy.stats import norm

    xp = backend.xp
    sigma = _check_radius(sigma, "certified_radius", "sigma", allow_zero=False)
    p = xp.asarray(p_lower, dtype=xp.float64)
    return xp.where(p > 0.5, sigma * norm.ppf(xp.clip(p, 0.5, 1.0)), 0.0)


class SmoothedClassifier:
    """g(x) = argmax_c P(base(x + N(0, sigma^2 I)) = c) (see the module notes).

    ``base``: a classifier giving one score per class; it runs in evaluation mode.
    ``batch_size``: noisy copies per forward pass. ``seed``: the noise's generator."""

    def __init__(self, base: Module, sigma: float, batch_size: int = 1000, seed: int | None = None):
        if not isinstance(base, Module):
            raise TypeError(f"SmoothedClassifier: the base classifier must be a lamina Module, got "
                            f"{type(base).__name__}")
        self.base = base
        self.sigma = _check_radius(sigma, "SmoothedClassifier", "sigma", allow_zero=False)
        self.batch_size = _check_count(batch_size, "SmoothedClassifier", "batch_size")
        self.rng = backend.xp.random.default_rng(seed)

    def votes(self, x, samples: int):
        """(n, classes) counts of the base's predictions on ``samples`` noisy copies of each x."""
        fn = "SmoothedClassifier.votes"
        samples = _check_count(samples, fn, "samples")
        x = as_input_batch(x, fn)
        xp = backend.xp
        counts = None
        with no_grad(), evaluation_mode(self.base):
            for i, point in enumerate(x):
                left = samples
                while left:
                    size = min(left, self.batch_size)
                    noisy = point[None] + (self.rng.standard_normal((size,) + point.shape) * self.sigma)
                    logits = model_logits(self.base, tensor(noisy.astype(x.dtype), dtype=x.dtype)).data
                    if counts is None:
                        counts = xp.zeros((len(x), logits.shape[1]), dtype=xp.int64)
                    counts[i] += xp.bincount(logits.argmax(axis=1), minlength=logits.shape[1])
                    left -= size
        return counts

    def predict(self, x, samples: int = 100, alpha: float = 0.001):
        """The smoothed class of each x, or -1 (abstain) where the top two vote counts do not
        differ significantly (binomial test at level ``alpha``)."""
        from scipy.stats import binomtest

        alpha = _check_alpha(alpha, "SmoothedClassifier.predict")
        counts = self.votes(x, samples)
        xp = backend.xp
        order = xp.argsort(-counts, axis=1, kind="stable")
        classes = xp.full(len(counts), ABSTAIN, dtype=xp.int64)
        for i, row in enumerate(counts):
            top, second = int(row[order[i, 0]]), int(row[order[i, 1]]) if row.size > 1 else 0
            if binomtest(top, top + second, 0.5).pvalue <= alpha:
                classes[i] = order[i, 0]
        return classes

    def certify(self, x, n0: int = 100, n: int = 10000, alpha: float = 0.001) -> Certificate:
        """Cohen et al.'s CERTIFY: the class A chosen from ``n0`` samples, the lower bound
        p_A from ``n`` more, and the radius sigma Phi^-1(p_A) (abstain: -1, radius 0, when
        p_A <= 1/2)."""
        alpha = _check_alpha(alpha, "SmoothedClassifier.certify")
        _check_count(n0, "SmoothedClassifier.certify", "n0")
        _check_count(n, "SmoothedClassifier.certify", "n")
        xp = backend.xp
        chosen = self.votes(x, n0).argmax(axis=1)
        counts = self.votes(x, n)[xp.arange(len(chosen)), chosen]
        p_lower = clopper_pearson_lower(counts, n, alpha)
        radii = certified_radius(p_lower, self.sigma)
        classes = xp.where(p_lower > 0.5, chosen, ABSTAIN)
        return Certificate(classes, radii)
