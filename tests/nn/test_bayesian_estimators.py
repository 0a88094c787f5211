"""BayesianDense and BayesianConv2D estimators (reparameterization, local reparameterization,
flipout) against torch rewrites of their formulas with the same noise, float64 gradient
checks, the closed-form and scale-mixture KLs against torch.distributions, elbo_loss with the
Trainer, learning on digits, config round trips, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch.distributions import Categorical, MixtureSameFamily, Normal, kl_divergence

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina.nn import (
    BayesianConv2D,
    BayesianDense,
    Flatten,
    Sequential,
    bayesian_kl,
    elbo_loss,
    functional_call,
    init,
    mc_predict,
)
from lamina.nn.module import Module
from lamina.optim import Adam
from lamina.train import Trainer

PARAMS = ["weight_mu", "weight_rho", "bias_mu", "bias_rho"]
SEED = 23


def randomized(layer, input_shape, seed=0):
    """``layer`` built in float64 with mu ~ N(0, 0.5^2) and rho ~ N(-1, 0.5^2)."""
    layer.build(input_shape)
    layer.double()
    rng = np.random.default_rng(seed)
    for name, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * 0.5 + (-1.0 if name.endswith("rho") else 0.0)
    return [layer._parameters[name].data.copy() for name in PARAMS]


def seeded_call(layer):
    def run(x, *params):
        lamina.manual_seed(SEED)
        return functional_call(layer, dict(zip(PARAMS, params)), x)
    return run


def torch_sampled(estimator, apply, sign_shapes):
    """The estimator's formula in torch, drawing from the generator lamina.manual_seed(SEED)
    makes, in the layer's order. ``apply(x, w, b)`` is the deterministic layer; ``sign_shapes(x,
    z)`` the shapes of flipout's input and output signs."""

    def run(x, w_mu, w_rho, b_mu, b_rho):
        rng = np.random.default_rng(SEED)
        normal = lambda shape: torch.tensor(rng.standard_normal(shape))           # noqa: E731
        signs = lambda shape: torch.tensor(rng.integers(0, 2, size=shape) * 2 - 1.0)  # noqa: E731
        w_sigma, b_sigma = TF.softplus(w_rho), TF.softplus(b_rho)
        if estimator == "local_reparameterization":
            mean = apply(x, w_mu, b_mu)
            variance = apply(x * x, w_sigma ** 2, b_sigma ** 2)
            return mean + variance.sqrt() * normal(mean.shape)
        delta = w_sigma * normal(w_mu.shape)
        bias = b_mu + b_sigma * normal(b_mu.shape)
        if estimator == "reparameterization":
            return apply(x, w_mu + delta, bias)
        s_shape, r_shape = sign_shapes(x, apply(x, w_mu, bias))
        s = signs(s_shape)
        return apply(x, w_mu, bias) + apply(x * s, delta, None) * signs(r_shape)
    return run


def torch_dense(x, w, b):
    return x @ w + (0 if b is None else b)


def torch_conv(stride, padding):
    def apply(x, w, b):
        out = TF.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), b, stride=stride, padding=padding)
        return out.permute(0, 2, 3, 1)
    return apply


ESTIMATORS = ["reparameterization", "local_reparameterization", "flipout"]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_dense_estimators_against_torch_with_the_same_noise(estimator):
    layer = BayesianDense(3, estimator=estimator)
    params = randomized(layer, (None, 4))
    x = randn(5, 4, seed=1)
    compare_with_torch(seeded_call(layer),
                       torch_sampled(estimator, torch_dense, lambda x, z: (x.shape, z.shape)),
                       x, *params, dtype=np.float64)
    assert check_gradients(lambda *a: seeded_call(layer)(*a).tanh().sum(), x, *params)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_conv_estimators_against_torch_with_the_same_noise(estimator):
    layer = BayesianConv2D(3, 3, stride=2, padding=1, estimator=estimator)
    params = randomized(layer, (None, 5, 5, 2), seed=2)
    x = randn(2, 5, 5, 2, seed=3)
    per_channel = lambda x, z: ((x.shape[0], 1, 1, x.shape[-1]), (z.shape[0], 1, 1, z.shape[-1]))  # noqa: E731
    compare_with_torch(seeded_call(layer), torch_sampled(estimator, torch_conv(2, 1), per_channel),
                       x, *params, dtype=np.float64)
    assert check_gradients(lambda *a: seeded_call(layer)(*a).tanh().sum(), x, *params)


def test_flipout_signs_decorrelate_the_samples_of_a_batch():
    """The same input repeated over a batch: one weight draw (reparameterization) gives every
    row the same output; flipout gives rows that differ, with the layer's mean and variance."""
    outputs = {}
    for estimator in ("reparameterization", "flipout"):
        layer = BayesianDense(2, estimator=estimator)
        _, w_rho, _, b_rho = randomized(layer, (None, 3), seed=4)
        lamina.manual_seed(0)
        with lamina.no_grad():
            outputs[estimator] = np.concatenate(
                [layer(lamina.tensor(np.ones((8, 3)), dtype=np.float64)).numpy() for _ in range(500)])
    rows = outputs["reparameterization"].reshape(500, 8, 2)
    assert np.ptp(rows, axis=1).max() < 1e-12
    flipout = outputs["flipout"]
    assert np.ptp(flipout.reshape(500, 8, 2), axis=1).mean() > 0.1
    softplus = lambda r: np.log1p(np.exp(r))                           # noqa: E731
    variance = np.ones(3) @ softplus(w_rho) ** 2 + softplus(b_rho) ** 2
    np.testing.assert_allclose(flipout.var(axis=0), variance, rtol=0.2)    # 500 weight draws


def test_the_mean_is_used_in_evaluation_for_the_conv_layer():
    layer = BayesianConv2D(2, 3, padding="same", estimator="flipout")
    w_mu, _, b_mu, _ = randomized(layer, (None, 4, 4, 1))
    x = randn(1, 4, 4, 1, seed=5)
    layer.eval()
    expected = torch_conv(1, 1)(torch.tensor(x), torch.tensor(w_mu), torch.tensor(b_mu)).numpy()
    np.testing.assert_allclose(layer(lamina.tensor(x, dtype=np.float64)).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("prior_sigma", [1.0, 0.2])
def test_conv_kl_is_the_closed_form_of_torch_distributions(prior_sigma):
    layer = BayesianConv2D(2, 3, prior_sigma=prior_sigma)
    w_mu, w_rho, b_mu, b_rho = randomized(layer, (None, 5, 5, 2), seed=6)
    prior = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(prior_sigma, dtype=torch.float64))
    expected = sum(kl_divergence(Normal(torch.tensor(m), TF.softplus(torch.tensor(r))), prior).sum()
                   for m, r in ((w_mu, w_rho), (b_mu, b_rho)))
    np.testing.assert_allclose(layer.kl_divergence().item(), expected.item(), rtol=1e-12)
    model = Sequential(layer, Flatten(), BayesianDense(2, prior_sigma=0.5))
    model.build((None, 5, 5, 2))
    np.testing.assert_allclose(bayesian_kl(model).item(),
                               layer.kl_divergence().item() + model[2].kl_divergence().item(), rtol=1e-12)


class KLOf(Module):
    """A module whose output is its layer's KL, so that functional_call can swap the layer's
    parameters for tensors of the test."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.built = True

    def forward(self, _):
        return self.layer.kl_divergence()


def test_scale_mixture_kl_is_a_monte_carlo_estimate_against_torch():
    mixture = (0.25, 1.0, 0.05)
    layer = BayesianDense(3, prior_mixture=mixture)
    params = randomized(layer, (None, 4), seed=7)

    holder = KLOf(layer)

    def ours(*p):
        lamina.manual_seed(SEED)
        return functional_call(holder, {f"layer.{name}": value for name, value in zip(PARAMS, p)}, None)

    def theirs(w_mu, w_rho, b_mu, b_rho):
        rng = np.random.default_rng(SEED)
        weights = torch.tensor([mixture[0], 1 - mixture[0]], dtype=torch.float64)
        scales = torch.tensor(mixture[1:], dtype=torch.float64)
        prior = MixtureSameFamily(Categorical(probs=weights), Normal(torch.zeros(2, dtype=torch.float64), scales))
        total = 0.0
        for mu, rho in ((w_mu, w_rho), (b_mu, b_rho)):
            posterior = Normal(mu, TF.softplus(rho))
            w = mu + TF.softplus(rho) * torch.tensor(rng.standard_normal(mu.shape))
            total = total + (posterior.log_prob(w) - prior.log_prob(w)).sum()
        return total

    compare_with_torch(ours, theirs, *params, dtype=np.float64)
    assert check_gradients(ours, *params)
    lamina.manual_seed(0)                              # unbiased: many draws average to the KL
    estimates = [layer.kl_divergence().item() for _ in range(300)]
    reference = theirs(*(torch.tensor(p) for p in params)).item()      # one more draw, for its scale
    generator = torch.Generator().manual_seed(0)
    exact = 0.0
    for mu, rho in ((params[0], params[1]), (params[2], params[3])):   # 20000 draws per weight in torch
        sigma = TF.softplus(torch.tensor(rho))
        w = torch.tensor(mu) + sigma * torch.randn((20000, *mu.shape), generator=generator, dtype=torch.float64)
        weights = torch.tensor([mixture[0], 1 - mixture[0]], dtype=torch.float64)
        prior = MixtureSameFamily(Categorical(probs=weights),
                                  Normal(torch.zeros(2, dtype=torch.float64), torch.tensor(mixture[1:])))
        exact += (Normal(torch.tensor(mu), sigma).log_prob(w) - prior.log_prob(w)).sum(dim=tuple(
            range(1, w.ndim))).mean().item()
    std_error = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * std_error + 0.01 * abs(exact), (np.mean(estimates), exact)
    assert np.isfinite(reference)


def test_elbo_loss_with_the_trainer_fits_a_regression_and_is_uncertain_in_a_gap():
    lamina.manual_seed(1)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-3, -1, 100), rng.uniform(1, 3, 100)])[:, None].astype(np.float32)
    y = (np.sin(1.5 * x) + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    model = Sequential(BayesianDense(16, activation="tanh", posterior_rho_init=-3, estimator="flipout"),
                       BayesianDense(1, posterior_rho_init=-3, estimator="flipout"))
    model.build((None, 1))
    gaussian_nll = lambda out, target: F.mean_squared_error(out, target) * 50.0  # noqa: E731  (noise sd 0.1)
    trainer = Trainer(model, elbo_loss(model, gaussian_nll, len(x)), Adam(model, lr=0.02), metrics=(), verbose=0)
    trainer.fit((x, y), epochs=120, batch_size=50, seed=0)
    on_data = np.concatenate([np.linspace(-3, -1, 20), np.linspace(1, 3, 20)])[:, None].astype(np.float32)
    in_gap = np.linspace(-0.5, 0.5, 20)[:, None].astype(np.float32)
    mean, std_data = mc_predict(model, on_data, num_samples=50)
    _, std_gap, samples = mc_predict(model, in_gap, num_samples=50, return_samples=True)
    assert samples.shape == (50, 20, 1)
    rmse = np.sqrt(np.mean((mean - np.sin(1.5 * on_data)) ** 2))
    print(f"flipout regression: rmse {rmse:.3f}, std on the data {std_data.mean():.3f}, in the gap "
          f"{std_gap.mean():.3f}")
    assert rmse < 0.2
    assert std_gap.mean() > 2 * std_data.mean(), (std_gap.mean(), std_data.mean())


def test_a_bayesian_mlp_learns_digits():
    from lamina.data import load_digits
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32)
    x = x / x.max()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    lamina.manual_seed(0)
    model = Sequential(BayesianDense(64, activation="relu", estimator="local_reparameterization",
                                     kernel_init=init.normal(0.1), posterior_rho_init=-3),
                       BayesianDense(10, estimator="local_reparameterization", kernel_init=init.normal(0.1),
                                     posterior_rho_init=-3))
    model.build((None, x.shape[1]))
    loss = elbo_loss(model, F.cross_entropy, len(train))
    trainer = Trainer(model, loss, Adam(model, lr=0.01), metrics=(), verbose=0)
    trainer.fit((x[train], y[train]), epochs=15, batch_size=64, seed=0)
    mean, _ = mc_predict(model, x[test], num_samples=20)
    accuracy = np.mean(mean.argmax(axis=1) == y[test])
    print(f"Bayesian MLP on digits: test accuracy {accuracy:.3f}")
    assert accuracy > 0.9


def test_conv_config_and_save_round_trip(tmp_path):
    model = Sequential(BayesianConv2D(3, (3, 2), stride=(1, 2), padding="same", activation="relu",
                                      estimator="flipout", prior_mixture=(0.5, 1.0, 0.01)),
                       Flatten(), BayesianDense(2, local_reparameterization=True))
    model.build((None, 6, 6, 2))
    config = lamina.nn.layer_to_config(model)
    rebuilt = lamina.nn.layer_from_config(config)
    assert lamina.nn.layer_to_config(rebuilt) == config
    assert rebuilt[0].estimator == "flipout" and rebuilt[0].prior_mixture == (0.5, 1.0, 0.01)
    assert rebuilt[2].estimator == "local_reparameterization"
    x = randn(2, 6, 6, 2).astype(np.float32)
    assert model(x).shape == (2, 2) and model[0].compute_output_shape((None, 6, 6, 2)) == (None, 6, 3, 3)
    lamina.save(model, tmp_path / "bayes_conv.safetensors")
    loaded = lamina.load(tmp_path / "bayes_conv.safetensors")
    model.eval()
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_errors_name_the_layer_and_values():
    with pytest.raises(ValueError, match="BayesianDense: estimator must be one of .* got 'dropout'"):
        BayesianDense(3, estimator="dropout")
    with pytest.raises(ValueError, match="local_reparameterization=True contradicts estimator='flipout'"):
        BayesianDense(3, estimator="flipout", local_reparameterization=True)
    with pytest.raises(ValueError, match=r"BayesianConv2D: the mixture weight pi of prior_mixture must be in \(0, 1\)"):
        BayesianConv2D(3, 3, prior_mixture=(1.5, 1.0, 0.1))
    with pytest.raises(ValueError, match="prior_mixture must be"):
        BayesianDense(3, prior_mixture=(0.5, 1.0))
    layer = BayesianConv2D(2, 3)
    layer(np.zeros((1, 5, 5, 2), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"BayesianConv2D.*C=2"):
        layer(np.zeros((1, 5, 5, 3), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match="larger than the padded input"):
        layer(np.zeros((1, 2, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="elbo_loss: dataset_size"):
        elbo_loss(Sequential(BayesianDense(2)), F.cross_entropy, 0)


def test_the_readme_example_runs():

    _, names = run_readme_section("Bayesian layers, mixture density networks and survival analysis")
    assert names["std_in_gap"].mean() > 2 * names["std_on_data"].mean()
    assert F.concordance_index(names["durations"], names["deepsurv"](names["covariates"]).numpy(),
                               names["events"]) > 0.7
