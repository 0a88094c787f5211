"""BayesianDense (Bayes by Backprop): the Gaussian KL against torch.distributions, the
sampled layer against a torch formula with the same noise, the output's moments for a fixed
input (weight sampling and the local reparameterization), larger predictive uncertainty in a
gap of the data, bayesian_kl, mc_predict, saving, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch.distributions import Normal, kl_divergence

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.nn import BayesianDense, Dense, Sequential, bayesian_kl, functional_call, gaussian_kl, mc_predict
from lamina.optim import Adam

PARAMS = ["weight_mu", "weight_rho", "bias_mu", "bias_rho"]


def layer_and_params(units=3, n_in=4, seed=0, **options):
    layer = BayesianDense(units, **options)
    layer.build((None, n_in))
    layer.double()
    rng = np.random.default_rng(seed)
    for name, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * 0.5 + (-1.0 if name.endswith("rho") else 0.0)
    return layer, [layer._parameters[name].data.copy() for name in PARAMS]


def prior(sigma):
    """torch's N(0, sigma^2) in float64 (its default would be float32)."""
    return Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))


@pytest.mark.parametrize("prior_sigma", [1.0, 0.3])
def test_gaussian_kl_against_torch(prior_sigma):
    mu, rho = randn(3, 4, seed=1), randn(3, 4, seed=2) - 1.0
    compare_with_torch(lambda m, r: gaussian_kl(m, F.softplus(r), prior_sigma),
                       lambda m, r: kl_divergence(Normal(m, TF.softplus(r)), prior(prior_sigma)).sum(),
                       mu, rho, dtype=np.float64)
    assert check_gradients(lambda m, r: gaussian_kl(m, F.softplus(r), prior_sigma), mu, rho)


def test_kl_loss_is_the_layer_posteriors_kl_from_the_prior():
    layer, (w_mu, w_rho, b_mu, b_rho) = layer_and_params(prior_sigma=0.5)
    expected = sum(kl_divergence(Normal(torch.tensor(m), TF.softplus(torch.tensor(r))), prior(0.5)).sum()
                   for m, r in ((w_mu, w_rho), (b_mu, b_rho)))
    np.testing.assert_allclose(layer.kl_loss().item(), expected.item(), rtol=1e-12)
    model = Sequential(layer, Dense(2), BayesianDense(2, use_bias=False))
    model.build((None, 4))
    np.testing.assert_allclose(bayesian_kl(model).item(), layer.kl_loss().item() + model[2].kl_loss().item())
    assert bayesian_kl(Sequential(Dense(2))) == 0.0


@pytest.mark.parametrize("local", [False, True])
def test_sampled_forward_against_torch_with_the_same_noise(local):
    layer, params = layer_and_params(activation="tanh", local_reparameterization=local)
    x = randn(5, 4, seed=3)
    seed = 17

    def ours(x, *p):
        lamina.manual_seed(seed)
        return functional_call(layer, dict(zip(PARAMS, p)), x)

    def theirs(x, w_mu, w_rho, b_mu, b_rho):
        rng = np.random.default_rng(seed)                  # lamina.manual_seed's generator, drawn in the same order
        if local:
            mean = x @ w_mu + b_mu
            variance = (x * x) @ TF.softplus(w_rho) ** 2 + TF.softplus(b_rho) ** 2
            return torch.tanh(mean + variance.sqrt() * torch.tensor(rng.standard_normal(mean.shape)))
        weight = w_mu + TF.softplus(w_rho) * torch.tensor(rng.standard_normal(w_mu.shape))
        bias = b_mu + TF.softplus(b_rho) * torch.tensor(rng.standard_normal(b_mu.shape))
        return torch.tanh(x @ weight + bias)

    compare_with_torch(ours, theirs, x, *params, dtype=np.float64)
    assert check_gradients(lambda x, *p: ours(x, *p).sum(), x, *params)


def test_evaluation_uses_the_means_unless_sampling_is_asked_for():
    layer, (w_mu, _, b_mu, _) = layer_and_params()
    x = randn(2, 4, seed=4)
    layer.eval()
    np.testing.assert_allclose(layer(lamina.tensor(x, dtype=np.float64)).numpy(), x @ w_mu + b_mu)
    layer.sample_in_eval = True
    assert np.abs(layer(lamina.tensor(x, dtype=np.float64)).numpy() - (x @ w_mu + b_mu)).max() > 1e-3


@pytest.mark.parametrize("local", [False, True])
def test_output_moments_match_the_analytic_ones(local):
    layer, (w_mu, w_rho, b_mu, b_rho) = layer_and_params(units=2, n_in=3, seed=5, local_reparameterization=local)
    x = randn(1, 3, seed=6)
    lamina.manual_seed(0)
    n = 4000
    with lamina.no_grad():
        if local:                                          # independent noise per row: one pass
            outputs = layer(lamina.tensor(np.repeat(x, n, axis=0), dtype=np.float64)).numpy()
        else:                                              # one weight draw per pass
            outputs = np.concatenate([layer(lamina.tensor(x, dtype=np.float64)).numpy() for _ in range(n)])
    softplus = np.log1p(np.exp(w_rho)), np.log1p(np.exp(b_rho))
    mean = x[0] @ w_mu + b_mu
    variance = (x[0] ** 2) @ softplus[0] ** 2 + softplus[1] ** 2
    standard_error = np.sqrt(variance / n)
    assert np.all(np.abs(outputs.mean(axis=0) - mean) < 4 * standard_error)
    np.testing.assert_allclose(outputs.var(axis=0), variance, rtol=0.1)  # sd of the estimate: sqrt(2/n) = 2.2%


def test_predictive_uncertainty_is_larger_in_a_gap_of_the_data():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-3, -1, 100), rng.uniform(1, 3, 100)])[:, None].astype(np.float32)
    y = (np.sin(1.5 * x) + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    model = Sequential(BayesianDense(16, activation="tanh", posterior_rho_init=-3, local_reparameterization=True),
                       BayesianDense(1, posterior_rho_init=-3, local_reparameterization=True))
    model.build((None, 1))
    optimizer = Adam(model, lr=0.02)
    noise_sigma = 0.1
    for _ in range(600):                                   # the ELBO: Gaussian NLL + KL / N
        optimizer.zero_grad()
        loss = F.mean_squared_error(model(x), y) * (0.5 / noise_sigma ** 2) + bayesian_kl(model) / len(x)
        loss.backward()
        optimizer.step()
    on_data = np.concatenate([np.linspace(-3, -1, 20), np.linspace(1, 3, 20)])[:, None].astype(np.float32)
    in_gap = np.linspace(-0.5, 0.5, 20)[:, None].astype(np.float32)
    mean, std_data = mc_predict(model, on_data, num_samples=50)
    _, std_gap = mc_predict(model, in_gap, num_samples=50)
    assert np.sqrt(np.mean((mean - np.sin(1.5 * on_data)) ** 2)) < 0.15     # it fits the data
    # measured: std 0.046 on the data, 0.148 in the gap
    assert std_gap.mean() > 2 * std_data.mean(), (std_gap.mean(), std_data.mean())
    assert model.training and not model[0].sample_in_eval                   # mc_predict restored both


def test_config_and_save_load_round_trip(tmp_path):
    model = Sequential(BayesianDense(5, activation="relu", prior_sigma=0.5, posterior_rho_init=-4,
                                     local_reparameterization=True), BayesianDense(2, use_bias=False))
    x = randn(3, 4).astype(np.float32)
    model.build((None, 4))
    config = lamina.nn.layer_to_config(model)
    rebuilt = lamina.nn.layer_from_config(config)
    assert lamina.nn.layer_to_config(rebuilt) == config
    assert rebuilt[0].prior_sigma == 0.5 and rebuilt[0].local_reparameterization
    model(x)
    lamina.save(model, tmp_path / "bayes.safetensors")
    loaded = lamina.load(tmp_path / "bayes.safetensors")
    model.eval()
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(bayesian_kl(loaded).item(), bayesian_kl(model).item(), rtol=1e-6)


def test_errors_name_the_layer_and_values():
    with pytest.raises(ValueError, match="BayesianDense: prior_sigma must be a positive number, got -1"):
        BayesianDense(3, prior_sigma=-1)
    with pytest.raises(ValueError, match="posterior_rho_init must be a finite number"):
        BayesianDense(3, posterior_rho_init=float("nan"))
    layer = BayesianDense(3)
    layer(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"BayesianDense.*\(2, 5\).*the 4 features"):
        layer(np.zeros((2, 5), dtype=np.float32))
