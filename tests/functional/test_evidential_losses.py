"""Evidential losses (Sensoy et al., 2018; Amini et al., 2020) against float64 torch rewrites of
the published formulas and torch.distributions, float64 gradient checks, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, InverseGamma, StudentT, kl_divergence

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, positive, randn
from lamina import functional as F
from lamina.errors import ShapeError

ALPHA = positive(6, 4, seed=1, low=1.0, high=6.0)
# torch.polygamma(1, x), used by torch's digamma backward, is off by up to ~1e-9 (lamina's agrees
# with scipy to 1e-15), so comparisons of gradients through digamma use a looser tolerance.
DIGAMMA_RTOL = 1e-8
LABELS = np.array([0, 3, 1, 2, 3, 0])


def torch_one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).double()


def torch_kl_uniform(alpha: torch.Tensor) -> torch.Tensor:
    return kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones_like(alpha)))


def torch_edl(kind: str, epoch: float, annealing: float = 10.0):
    def loss(alpha, labels):
        y = torch_one_hot(labels, alpha.shape[-1])
        s = alpha.sum(-1, keepdim=True)
        if kind == "mse":
            p = alpha / s
            fit = ((y - p) ** 2 + p * (1 - p) / (s + 1)).sum(-1)
        elif kind == "log":
            fit = (y * (torch.log(s) - torch.log(alpha))).sum(-1)
        else:
            fit = (y * (torch.digamma(s) - torch.digamma(alpha))).sum(-1)
        tilde = y + (1 - y) * alpha
        return (fit + min(1.0, epoch / annealing) * torch_kl_uniform(tilde)).mean()
    return loss


EDL = {"mse": F.edl_mse_loss, "log": F.edl_log_loss, "digamma": F.edl_digamma_loss}


@pytest.mark.parametrize("kind", sorted(EDL))
@pytest.mark.parametrize("epoch", [0, 4, 25])
def test_edl_losses_match_the_published_formulas(kind, epoch):
    compare_with_torch(lambda a, y: EDL[kind](a, y, epoch=epoch), torch_edl(kind, epoch),
                       ALPHA, LABELS, dtype=np.float64, rtol=DIGAMMA_RTOL)


@pytest.mark.parametrize("kind", sorted(EDL))
def test_edl_losses_take_one_hot_targets_and_a_custom_annealing(kind):
    one_hot = np.eye(4)[LABELS]
    ours = EDL[kind](lamina.tensor(ALPHA, dtype=np.float64), one_hot, epoch=3, annealing_epochs=5,
                     reduction="none").numpy()
    theirs = torch_edl(kind, 3, annealing=5)
    per_sample = [theirs(torch.tensor(ALPHA[i:i + 1]), torch.tensor(LABELS[i:i + 1])).item() for i in range(6)]
    assert_close(ours, per_sample, 1e-12)


@pytest.mark.parametrize("kind", sorted(EDL))
def test_edl_loss_gradients(kind):
    assert check_gradients(lambda a, y: EDL[kind](a, y, epoch=5), ALPHA, LABELS)


def test_edl_digamma_loss_second_derivatives():
    assert check_second_derivatives(lambda a, y: F.edl_digamma_loss(a, y, epoch=5), ALPHA, LABELS)


def test_kl_to_the_uniform_dirichlet_is_torchs():
    compare_with_torch(F.dirichlet_kl_uniform, torch_kl_uniform, ALPHA, dtype=np.float64, rtol=DIGAMMA_RTOL)
    assert check_gradients(F.dirichlet_kl_uniform, ALPHA)
    np.testing.assert_allclose(F.dirichlet_kl_uniform(np.ones((2, 5))).numpy(), 0.0, atol=1e-6)


def torch_uncertainty(alpha):
    s = alpha.sum(-1, keepdim=True)
    p = alpha / s
    total = -(p * torch.log(p)).sum(-1)
    expected = -(p * (torch.digamma(alpha + 1) - torch.digamma(s + 1))).sum(-1)
    return p, alpha.shape[-1] / s[:, 0], total, expected, total - expected


def test_dirichlet_uncertainty_matches_torch():
    compare_with_torch(lambda a: list(F.dirichlet_uncertainty(a)), torch_uncertainty, ALPHA, dtype=np.float64,
                       rtol=DIGAMMA_RTOL)
    assert check_gradients(lambda a: F.dirichlet_uncertainty(a).mutual_information, ALPHA)


def test_dirichlet_uncertainty_against_sampling():
    """E[H(p)] in closed form against the mean entropy of Dirichlet draws, and the decomposition's signs."""
    alpha = np.array([[1.0, 1.0, 1.0], [20.0, 2.0, 1.0], [0.5, 0.7, 3.0]])
    out = F.dirichlet_uncertainty(lamina.tensor(alpha, dtype=np.float64))
    draws = np.random.default_rng(0).dirichlet(alpha[1], size=200_000)
    sampled = -(draws * np.log(draws)).sum(-1).mean()
    np.testing.assert_allclose(out.expected_entropy.numpy()[1], sampled, rtol=5e-3)
    np.testing.assert_allclose(out.vacuity.numpy(), 3.0 / alpha.sum(-1))
    np.testing.assert_allclose(out.probs.numpy().sum(-1), 1.0)
    assert (out.mutual_information.numpy() > 0).all()
    assert out.vacuity.numpy()[0] == 1.0


def nig_inputs(seed: int = 0):
    return (randn(5, 2, seed=seed), positive(5, 2, seed=seed + 1, low=0.2, high=3.0),
            positive(5, 2, seed=seed + 2, low=1.2, high=4.0), positive(5, 2, seed=seed + 3, low=0.3, high=2.0),
            randn(5, 2, seed=seed + 4, scale=2.0))


def torch_nig_nll(gamma, nu, alpha, beta, y):
    return -StudentT(2 * alpha, gamma, torch.sqrt(beta * (1 + nu) / (nu * alpha))).log_prob(y).mean()


def torch_nig_reg(gamma, nu, alpha, y):
    return ((y - gamma).abs() * (2 * nu + alpha)).mean()


def test_nig_nll_is_the_student_t_negative_log_likelihood():
    compare_with_torch(F.nig_nll, torch_nig_nll, *nig_inputs(), dtype=np.float64)
    assert check_gradients(F.nig_nll, *nig_inputs(3))


def test_nig_regularizer_and_the_full_loss():
    compare_with_torch(F.nig_regularizer, torch_nig_reg, *[nig_inputs()[i] for i in (0, 1, 2, 4)],
                       dtype=np.float64)

    def torch_loss(gamma, nu, alpha, beta, y):
        return torch_nig_nll(gamma, nu, alpha, beta, y) + 0.3 * torch_nig_reg(gamma, nu, alpha, y)

    compare_with_torch(lambda *a: F.evidential_regression_loss(*a, coeff=0.3), torch_loss, *nig_inputs(1),
                       dtype=np.float64)
    assert check_gradients(lambda *a: F.evidential_regression_loss(*a, coeff=0.3), *nig_inputs(2))
    summed = F.evidential_regression_loss(*nig_inputs(1), coeff=0.3, reduction="sum").item()
    assert summed == pytest.approx(10 * F.evidential_regression_loss(*nig_inputs(1), coeff=0.3).item())


def test_nig_uncertainty_is_the_inverse_gamma_mean():
    _, nu, alpha, beta, _ = nig_inputs()
    aleatoric, epistemic = F.nig_uncertainty(*(lamina.tensor(v, dtype=np.float64) for v in (nu, alpha, beta)))
    mean_variance = InverseGamma(torch.tensor(alpha), torch.tensor(beta)).mean.numpy()
    np.testing.assert_allclose(aleatoric.numpy(), mean_variance, rtol=1e-12)
    np.testing.assert_allclose(epistemic.numpy(), mean_variance / nu, rtol=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ShapeError, match="edl_mse_loss.*targets"):
        F.edl_mse_loss(ALPHA, LABELS[:3])
    with pytest.raises(ValueError, match=r"edl_log_loss: labels must lie in \[0, 4\)"):
        F.edl_log_loss(ALPHA, LABELS + 1)
    with pytest.raises(ValueError, match="annealing_epochs"):
        F.edl_digamma_loss(ALPHA, LABELS, annealing_epochs=0)
    with pytest.raises(ValueError, match="reduction"):
        F.edl_mse_loss(ALPHA, LABELS, reduction="avg")
    with pytest.raises(ShapeError, match=r"dirichlet_uncertainty: expected alpha of shape \(N, K\)"):
        F.dirichlet_uncertainty(ALPHA[0])
    gamma, nu, alpha, beta, y = nig_inputs()
    with pytest.raises(ShapeError, match="nig_nll: gamma, nu, alpha, beta, y must share one shape"):
        F.nig_nll(gamma, nu, alpha, beta, y[:, :1])
