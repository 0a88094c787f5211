"""DeepAR: the three likelihoods' log-densities against torch.distributions (values and gradients
with respect to the parameters), the item scale and the parameter scaling by hand, the whole
teacher-forced loss against a float64 torch rewrite (LSTM, head, scaling, log-likelihood) with
the same weights, float64 gradient checks, the ancestral sampling loop against a NumPy loop with
the same random draws, seeding, saving, errors, and learning noisy seasonal series of different
scales (Gaussian) and seasonal Poisson counts (negative binomial) better than the seasonal naive
forecast with 10-90% intervals that cover about 80% of the held-out points."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, positive, randn, run_readme_section
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.models import (
    DeepAR,
    gaussian_log_prob,
    item_scale,
    negative_binomial_log_prob,
    student_t_log_prob,
)
from lamina.models.forecasting.deepar_likelihoods import likelihood_log_prob, likelihood_parameters
from lamina.train import mae, seasonal_naive_forecast

LIKELIHOODS = ("gaussian", "student_t", "negative_binomial")

# -- the log-densities -----------------------------------------------------------------------


def test_gaussian_log_prob_matches_torch():
    z, mu, sigma = randn(3, 4), randn(3, 4, seed=1), positive(3, 4, seed=2)
    compare_with_torch(gaussian_log_prob, lambda z, m, s: torch.distributions.Normal(m, s).log_prob(z),
                       z, mu, sigma, dtype=np.float64)


def test_student_t_log_prob_matches_torch():
    z, mu, sigma, dof = randn(3, 4), randn(3, 4, seed=1), positive(3, 4, seed=2), positive(3, 4, seed=3, low=2.1,
                                                                                              high=8.0)
    compare_with_torch(student_t_log_prob, lambda z, m, s, d: torch.distributions.StudentT(d, m, s).log_prob(z),
                       z, mu, sigma, dof, dtype=np.float64)


def test_negative_binomial_log_prob_matches_torch():
    """torch's NB(r, p) with r = 1/alpha, p = alpha mu / (1 + alpha mu) has mean mu, variance mu + alpha mu^2."""
    z = np.random.default_rng(0).integers(0, 12, (3, 4)).astype(np.float64)
    mu, alpha = positive(3, 4, seed=1, low=0.5, high=9.0), positive(3, 4, seed=2, low=0.05, high=1.5)

    def reference(z, m, a):
        return torch.distributions.NegativeBinomial(1.0 / a, probs=a * m / (1.0 + a * m)).log_prob(z)

    compare_with_torch(negative_binomial_log_prob, reference, z, mu, alpha, dtype=np.float64, grad=[False, True, True])


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_scaled_log_prob_gradient_check(likelihood):
    """log p(z | theta(o, nu)) as a function of the network outputs o, in float64."""
    k = 3 if likelihood == "student_t" else 2
    z = np.random.default_rng(0).poisson(4.0, (3, 5)).astype(np.float64)
    nu = item_scale(z)

    def fn(outputs):
        params = likelihood_parameters(outputs, nu, likelihood)
        return likelihood_log_prob(lamina.tensor(z, dtype=np.float64), params, likelihood)

    assert check_gradients(fn, randn(3, 5, k))


# -- scaling ---------------------------------------------------------------------------------


def test_item_scale_and_parameter_scaling_by_hand():
    z = np.array([[1.0, 3.0, 2.0, 100.0], [-2.0, 2.0, 0.0, 0.0]])
    np.testing.assert_allclose(item_scale(z, 3), [[3.0], [1.0 + 4.0 / 3.0]])
    np.testing.assert_allclose(item_scale(z), [[27.5], [2.0]])
    o = np.array([[[0.5, -1.0, 0.3]], [[-2.0, 2.0, -0.7]]])
    nu = np.array([[3.0], [2.0]])
    softplus = np.log1p(np.exp(o))
    gaussian = likelihood_parameters(lamina.tensor(o[..., :2], dtype=np.float64), nu, "gaussian")
    np.testing.assert_allclose(gaussian[0].numpy(), nu * o[..., 0])
    np.testing.assert_allclose(gaussian[1].numpy(), nu * softplus[..., 1])
    student = likelihood_parameters(lamina.tensor(o, dtype=np.float64), nu, "student_t")
    np.testing.assert_allclose(student[2].numpy(), 2.0 + softplus[..., 2])
    counts = likelihood_parameters(lamina.tensor(o[..., :2], dtype=np.float64), nu, "negative_binomial")
    np.testing.assert_allclose(counts[0].numpy(), nu * softplus[..., 0])
    np.testing.assert_allclose(counts[1].numpy(), softplus[..., 1] / np.sqrt(nu))


# -- the whole model against torch -------------------------------------------------------------

CONFIG = dict(hidden=5, layers=2, lags=(1, 3), num_covariates=2, num_series=3, embedding_dim=2)


def _inputs(likelihood, batch=4, context=6, horizon=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.poisson(5.0, (batch, context + horizon)).astype(np.float64)
    if likelihood != "negative_binomial":
        z = z + rng.standard_normal(z.shape)
    return z, rng.standard_normal((batch, context + horizon, 2)), rng.integers(0, 3, batch)


def _model(likelihood, seed=0):
    lamina.manual_seed(seed)
    model = DeepAR(6, 3, likelihood=likelihood, **CONFIG)
    state = dict(model.named_parameters())
    for i, key in enumerate(sorted(state)):      # off the initial zeros and ones
        value = state[key].numpy() + 0.2 * randn(*state[key].shape, seed=10 + i)
        state[key].data[...] = value.astype(state[key].data.dtype)
    return model


def _torch_params(model):
    return {k: torch.tensor(np.asarray(v.numpy(), np.float64), requires_grad=True)
            for k, v in model.named_parameters()}


def _torch_lstm_step(p, prefix, x, h, c):
    gates = x @ p[prefix + ".kernel"] + p[prefix + ".bias"] + h @ p[prefix + ".recurrent_kernel"] + \
        p[prefix + ".recurrent_bias"]
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def torch_deepar_loss(p, z, covariates, series, likelihood, context=6, lags=(1, 3), layers=2, hidden=5):
    """The paper's model written out: inputs [z_{t-l} / nu, x_t, e_i], stacked LSTMs, a Dense head,
    the scaled likelihood, the mean NLL over t >= t0."""
    z = torch.tensor(z)
    nu = 1.0 + z[:, :context].abs().mean(dim=1, keepdim=True)
    e = p["embedding.weight"][torch.tensor(series)]
    states = [(torch.zeros(len(z), hidden, dtype=torch.float64),) * 2 for _ in range(layers)]
    terms = []
    for t in range(max(lags), z.shape[1]):
        x = torch.cat([torch.stack([z[:, t - lag] / nu[:, 0] for lag in lags], -1),
                       torch.tensor(covariates[:, t]), e], -1)
        for i in range(layers):
            states[i] = _torch_lstm_step(p, f"lstm{i}", x, *states[i])
            x = states[i][0]
        o = x @ p["head.weight"] + p["head.bias"]
        if t < context:
            continue
        if likelihood == "gaussian":
            dist = torch.distributions.Normal(nu[:, 0] * o[:, 0], nu[:, 0] * tF.softplus(o[:, 1]))
        elif likelihood == "student_t":
            dist = torch.distributions.StudentT(2.0 + tF.softplus(o[:, 2]), nu[:, 0] * o[:, 0],
                                                nu[:, 0] * tF.softplus(o[:, 1]))
        else:
            mu, alpha = nu[:, 0] * tF.softplus(o[:, 0]), tF.softplus(o[:, 1]) / nu[:, 0].sqrt()
            dist = torch.distributions.NegativeBinomial(1.0 / alpha, probs=alpha * mu / (1.0 + alpha * mu))
        terms.append(dist.log_prob(z[:, t]))
    return -torch.stack(terms).mean()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_loss_and_parameter_gradients_match_a_torch_rewrite(likelihood):
    model = _model(likelihood)
    model.to(dtype=np.float64)
    z, covariates, series = _inputs(likelihood)
    loss = model.loss(z, covariates, series)
    loss.backward()
    p = _torch_params(model)
    reference = torch_deepar_loss(p, z, covariates, series, likelihood)
    reference.backward()
    assert_close(loss.numpy(), reference.detach().numpy(), 1e-10, "loss")
    for key, parameter in model.named_parameters():
        assert_close(parameter.grad, p[key].grad.numpy(), 1e-8, key)


def test_network_outputs_gradient_check():
    """The float64 gradient check of the network outputs with respect to every parameter."""
    model = _model("student_t")
    model.to(dtype=np.float64)
    z, covariates, series = _inputs("student_t")
    keys = [k for k, _ in model.named_parameters()]

    def fn(*values):
        return nn.functional_call(model, dict(zip(keys, values)), z, covariates, series)

    assert check_gradients(fn, *[np.asarray(v.numpy(), np.float64) for _, v in model.named_parameters()])


def test_outputs_are_causal_in_the_target():
    """Changing z_t changes no output at steps <= t (teacher forcing feeds z_{t-l}, l >= 1)."""
    model = _model("gaussian")
    z, covariates, series = _inputs("gaussian")
    with lamina.no_grad():
        before = model(z, covariates, series).numpy()
        z[:, 7] += 5.0
        after = model(z, covariates, series).numpy()
    changed = np.any(before != after, axis=(0, 2))                # outputs at the steps 3 .. 8
    assert not changed[:7 - 3 + 1].any() and changed[7 - 3 + 1:].all()


# -- sampling --------------------------------------------------------------------------------


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_sample_paths(p, z, covariates, series, likelihood, num_samples, rng, context=6, horizon=3, lags=(1, 3)):
    """Ancestral sampling written as a plain NumPy loop over the time steps."""
    batch, layers = len(z), 2
    rows = np.tile(np.arange(batch), num_samples)
    paths = np.concatenate([z[rows], np.zeros((len(rows), horizon))], axis=1)
    nu = 1.0 + np.abs(z).mean(axis=1)[rows]
    e = p["embedding.weight"][series[rows]]
    h = [np.zeros((len(rows), 5)) for _ in range(layers)]
    c = [np.zeros((len(rows), 5)) for _ in range(layers)]
    for t in range(max(lags), context + horizon):
        x = np.concatenate([np.stack([paths[:, t - lag] / nu for lag in lags], -1), covariates[rows, t], e], -1)
        for i in range(layers):
            gates = x @ p[f"lstm{i}.kernel"] + p[f"lstm{i}.bias"] + h[i] @ p[f"lstm{i}.recurrent_kernel"] + \
                p[f"lstm{i}.recurrent_bias"]
            gi, gf, gg, go = np.split(gates, 4, axis=-1)
            c[i] = _sigmoid(gf) * c[i] + _sigmoid(gi) * np.tanh(gg)
            h[i] = x = _sigmoid(go) * np.tanh(c[i])
        if t < context:
            continue
        o = x @ p["head.weight"] + p["head.bias"]
        if likelihood == "gaussian":
            paths[:, t] = nu * o[:, 0] + nu * _softplus(o[:, 1]) * rng.standard_normal(len(rows))
        elif likelihood == "student_t":
            paths[:, t] = nu * o[:, 0] + nu * _softplus(o[:, 1]) * rng.standard_t(2.0 + _softplus(o[:, 2]))
        else:
            mu, alpha = nu * _softplus(o[:, 0]), _softplus(o[:, 1]) / np.sqrt(nu)
            paths[:, t] = rng.poisson(rng.gamma(1.0 / alpha, alpha * mu))
    return paths[:, context:].reshape(num_samples, batch, horizon)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_sample_paths_match_a_numpy_loop_with_the_same_draws(likelihood):
    model = _model(likelihood)
    model.to(dtype=np.float64)
    z, covariates, series = _inputs(likelihood)
    paths = model.sample_paths(z[:, :6], covariates, series, num_samples=5, rng=np.random.default_rng(7))
    p = {k: np.asarray(v.numpy(), np.float64) for k, v in model.named_parameters()}
    reference = numpy_sample_paths(p, z[:, :6], covariates, series, likelihood, 5, np.random.default_rng(7))
    assert paths.shape == (5, 4, 3)
    np.testing.assert_allclose(paths, reference, rtol=1e-9, atol=1e-9)


def test_forecasts_are_seeded_and_repeatable():
    model = _model("negative_binomial")
    z, covariates, series = _inputs("negative_binomial")
    first = model.forecast(z[:, :6], covariates, series, num_samples=20, quantiles=(0.1, 0.5, 0.9), rng=3)
    again = model.forecast(z[:, :6], covariates, series, num_samples=20, quantiles=(0.1, 0.5, 0.9), rng=3)
    other = model.forecast(z[:, :6], covariates, series, num_samples=20, rng=4)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)
    assert first.quantiles.shape == (4, 3, 3) and first.mean.shape == (4, 3) and first.levels == (0.1, 0.5, 0.9)
    np.testing.assert_allclose(first.mean, first.samples.mean(axis=0))
    np.testing.assert_allclose(first.quantiles[..., 1], np.median(first.samples, axis=0))
    assert np.all(first.samples >= 0) and np.all(first.samples == np.round(first.samples))


# -- saving and errors -------------------------------------------------------------------------


def test_saved_and_loaded(tmp_path):
    model = _model("student_t")
    z, covariates, series = _inputs("student_t")
    lamina.save(model, tmp_path / "deepar.lam")
    loaded = lamina.load(tmp_path / "deepar.lam")
    assert type(loaded) is DeepAR and loaded.get_config() == model.get_config()
    with lamina.no_grad():
        np.testing.assert_array_equal(loaded(z, covariates, series).numpy(), model(z, covariates, series).numpy())
    np.testing.assert_array_equal(loaded.sample_paths(z[:, :6], covariates, series, 4, rng=1),
                                  model.sample_paths(z[:, :6], covariates, series, 4, rng=1))


def test_bad_inputs_are_refused_with_clear_errors():
    model = _model("negative_binomial")
    z, covariates, series = _inputs("negative_binomial")
    with pytest.raises(ShapeError, match=r"DeepAR: z has shape \(4, 8\); expected \(batch, 9\)"):
        model(z[:, :8], covariates, series)
    with pytest.raises(ShapeError, match="covariates have shape"):
        model(z, covariates[:, :, :1], series)
    with pytest.raises(ValueError, match="counts z >= 0"):
        model(-z, covariates, series)
    with pytest.raises(ValueError, match=r"series must be \(batch,\)"):
        model(z, covariates, series + 3)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        DeepAR(6, 3, likelihood="poisson")
    with pytest.raises(ValueError, match="largest lag"):
        DeepAR(6, 3, lags=(1, 6))


# -- learning ---------------------------------------------------------------------------------

PERIOD, CONTEXT, HORIZON, SPLIT = 7, 21, 7, 180


def _seasonal(kind: str, seed: int, count=8, length=240):
    """``count`` series of period 7 at scales from 1 to 100 (Gaussian noise of a quarter of the
    scale) or seasonal Poisson counts of mean 2 to 40; returns them, the per-series noise scale
    and the covariates sin, cos(2 pi t / 7)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    phase = rng.uniform(0.0, 2.0 * np.pi, (count, 1))
    if kind == "gaussian":
        scales = np.geomspace(1.0, 100.0, count)
        shape = 2.0 + np.sin(2 * np.pi * t / PERIOD + phase) + 0.5 * np.cos(4 * np.pi * t / PERIOD + phase)
        z = scales[:, None] * (shape + 0.25 * rng.standard_normal((count, length)))
    else:
        rates = np.geomspace(2.0, 40.0, count)
        z = rng.poisson(rates[:, None] * (1.0 + 0.6 * np.sin(2 * np.pi * t / PERIOD + phase))).astype(np.float64)
        scales = np.sqrt(rates)
    covariates = np.broadcast_to(np.stack([np.sin(2 * np.pi * t / PERIOD), np.cos(2 * np.pi * t / PERIOD)], -1),
                                 (count, length, 2))
    return z, scales, covariates


def _windows(z, covariates, ids, starts):
    width = CONTEXT + HORIZON
    return (np.stack([z[i, s:s + width] for i, s in zip(ids, starts)]),
            np.stack([covariates[i, s:s + width] for i, s in zip(ids, starts)]))


def learn(kind: str, seed: int, steps: int = 400):
    """Adam on the NLL of random windows of the first 180 steps; the forecasts of the later windows."""
    z, scales, covariates = _seasonal(kind, seed)
    lamina.manual_seed(seed)
    model = DeepAR(CONTEXT, HORIZON, likelihood=kind, hidden=24, layers=1, lags=(1, PERIOD), num_covariates=2,
                   num_series=len(z), embedding_dim=4)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = rng.integers(0, len(z), 32)
        window, known = _windows(z, covariates, ids, rng.integers(0, SPLIT - CONTEXT - HORIZON + 1, 32))
        loss = model.loss(window, known, ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    starts = np.arange(SPLIT - CONTEXT, z.shape[1] - CONTEXT - HORIZON + 1, HORIZON)
    ids = np.repeat(np.arange(len(z)), len(starts))
    window, known = _windows(z, covariates, ids, np.tile(starts, len(z)))
    forecast = model.forecast(window[:, :CONTEXT], known, ids, num_samples=100, quantiles=(0.1, 0.9), rng=0)
    y = window[:, CONTEXT:]
    naive = seasonal_naive_forecast(window[:, :CONTEXT], HORIZON, PERIOD)
    covered = np.mean((forecast.quantiles[..., 0] <= y) & (y <= forecast.quantiles[..., 1]))
    return mae(y, forecast.mean), mae(y, naive), covered


@pytest.mark.parametrize("kind", ["gaussian", "negative_binomial"])
def test_beats_seasonal_naive_with_calibrated_intervals(kind):
    # measured (seeds 0, 1, 2), MAE DeepAR / seasonal naive, 10-90% coverage, ~2 s each on one thread:
    #   gaussian:          5.70 / 7.51, 0.75;  5.90 / 7.47, 0.69;  5.03 / 6.67, 0.77
    #   negative_binomial: 2.83 / 3.88, 0.84;  2.79 / 3.55, 0.85;  2.77 / 3.43, 0.84
    start = time.perf_counter()
    model_mae, naive_mae, covered = learn(kind, seed=0)
    assert model_mae < 0.9 * naive_mae
    assert 0.6 <= covered <= 0.95
    assert time.perf_counter() - start < 20.0


def test_readme_example_runs():
    printed, names = run_readme_section("DeepAR")
    lines = printed.strip().split("\n")
    assert lines[0] == "(100, 2, 7) (2, 7, 3)"
    assert lines[1:] == ["True", "True"]
    assert isinstance(names["model"], DeepAR)
