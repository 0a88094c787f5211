"""Evidential deep learning: one forward pass gives a prediction and its uncertainty.

Classification (Sensoy et al., 2018). The network outputs non-negative evidence e (N, K);
alpha = e + 1 parameterises a Dirichlet over the class probabilities, with strength
S = sum_j alpha_j, expected probabilities p = alpha / S and vacuity u = K / S. With one-hot
targets y, the three losses of the paper are

    mse:      sum_j (y_j - p_j)^2 + p_j (1 - p_j) / (S + 1)
    log:      sum_j y_j (log S - log alpha_j)
    digamma:  sum_j y_j (psi(S) - psi(alpha_j))

each plus min(1, epoch / annealing_epochs) KL(Dir(alpha~) || Dir(1)), alpha~ = y + (1 - y) alpha,
which pushes the evidence of the wrong classes towards zero:

    KL(Dir(a) || Dir(1)) = lgamma(sum a) - lgamma(K) - sum_j lgamma(a_j)
                           + sum_j (a_j - 1) (psi(a_j) - psi(sum a)).

Regression (Amini et al., 2020). The network outputs (gamma, nu, alpha, beta) of a
Normal-Inverse-Gamma prior over (mu, sigma^2). Its marginal likelihood of y is a Student-t
with 2 alpha degrees of freedom, location gamma and scale^2 beta (1 + nu) / (nu alpha), so
with Omega = 2 beta (1 + nu)

    nll = log(pi / nu) / 2 - alpha log Omega + (alpha + 1/2) log(nu (y - gamma)^2 + Omega)
          + lgamma(alpha) - lgamma(alpha + 1/2),
    reg = |y - gamma| (2 nu + alpha),
    aleatoric E[sigma^2] = beta / (alpha - 1),   epistemic Var[mu] = beta / (nu (alpha - 1)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import log
from lamina.functional.loss import _check_reduction, _reduce
from lamina.functional.special import digamma, lgamma

__all__ = [
    "DirichletUncertainty",
    "dirichlet_kl_uniform",
    "dirichlet_uncertainty",
    "edl_digamma_loss",
    "edl_log_loss",
    "edl_mse_loss",
    "evidential_regression_loss",
    "nig_nll",
    "nig_regularizer",
    "nig_uncertainty",
]


def _tensor(value) -> Tensor:
    return value if isinstance(value, Tensor) else Tensor(value)


def _check_alpha(alpha: Tensor, fn: str) -> None:
    if alpha.ndim != 2:
        raise ShapeError(f"{fn}: expected alpha of shape (N, K), got {tuple(alpha.shape)}")


def _one_hot_targets(y, alpha: Tensor, fn: str) -> Tensor:
    """Integer labels (N,) or one-hot/soft targets (N, K) as a constant (N, K) tensor of alpha's dtype."""
    values = np.asarray(backend.to_numpy(y.data if isinstance(y, Tensor) else y))
    n, k = alpha.shape
    if values.shape == (n,) and values.dtype.kind in "iu":
        if values.size and (values.min() < 0 or values.max() >= k):
            raise ValueError(f"{fn}: labels must lie in [0, {k}), got values in [{values.min()}, {values.max()}]")
        values = np.eye(k)[values]
    elif values.shape != (n, k):
        raise ShapeError(f"{fn}: targets must be integer labels (N,) = ({n},) or one-hot (N, K) = {(n, k)}, "
                         f"got shape {values.shape} of dtype {values.dtype}")
    return Tensor(backend.xp.asarray(values.astype(alpha.dtype)))


def dirichlet_kl_uniform(alpha) -> Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) per row of ``alpha`` (N, K): a (N,) tensor (module notes)."""
    alpha = _tensor(alpha)
    _check_alpha(alpha, "dirichlet_kl_uniform")
    k = alpha.shape[-1]
    strength = alpha.sum(axis=-1, keepdims=True)
    cross = ((alpha - 1.0) * (digamma(alpha) - digamma(strength))).sum(axis=-1)
    return lgamma(strength).sum(axis=-1) - math.lgamma(k) - lgamma(alpha).sum(axis=-1) + cross


def _annealed(fn: str, per_sample: Tensor, alpha: Tensor, y: Tensor, epoch: float,
              annealing_epochs: float, reduction: str) -> Tensor:
    if not annealing_epochs > 0:
        raise ValueError(f"{fn}: annealing_epochs must be > 0, got {annealing_epochs!r}")
    if not epoch >= 0:
        raise ValueError(f"{fn}: epoch must be >= 0, got {epoch!r}")
    weight = min(1.0, float(epoch) / float(annealing_epochs))
    if weight > 0:
        misleading = y + (1.0 - y) * alpha
        per_sample = per_sample + weight * dirichlet_kl_uniform(misleading)
    return _reduce(per_sample, reduction)


def _prepare(fn: str, alpha, y, reduction: str) -> tuple[Tensor, Tensor]:
    _check_reduction(reduction, fn)
    alpha = _tensor(alpha)
    _check_alpha(alpha, fn)
    return alpha, _one_hot_targets(y, alpha, fn)


def edl_mse_loss(alpha, y, epoch: float = 0, annealing_epochs: float = 10, reduction: str = "mean") -> Tensor:
    """Sensoy et al.'s expected squared error under Dir(alpha) plus the annealed KL term (module notes).
    ``alpha`` (N, K) > 0; ``y`` integer labels (N,) or one-hot (N, K)."""
    fn = "edl_mse_loss"
    alpha, y = _prepare(fn, alpha, y, reduction)
    strength = alpha.sum(axis=-1, keepdims=True)
    p = alpha / strength
    per_sample = ((y - p) ** 2 + p * (1.0 - p) / (strength + 1.0)).sum(axis=-1)
    return _annealed(fn, per_sample, alpha, y, epoch, annealing_epochs, reduction)


def edl_log_loss(alpha, y, epoch: float = 0, annealing_epochs: float = 10, reduction: str = "mean") -> Tensor:
    """Sensoy et al.'s type-II maximum likelihood loss sum_j y_j (log S - log alpha_j) plus the
    annealed KL term (module notes)."""
    fn = "edl_log_loss"
    alpha, y = _prepare(fn, alpha, y, reduction)
    strength = alpha.sum(axis=-1, keepdims=True)
    per_sample = (y * (log(strength) - log(alpha))).sum(axis=-1)
    return _annealed(fn, per_sample, alpha, y, epoch, annealing_epochs, reduction)


def edl_digamma_loss(alpha, y, epoch: float = 0, annealing_epochs: float = 10,
                     reduction: str = "mean") -> Tensor:
    """Sensoy et al.'s expected cross-entropy sum_j y_j (psi(S) - psi(alpha_j)) plus the annealed
    KL term (module notes)."""
    fn = "edl_digamma_loss"
    alpha, y = _prepare(fn, alpha, y, reduction)
    strength = alpha.sum(axis=-1, keepdims=True)
    per_sample = (y * (digamma(strength) - digamma(alpha))).sum(axis=-1)
    return _annealed(fn, per_sample, alpha, y, epoch, annealing_epochs, reduction)


class DirichletUncertainty(NamedTuple):
    """What one Dirichlet prediction says; every field is a (N,) tensor except ``probs`` (N, K)."""

    probs: Tensor            # expected class probabilities alpha / S
    vacuity: Tensor          # K / S: 1 with no evidence, towards 0 with much
    total_entropy: Tensor    # H[E p], the predictive entropy
    expected_entropy: Tensor  # E[H(p)], the aleatoric part
    mutual_information: Tensor  # H[E p] - E[H(p)], the epistemic part


def dirichlet_uncertainty(alpha) -> DirichletUncertainty:
    """Expected probabilities, vacuity and the entropy decomposition of Dir(alpha), alpha (N, K):

        H[E p] = -sum_j p_j log p_j,   E[H(p)] = -sum_j p_j (psi(alpha_j + 1) - psi(S + 1)),

    and the mutual information between the label and p is their difference."""
    alpha = _tensor(alpha)
    _check_alpha(alpha, "dirichlet_uncertainty")
    strength = alpha.sum(axis=-1, keepdims=True)
    probs = alpha / strength
    total = -(probs * log(probs)).sum(axis=-1)
    expected = -(probs * (digamma(alpha + 1.0) - digamma(strength + 1.0))).sum(axis=-1)
    vacuity = alpha.shape[-1] / strength.reshape((alpha.shape[0],))
    return DirichletUncertainty(probs, vacuity, total, expected, total - expected)


def _nig(fn: str, gamma, nu, alpha, beta, y=None) -> list[Tensor]:
    values = [_tensor(v) for v in (gamma, nu, alpha, beta)]
    if y is not None:
        values.append(_tensor(y))
    shapes = [tuple(v.shape) for v in values]
    if len(set(shapes)) != 1:
        names = "gamma, nu, alpha, beta" + (", y" if y is not None else "")
        raise ShapeError(f"{fn}: {names} must share one shape, got {shapes}")
    return values


def nig_nll(gamma, nu, alpha, beta, y, reduction: str = "mean") -> Tensor:
    """The negative log of the NIG model's Student-t marginal likelihood of ``y`` (module notes),
    element-wise, then reduced over everything (``'mean'``, ``'sum'``) or kept (``'none'``)."""
    fn = "nig_nll"
    _check_reduction(reduction, fn)
    gamma, nu, alpha, beta, y = _nig(fn, gamma, nu, alpha, beta, y)
    omega = 2.0 * beta * (1.0 + nu)
    nll = (0.5 * (math.log(math.pi) - log(nu)) - alpha * log(omega)
           + (alpha + 0.5) * log(nu * (y - gamma) ** 2 + omega) + lgamma(alpha) - lgamma(alpha + 0.5))
    return _reduce(nll, reduction)


def nig_regularizer(gamma, nu, alpha, y, reduction: str = "mean") -> Tensor:
    """Amini et al.'s evidence regulariser |y - gamma| (2 nu + alpha): error times total evidence."""
    fn = "nig_regularizer"
    _check_reduction(reduction, fn)
    gamma, nu, alpha, _, y = _nig(fn, gamma, nu, alpha, alpha, y)
    return _reduce(absolute(y - gamma) * (2.0 * nu + alpha), reduction)


def evidential_regression_loss(gamma, nu, alpha, beta, y, coeff: float = 0.01,
                               reduction: str = "mean") -> Tensor:
    """nig_nll + coeff * nig_regularizer (Amini et al.'s loss, coeff their lambda)."""
    _check_reduction(reduction, "evidential_regression_loss")
    if not coeff >= 0:
        raise ValueError(f"evidential_regression_loss: coeff must be >= 0, got {coeff!r}")
    return (nig_nll(gamma, nu, alpha, beta, y, reduction)
            + coeff * nig_regularizer(gamma, nu, alpha, y, reduction))


def nig_uncertainty(nu, alpha, beta) -> tuple[Tensor, Tensor]:
    """(aleatoric, epistemic) = (beta / (alpha - 1), beta / (nu (alpha - 1))), for alpha > 1."""
    nu, alpha, beta = (_tensor(v) for v in (nu, alpha, beta))
    aleatoric = beta / (alpha - 1.0)
    return aleatoric, aleatoric / nu
