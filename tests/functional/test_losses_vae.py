"""gaussian_kl, reparameterize and vae_loss: values and gradients against PyTorch (the closed
form in torch ops and torch.distributions), gradient checks, the draws of eps, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch.distributions import Normal, kl_divergence

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.functional.losses_vae import gaussian_kl, reparameterize, vae_loss

DTYPES = [np.float32, np.float64]
SHAPES = [(5, 3), (4, 2, 3), (1, 1)]


def torch_kl_closed_form(mu, log_var):
    per_value = -0.5 * (1 + log_var - mu**2 - torch.exp(log_var))
    return per_value.flatten(1).sum(dim=1)


def torch_kl_distributions(mu, log_var):
    q = Normal(mu, torch.exp(0.5 * log_var))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return kl_divergence(q, p).flatten(1).sum(dim=1)


def torch_vae_loss(x, logits, mu, log_var, beta):
    reconstruction = TF.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
    return (reconstruction + beta * torch_kl_closed_form(mu, log_var)).mean()


def pixels(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape)


# -- gaussian_kl ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reference", [torch_kl_closed_form, torch_kl_distributions])
def test_gaussian_kl_matches_torch(shape, dtype, reference):
    mu, log_var = randn(*shape), randn(*shape, seed=1, scale=0.7)
    out = compare_with_torch(gaussian_kl, reference, mu, log_var, dtype=dtype,
                             rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert out[0].shape == (shape[0],)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gaussian_kl_reductions(reduction):
    mu, log_var = randn(6, 4), randn(6, 4, seed=1)

    def theirs(m, v):
        per_sample = torch_kl_closed_form(m, v)
        return per_sample.mean() if reduction == "mean" else per_sample.sum()

    compare_with_torch(lambda m, v: gaussian_kl(m, v, reduction=reduction), theirs, mu, log_var, dtype=np.float64)


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = np.zeros((3, 4))
    assert np.array_equal(gaussian_kl(zeros, zeros).numpy(), np.zeros(3))
    assert (gaussian_kl(randn(3, 4), randn(3, 4, seed=1)).numpy() > 0).all()


def test_gaussian_kl_gradcheck():
    assert check_gradients(gaussian_kl, randn(4, 3), randn(4, 3, seed=1, scale=0.5))
    assert check_gradients(lambda m, v: gaussian_kl(m, v, reduction="mean"), randn(2, 5), randn(2, 5, seed=2))


# -- reparameterize ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_with_fixed_eps_matches_torch(dtype):
    eps = randn(5, 3, seed=7).astype(dtype)
    compare_with_torch(lambda m, v: reparameterize(m, v, eps), lambda m, v: m + torch.exp(0.5 * v) * torch.tensor(eps),
                       randn(5, 3), randn(5, 3, seed=1), dtype=dtype)


def test_reparameterize_gradients_reach_mu_and_log_var():
    mu = lamina.tensor(randn(4, 2), requires_grad=True, dtype=np.float64)
    log_var = lamina.tensor(randn(4, 2, seed=1), requires_grad=True, dtype=np.float64)
    eps = randn(4, 2, seed=2)
    reparameterize(mu, log_var, eps).sum().backward()
    np.testing.assert_allclose(mu.grad, np.ones((4, 2)), rtol=1e-12)
    np.testing.assert_allclose(log_var.grad, 0.5 * np.exp(0.5 * log_var.numpy()) * eps, rtol=1e-12)
    assert check_gradients(lambda m, v: reparameterize(m, v, eps), randn(4, 2), randn(4, 2, seed=1))


def test_reparameterize_draws_from_lamina_generator():
    mu, log_var = np.zeros((2, 3)), np.zeros((2, 3))
    lamina.manual_seed(5)
    first = reparameterize(mu, log_var).numpy()
    lamina.manual_seed(5)
    again = reparameterize(mu, log_var).numpy()
    other = reparameterize(mu, log_var).numpy()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_reparameterize_samples_the_right_gaussian():
    n = 20000
    mu = np.tile([[1.5, -2.0]], (n, 1))
    log_var = np.tile(np.log([[0.25, 4.0]]), (n, 1))
    z = reparameterize(lamina.tensor(mu, dtype=np.float64), lamina.tensor(log_var, dtype=np.float64)).numpy()
    np.testing.assert_allclose(z.mean(axis=0), [1.5, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)


# -- vae_loss ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [1.0, 0.0, 2.5])
def test_vae_loss_matches_torch(dtype, beta):
    x = pixels(3, 4, 4, 1)
    x[0, 0] = 0.0
    x[1, 1] = 1.0                                   # exact 0 and 1 targets, as binarised images have
    compare_with_torch(lambda xt, z, m, v: vae_loss(xt, z, m, v, beta=beta),
                       lambda xt, z, m, v: torch_vae_loss(xt, z, m, v, beta),
                       x, randn(3, 4, 4, 1, seed=1, scale=3), randn(3, 2, seed=2), randn(3, 2, seed=3), dtype=dtype,
                       grad=[False, True, True, True])


def test_vae_loss_gradcheck():
    x = pixels(2, 5)
    assert check_gradients(lambda z, m, v: vae_loss(x, z, m, v, beta=0.7), randn(2, 5), randn(2, 3, seed=1),
                           randn(2, 3, seed=2))


def test_vae_loss_of_a_sure_decoder_at_the_prior_is_zero():
    """Binary targets, logits of +-30 and mu = log_var = 0: both terms vanish (up to e^-30)."""
    x = np.random.default_rng(0).integers(0, 2, (4, 6)).astype(np.float64)
    loss = vae_loss(x, (2 * x - 1) * 30.0, np.zeros((4, 2)), np.zeros((4, 2)))
    assert 0 <= loss.item() < 1e-11


# -- errors --------------------------------------------------------------------------------
def test_errors_name_the_function_and_the_shapes():
    with pytest.raises(ShapeError, match=r"gaussian_kl: mu has shape \(2, 3\) but log_var has shape \(2, 4\)"):
        gaussian_kl(randn(2, 3), randn(2, 4))
    with pytest.raises(ShapeError, match=r"gaussian_kl: expected mu and log_var of shape \(batch, code_size\)"):
        gaussian_kl(randn(3), randn(3))
    with pytest.raises(ValueError, match="gaussian_kl: reduction"):
        gaussian_kl(randn(2, 3), randn(2, 3), reduction="batchmean")
    with pytest.raises(ShapeError, match=r"reparameterize: eps has shape \(2, 2\) but mu has shape \(2, 3\)"):
        reparameterize(randn(2, 3), randn(2, 3), randn(2, 2))
    with pytest.raises(ShapeError, match=r"vae_loss: x has shape \(2, 5\) but recon_logits has shape \(2, 4\)"):
        vae_loss(pixels(2, 5), randn(2, 4), randn(2, 3), randn(2, 3))
    with pytest.raises(ShapeError, match="must share the batch"):
        vae_loss(pixels(2, 4), randn(2, 4), randn(3, 3), randn(3, 3))
    with pytest.raises(ValueError, match=r"vae_loss: x must hold values in \[0, 1\].*from 0 to 255"):
        vae_loss(np.array([[0.0, 255.0]]), randn(1, 2), randn(1, 3), randn(1, 3))
    for beta in (-1.0, float("nan"), True):
        with pytest.raises(ValueError, match="vae_loss: beta must be a finite number >= 0"):
            vae_loss(pixels(2, 4), randn(2, 4), randn(2, 3), randn(2, 3), beta=beta)
