"""Importance-weighted autoencoders: the loss and both gradient estimators (IWAE, DReG) against
float64 torch rewrites of the published formulas on fixed noise, float64 gradient checks, k = 1
against the ELBO, the bound growing with k, the log-likelihood estimate on a linear-Gaussian
model whose log p(x) is known in closed form, DReG's lower encoder-gradient variance, saving,
the errors, and a learning test on the digits against a VAE trained on the ELBO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import lamina
from helpers import check_gradients, perturb_parameters, randn, run_readme_section
from lamina import functional as F
from lamina import models, optim
from lamina.data import load_digits
from lamina.errors import ShapeError

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _binary_digits() -> np.ndarray:
    x, _ = load_digits(size=8)
    x = (x.reshape(len(x), -1).astype(np.float32) / 255.0 > 0.5).astype(np.float32)
    return x[np.random.default_rng(0).permutation(len(x))]


# -- torch rewrite: a one-hidden-layer VAE and both estimators ------------------------------------
def _torch_log_weights(params, x, eps, stop_q):
    """log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x), z_i = mu + sigma eps_i, (k, batch)."""
    w1, b1, wm, bm, wv, bv, wd1, bd1, wd2, bd2 = params
    h = torch.relu(x @ w1 + b1)
    mu, log_var = h @ wm + bm, h @ wv + bv
    sigma = torch.exp(0.5 * log_var)
    z = mu + sigma * eps
    logits = torch.relu(z @ wd1 + bd1) @ wd2 + bd2
    log_px_z = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    log_pz = (-0.5 * z ** 2 - LOG_SQRT_2PI).sum(-1)
    q = torch.distributions.Normal(mu.detach(), sigma.detach()) if stop_q else torch.distributions.Normal(mu, sigma)
    return log_px_z + log_pz - q.log_prob(z).sum(-1)


def torch_iwae_gradients(params, x, eps):
    log_w = _torch_log_weights(params, x, eps, stop_q=False)
    loss = -(torch.logsumexp(log_w, 0) - math.log(eps.shape[0])).mean()
    return loss, torch.autograd.grad(loss, params)


def torch_dreg_gradients(params, x, eps):
    """Tucker et al.'s DReG as written: w~ = softmax(log w).detach() with q's parameters
    detached in log q; the encoder's surrogate sum w~^2 log w, the decoder's sum w~ log w."""
    log_w = _torch_log_weights(params, x, eps, stop_q=True)
    weights = torch.softmax(log_w, dim=0).detach()
    encoder_loss = -(weights ** 2 * log_w).sum(0).mean()
    decoder_loss = -(weights * log_w).sum(0).mean()
    encoder = torch.autograd.grad(encoder_loss, params[:6], retain_graph=True)
    decoder = torch.autograd.grad(decoder_loss, params[6:])
    return encoder + decoder


def _small_model(seed=3, **options):
    model = models.IWAE(3, hidden=(5,), input_shape=(6,), **options)
    perturb_parameters(model, seed=seed, scale=0.3)
    return model


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
def test_loss_and_gradients_match_the_torch_rewrite(float64, estimator):
    model = _small_model()
    x = (randn(4, 6, seed=1) > 0).astype(np.float64)
    eps = randn(7, 4, 3, seed=2)
    loss = model.loss(x, k=7, estimator=estimator, eps=eps)
    ours = _grads(model, loss)
    params = [torch.tensor(p.numpy(), requires_grad=True) for p in model.parameters()]
    xt, et = torch.tensor(x), torch.tensor(eps)
    expected_loss, iwae_grads = torch_iwae_gradients(params, xt, et)
    np.testing.assert_allclose(loss.item(), expected_loss.item(), rtol=1e-12)
    theirs = iwae_grads if estimator == "iwae" else torch_dreg_gradients(params, xt, et)
    for (name, _), a, b in zip(model.named_parameters(), ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    if estimator == "dreg":                           # the decoder's gradient is IWAE's, the encoder's is not
        for a, b in zip(ours[6:], iwae_grads[6:]):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-12)
        assert not np.allclose(ours[2], iwae_grads[2].numpy(), rtol=1e-3)


def test_iwae_gradients_pass_float64_checks(float64):
    model = _small_model(likelihood="gaussian", obs_std=0.7)
    x, eps = randn(3, 6, seed=4), randn(5, 3, 3, seed=5)
    assert check_gradients(lambda t: model.loss(t, k=5, eps=eps), x)
    grads = _grads(model, model.loss(x, k=5, eps=eps))
    step = 1e-6
    for p, g in zip(model.parameters(), grads):                     # centred differences of every weight
        for index in np.ndindex(p.shape):
            saved = p.data[index]
            p.data[index] = saved + step
            above = model.loss(x, k=5, eps=eps).item()
            p.data[index] = saved - step
            below = model.loss(x, k=5, eps=eps).item()
            p.data[index] = saved
            assert abs((above - below) / (2 * step) - g[index]) < 1e-6 * (1 + abs(g[index]))


# -- k = 1, the ELBO --------------------------------------------------------------------------------
def test_one_sample_is_the_elbo(float64):
    model = _small_model(seed=6)
    x = (randn(5, 6, seed=7) > 0).astype(np.float64)
    eps = randn(1, 5, 3, seed=8)
    mu, log_var = (t.numpy() for t in model.encode(x))
    z = mu + np.exp(0.5 * log_var) * eps[0]
    logits = model.decode(lamina.tensor(z)).numpy()
    log_px_z = (x * logits - np.logaddexp(0, logits)).sum(-1)
    log_pz = (-0.5 * z ** 2 - LOG_SQRT_2PI).sum(-1)
    log_qz = (-0.5 * eps[0] ** 2 - 0.5 * log_var - LOG_SQRT_2PI).sum(-1)
    elbo = log_px_z + log_pz - log_qz                                   # the one-sample ELBO, by hand
    np.testing.assert_allclose(models.importance_log_weights(model, x, 1, eps=eps).numpy()[0], elbo, rtol=1e-12)
    np.testing.assert_allclose(model.loss(x, k=1, eps=eps).item(), -elbo.mean(), rtol=1e-12)
    # vae_loss on the same code has the KL term in closed form: equal in expectation
    kl = F.gaussian_kl(mu, log_var).numpy()
    assert F.vae_loss(x, logits, mu, log_var).item() == pytest.approx(np.mean(kl - log_px_z), rel=1e-12)


def test_k1_average_equals_the_closed_form_elbo(float64):
    """E_q[log p(x | z) + log p(z) - log q(z | x)] = E_q[log p(x | z)] - KL(q || p): with the same
    draws of z, the two estimates differ by a zero-mean term only."""
    model = _small_model(seed=9)
    x = (randn(3, 6, seed=10) > 0).astype(np.float64)
    eps = randn(1, 6000, 3, seed=11)
    xs = np.tile(x, (2000, 1))
    iwae_1 = -model.loss(xs, k=1, eps=eps).item()
    mu, log_var = model.encode(xs)
    logits = model.decode(mu + F.exp(log_var * 0.5) * lamina.tensor(eps[0]))
    elbo = -F.vae_loss(xs, logits, mu, log_var).item()
    # measured: the two differ by 0.003 nats (standard error of the zero-mean term 0.01)
    assert abs(iwae_1 - elbo) < 0.05


# -- the bound against k, and log p(x) of a linear-Gaussian model -------------------------------
def _linear_gaussian(exact: bool):
    """p(z) = N(0, I_2), x = z W + b + N(0, 0.5^2 I_3), W with orthogonal rows (a diagonal
    posterior covariance); q exact or a shrunk mean and a too wide variance."""
    w = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.8]])
    b = np.array([0.3, -0.2, 0.5])
    noise = 0.5
    model = models.IWAE(2, hidden=(), input_shape=(3,), likelihood="gaussian", obs_std=noise)
    covariance = np.linalg.inv(np.eye(2) + w @ w.T / noise ** 2)
    gain = w.T @ covariance / noise ** 2                                  # posterior mean (x - b) gain
    if not exact:
        gain = 0.6 * gain
    model.decoder[0].weight.data[...] = w
    model.decoder[0].bias.data[...] = b
    model.to_mu.weight.data[...] = gain
    model.to_mu.bias.data[...] = -b @ gain
    model.to_log_var.weight.data[...] = 0.0
    model.to_log_var.bias.data[...] = np.log(np.diag(covariance)) + (0.0 if exact else 0.7)
    true_log_px = multivariate_normal(b, w.T @ w + noise ** 2 * np.eye(3))
    return model, true_log_px


def test_bound_rises_with_k_on_average(float64):
    model, true_px = _linear_gaussian(exact=False)
    x = randn(16, 3, seed=12)
    lamina.manual_seed(1)
    log_w = models.importance_log_weights(model, x, 8192).numpy()
    means = []
    for k in (1, 2, 4, 8, 16, 64):                      # 8192 / k independent draws of L_k per input
        groups = log_w.reshape(8192 // k, k, 16)
        means.append((np.logaddexp.reduce(groups, axis=1) - math.log(k)).mean())
    # measured (seeds 0-3): rises of 0.43-0.58, 0.17-0.26, 0.07-0.11, 0.03-0.05, 0.02-0.03 nats,
    # ending 0.005-0.02 below the mean log p(x)
    assert all(b - a > 0.01 for a, b in zip(means, means[1:])), means
    assert means[-1] < true_px.logpdf(x).mean()


def test_log_likelihood_estimate_matches_the_closed_form(float64):
    model, true_px = _linear_gaussian(exact=False)
    x = randn(5, 3, seed=13)
    truth = true_px.logpdf(x)
    lamina.manual_seed(2)
    estimate, ess = models.estimate_log_likelihood(model, x, k=5000, batch_size=4096, return_ess=True)
    elbo = -np.mean([model.loss(x, k=1).item() for _ in range(300)])          # L_1 averaged
    # measured (seeds 0-4): |estimate - truth| at most 0.004-0.026 nats; the ELBO 0.53-0.56 nats below the
    # mean log p(x); ESS 2150-3730 of the 5000 samples
    np.testing.assert_allclose(estimate, truth, atol=0.06)
    assert elbo < truth.mean() - 0.3
    assert np.all(ess > 1000) and np.all(ess < 4500)


def test_estimate_in_one_pass_is_the_bound_and_ess_of_the_same_weights(float64):
    model, _ = _linear_gaussian(exact=False)
    x = randn(4, 3, seed=15)
    lamina.manual_seed(4)
    estimate, ess = models.estimate_log_likelihood(model, x, k=300, batch_size=1200, return_ess=True)
    lamina.manual_seed(4)                                             # the same draws, k x batch in one go
    log_w = models.importance_log_weights(model, x, 300)
    np.testing.assert_allclose(estimate, F.iwae_bound(log_w, np.zeros(log_w.shape), 300).numpy(), rtol=1e-12)
    np.testing.assert_allclose(ess, F.effective_sample_size(log_w, 300), rtol=1e-10)


def test_exact_posterior_gives_log_px_in_any_chunking(float64):
    model, true_px = _linear_gaussian(exact=True)
    x = randn(3, 3, seed=14)
    for k, batch_size in ((1, 1), (7, 3), (50, 20), (64, 8192)):
        estimate, ess = models.estimate_log_likelihood(model, x, k=k, batch_size=batch_size, return_ess=True)
        np.testing.assert_allclose(estimate, true_px.logpdf(x), rtol=1e-10)
        np.testing.assert_allclose(ess, k, rtol=1e-10)             # equal weights: every sample counts


# -- DReG: the same expectation, a lower variance --------------------------------------------------
def _encoder_gradients(model, x, k, estimator, draws):
    encoder = [p for name, p in model.named_parameters() if not name.startswith("decoder")]
    rows = []
    for _ in range(draws):
        model.zero_grad()
        model.loss(x, k=k, estimator=estimator).backward()
        rows.append(np.concatenate([p.grad.ravel() for p in encoder]).astype(np.float64))
    return np.array(rows)


def _trained_digits_model(steps=300, seed=0):
    x = _binary_digits()
    lamina.manual_seed(seed)
    model = models.IWAE(4, hidden=(32,), input_shape=(64,), num_samples=5)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        loss = model.loss(x[rng.integers(0, 1400, 64)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, x


def test_dreg_encoder_gradient_has_a_lower_variance_at_large_k():
    model, x = _trained_digits_model()
    lamina.manual_seed(10)
    iwae = _encoder_gradients(model, x[:4], 64, "iwae", 60)
    dreg = _encoder_gradients(model, x[:4], 64, "dreg", 60)
    ratio = iwae.var(axis=0).sum() / dreg.var(axis=0).sum()
    # measured: 19.5 (k = 64; 41 at k = 256, 2.4 for the untrained model)
    assert ratio > 5, ratio


def test_dreg_and_iwae_agree_on_average(float64):
    model = _small_model(seed=15)
    x = (randn(3, 6, seed=16) > 0).astype(np.float64)
    lamina.manual_seed(3)
    iwae = _encoder_gradients(model, x, 8, "iwae", 300)
    dreg = _encoder_gradients(model, x, 8, "dreg", 300)
    error = np.sqrt((iwae.var(axis=0) + dreg.var(axis=0)) / 300)
    # both estimate the same gradient: measured (seeds 0-3), the means differ by at most 2.1-4.0 standard errors
    assert np.all(np.abs(iwae.mean(axis=0) - dreg.mean(axis=0)) < 6 * error + 1e-12)


# -- model plumbing -----------------------------------------------------------------------------------
def test_shapes_and_outputs():
    model = models.IWAE(3, hidden=(8,), input_shape=(4, 4, 1), num_samples=6)
    x = (np.random.default_rng(0).random((2, 4, 4, 1)) > 0.5).astype(np.float32)
    logits, mu, log_var = model(x)
    assert logits.shape == (2, 4, 4, 1) and mu.shape == log_var.shape == (2, 3)
    assert models.importance_log_weights(model, x, 6).shape == (6, 2)
    loss = model.loss(x)
    assert loss.shape == () and loss.dtype == np.float32
    assert model.log_likelihood(x, k=20).shape == (2,)
    assert "num_samples=6" in repr(model)
    vae = models.VAE(3, hidden=(8,), input_shape=(4, 4, 1))              # any VAE: a Bernoulli decoder
    assert models.iwae_loss(vae, x, k=3).shape == ()
    assert models.estimate_log_likelihood(vae, x, k=20, batch_size=7).shape == (2,)


def test_save_load_round_trip(tmp_path):
    model = models.IWAE(3, hidden=(8,), input_shape=(6,), num_samples=4, estimator="dreg",
                        likelihood="gaussian", obs_std=0.3)
    perturb_parameters(model, scale=0.1)
    lamina.save(model, tmp_path / "iwae.lamina")
    loaded = lamina.load(tmp_path / "iwae.lamina")
    assert type(loaded) is models.IWAE
    assert (loaded.num_samples, loaded.estimator, loaded.likelihood, loaded.obs_std) == (4, "dreg", "gaussian", 0.3)
    x, eps = randn(2, 6, seed=17).astype(np.float32), randn(4, 2, 3, seed=18).astype(np.float32)
    np.testing.assert_array_equal(loaded.loss(x, eps=eps).numpy(), model.loss(x, eps=eps).numpy())


def test_errors_name_the_function_and_the_values():
    model = models.IWAE(2, hidden=(4,), input_shape=(3,))
    x = np.array([[0.0, 1.0, 1.0]], np.float32)
    with pytest.raises(ValueError, match=r"iwae_loss: k, the number of importance samples, must be an int >= 1, got 0"):
        model.loss(x, k=0)
    with pytest.raises(ShapeError, match=r"eps has shape \(3, 1, 2\); expected \(k, batch, code_size\) = \(4, 1, 2\)"):
        model.loss(x, k=4, eps=np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match=r"Bernoulli likelihood needs x in \[0, 1\]"):
        model.loss(x * 255)
    with pytest.raises(ShapeError, match=r"got an input of shape \(1, 5\)"):
        model.loss(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="estimator must be one of"):
        model.loss(x, estimator="reinforce")
    with pytest.raises(ValueError, match="estimate_log_likelihood: k"):
        models.estimate_log_likelihood(model, x, k=0)
    with pytest.raises(TypeError, match="expected a VAE-like model whose encode"):
        models.iwae_loss(models.Autoencoder(2), x)
    with pytest.raises(ValueError, match="IWAE: num_samples must be a positive int"):
        models.IWAE(2, num_samples=0)
    with pytest.raises(ValueError, match="IWAE: likelihood must be one of"):
        models.IWAE(2, likelihood="poisson")
    with pytest.raises(ValueError, match="IWAE: obs_std must be a finite number > 0"):
        models.IWAE(2, obs_std=0.0)


# -- learning --------------------------------------------------------------------------------------------
def _train_digits(x, objective, seed, steps=400):
    lamina.manual_seed(seed)
    model = models.IWAE(8, hidden=(64,), input_shape=(64,), num_samples=5, estimator=objective
                        if objective != "elbo" else "iwae")
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = lamina.tensor(x[rng.integers(0, 1400, 64)])
        if objective == "elbo":
            logits, mu, log_var = model(batch)
            loss = F.vae_loss(batch, logits, mu, log_var)
        else:
            loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lamina.manual_seed(1)
    return models.estimate_log_likelihood(model, x[1400:], k=500).mean()


def test_iwae_reaches_a_better_log_likelihood_than_the_elbo_on_the_digits():
    x = _binary_digits()
    elbo, iwae, dreg = (_train_digits(x, objective, seed=0) for objective in ("elbo", "iwae", "dreg"))
    # measured (400 steps of 64, k = 5, held-out log p(x) at k = 500, nats): ELBO -19.28, IWAE -18.84,
    # DReG -18.76 (seeds 1-4: margins 0.34-0.59 for IWAE, 0.38-0.62 for DReG, also with SkylakeX kernels)
    assert iwae > elbo + 0.15 and dreg > elbo + 0.15, (elbo, iwae, dreg)


def test_readme_example_runs():
    printed, names = run_readme_section("Importance-weighted autoencoders (IWAE, DReG)")
    assert type(names["model"]) is models.IWAE
    lines = printed.split("\n")
    assert lines[0] == "(5, 4)"
    assert float(lines[1]) > float(lines[2])
