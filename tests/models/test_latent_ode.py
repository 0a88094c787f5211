"""Latent ODE: the loss and its gradients (every parameter and the values) against a float64
torch rewrite of the published model with a hand-written RK4 (Kutta's 3/8 rule, the same
steps), a float64 gradient check, the masked likelihood ignoring unobserved entries, the
decoded path at query times, save/load, clear errors, and the README example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import models
from lamina.autograd import no_grad
from lamina.data import irregular_sines, union_grid
from lamina.errors import ShapeError


def _perturb(module, seed=3, scale=0.3):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.dtype)


def _tiny(method="rk4", **options):
    model = models.LatentODE(2, latent_dim=3, rec_hidden=4, rec_ode_hidden=(5,), ode_hidden=(5,),
                             decoder_hidden=(4,), obs_std=0.5, method=method, **options)
    _perturb(model)
    return model


def _batch(seed=0, dtype=np.float64):
    """Three sequences of 2 features on a union grid of 6 times, some entries unobserved."""
    data = irregular_sines(3, grid_size=6, num_observed=4, features=2, feature_prob=0.6, seed=seed, dtype=dtype)
    keep = data.mask.reshape(3, 6, 2).any(axis=(0, 2))
    return data.values[:, keep], data.times[keep], data.mask[:, keep]


# -- the torch rewrite ----------------------------------------------------------------------------
def _mlp(h, layers):
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = torch.tanh(h)
    return h


def _rk4(f, y, h):
    """One step of Kutta's 3/8 rule."""
    k1 = f(y)
    k2 = f(y + h * k1 / 3)
    k3 = f(y + h * (k2 - k1 / 3))
    k4 = f(y + h * (k1 - k2 + k3))
    return y + h * (k1 + 3 * k2 + 3 * k3 + k4) / 8


def _gru(x, h, kernel, recurrent, bias, recurrent_bias):
    n = h.shape[1]
    gx, gh = x @ kernel + bias, h @ recurrent + recurrent_bias
    r = torch.sigmoid(gx[:, :n] + gh[:, :n])
    z = torch.sigmoid(gx[:, n:2 * n] + gh[:, n:2 * n])
    cand = torch.tanh(gx[:, 2 * n:] + r * gh[:, 2 * n:])
    return (1 - z) * cand + z * h


def torch_latent_ode_loss(values, times, mask, eps, p, obs_std):
    """-ELBO: a backwards ODE-RNN (RK4 leg, GRU jump on [x m, m] where anything was seen) ->
    q(z_0); z(t) by RK4 from the first time; Gaussian likelihood over the observed entries."""
    steps = len(times)
    h = torch.zeros(values.shape[0], p["cell"][1].shape[0], dtype=torch.float64)
    for i in reversed(range(steps)):
        if i < steps - 1:
            h = _rk4(lambda s: _mlp(s, p["rec_f"]), h, times[i] - times[i + 1])
        m = mask[:, i]
        new = _gru(torch.cat([values[:, i] * m, m], dim=1), h, *p["cell"])
        seen = (m.sum(dim=1, keepdim=True) > 0).double()
        h = seen * new + (1 - seen) * h
    out = h @ p["post"][0] + p["post"][1]
    latent = out.shape[1] // 2
    mu, log_var = out[:, :latent], out[:, latent:]
    z = mu + torch.exp(0.5 * log_var) * eps
    path = [z]
    for i in range(1, steps):
        z = _rk4(lambda s: _mlp(s, p["f"]), z, times[i] - times[i - 1])
        path.append(z)
    predicted = _mlp(torch.stack(path, dim=1), p["dec"])
    log_lik = (-0.5 * ((values - predicted) / obs_std) ** 2 - math.log(obs_std) - 0.5 * math.log(2 * math.pi))
    log_lik = (log_lik * mask).sum(dim=(1, 2))
    kl = 0.5 * (mu ** 2 + torch.exp(log_var) - 1 - log_var).sum(dim=1)
    return (kl - log_lik).mean()


def _dense_pairs(layers):
    return [(layer.weight, layer.bias) for layer in layers]


def _parameter_groups(model):
    cell = model.encoder.cell
    return {"rec_f": _dense_pairs(model.encoder.dynamics.layers),
            "cell": [(cell.kernel, cell.recurrent_kernel, cell.bias, cell.recurrent_bias)],
            "post": [(model.to_posterior.weight, model.to_posterior.bias)],
            "f": _dense_pairs(model.dynamics.layers), "dec": _dense_pairs(model.decoder)}


def test_loss_and_gradients_match_the_torch_rewrite(float64):
    model = _tiny()
    values, times, mask = _batch()
    eps = randn(3, 3, seed=7)
    ours_values = lamina.tensor(values, requires_grad=True)
    loss = model.loss(ours_values, times, mask, eps=eps)
    loss.backward()
    groups = _parameter_groups(model)
    theirs = {key: [tuple(torch.tensor(q.numpy(), requires_grad=True) for q in pair) for pair in pairs]
              for key, pairs in groups.items()}
    flat = {key: (pairs[0] if key in ("cell", "post") else pairs) for key, pairs in theirs.items()}
    torch_values = torch.tensor(values, requires_grad=True)
    reference = torch_latent_ode_loss(torch_values, torch.tensor(times), torch.tensor(mask), torch.tensor(eps), flat,
                                      model.obs_std)
    reference.backward()
    np.testing.assert_allclose(loss.item(), reference.item(), rtol=1e-12)
    np.testing.assert_allclose(ours_values.grad, torch_values.grad.numpy(), rtol=1e-9, atol=1e-11)
    for key in groups:
        for ours_pair, theirs_pair in zip(groups[key], theirs[key]):
            for ours, ref in zip(ours_pair, theirs_pair):
                np.testing.assert_allclose(ours.grad, ref.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)


def test_gradients(float64):
    model = _tiny(method="midpoint")
    values, times, mask = _batch(seed=1)
    eps = randn(3, 3, seed=8)
    assert check_gradients(lambda v: model.loss(v, times, mask, eps=eps), values)
    assert check_gradients(lambda v: model.interpolate(v, times, mask, [0.5, 2.0, 6.0]), values)


def test_the_likelihood_reads_only_the_observed_entries(float64):
    model = _tiny()
    values, times, mask = _batch(seed=2)
    eps = randn(3, 3, seed=9)
    assert mask.min() == 0
    log_lik, kl = model.elbo_terms(values, times, mask, eps=eps)
    noisy = values + 10.0 * (1 - mask) * randn(*values.shape, seed=10)
    log_lik2, kl2 = model.elbo_terms(noisy, times, mask, eps=eps)
    np.testing.assert_array_equal(log_lik.numpy(), log_lik2.numpy())
    np.testing.assert_array_equal(kl.numpy(), kl2.numpy())
    full = model.elbo_terms(values, times, None, eps=eps)[0].numpy()
    np.testing.assert_array_equal(full, model.elbo_terms(values, times, np.ones_like(mask), eps=eps)[0].numpy())
    assert np.all(full < log_lik.numpy())           # more terms, each a log density below 0 at obs_std 0.5
    same = model.loss(values, times, mask, eps=eps, targets=(values, times, mask)).item()
    assert same == model.loss(values, times, mask, eps=eps).item()


def test_predictions_decode_the_mean_path_at_the_query_times(float64):
    model = _tiny(options={"step_size": 0.1})
    values, times, mask = _batch(seed=3)
    model.eval()
    with no_grad():
        at_obs = model(values, times, mask).numpy()
        assert at_obs.shape == values.shape
        np.testing.assert_array_equal(model.interpolate(values, times, mask, times).numpy(), at_obs)
        mu, _ = model.encode(values, times, mask)
        z = lamina.odeint(model.dynamics, mu, times, method="rk4", options={"step_size": 0.1})
        expected = model.decoder[1](model.decoder[0](z)).numpy().transpose(1, 0, 2)
        np.testing.assert_allclose(at_obs, expected, rtol=1e-10)
        later = times[-1] + np.array([0.5, 1.0])
        ahead = model.extrapolate(values, times, mask, later).numpy()
        assert ahead.shape == (3, 2, 2)
        before = np.array([times[0] - 0.5, times[0] + 0.1])
        assert model.interpolate(values, times, mask, before).shape == (3, 2, 2)
        model.train()
        lamina.manual_seed(0)
        drawn = model(values, times, mask).numpy()
    assert np.abs(drawn - at_obs).max() > 1e-6        # training mode samples z_0


def test_union_grid_batches_sequences_sampled_at_different_times():
    model = models.LatentODE(1, latent_dim=2, rec_hidden=3, rec_ode_hidden=3, ode_hidden=3, method="euler")
    batch = union_grid([[0.0, 0.4, 1.0], [0.2, 1.0]], [[[1.0], [2.0], [3.0]], [[4.0], [5.0]]])
    np.testing.assert_array_equal(batch.times, [0.0, 0.2, 0.4, 1.0])
    np.testing.assert_array_equal(batch.mask[..., 0], [[1, 0, 1, 1], [0, 1, 0, 1]])
    assert model.loss(batch.values, batch.times, batch.mask).shape == ()


def test_save_and_load_round_trip(tmp_path):
    model = models.LatentODE(2, latent_dim=3, rec_hidden=4, rec_ode_hidden=(5,), ode_hidden=(5,), method="euler")
    _perturb(model, scale=0.1)
    values, times, mask = _batch(dtype=np.float32)
    model.eval()
    with no_grad():
        expected = model.interpolate(values, times, mask, np.linspace(0, 5, 7)).numpy()
    lamina.save(model, tmp_path / "latent_ode.safetensors")
    twin = lamina.load(tmp_path / "latent_ode.safetensors")
    assert type(twin) is models.LatentODE and twin.get_config() == model.get_config()
    twin.eval()
    with no_grad():
        np.testing.assert_array_equal(twin.interpolate(values, times, mask, np.linspace(0, 5, 7)).numpy(), expected)


def test_errors_name_the_model_and_the_problem():
    model = models.LatentODE(2, latent_dim=2, rec_hidden=3, rec_ode_hidden=3, ode_hidden=3, method="euler")
    values, times, mask = _batch(dtype=np.float32)
    with pytest.raises(ValueError, match=r"LatentODE.loss: times must be strictly increasing, got times\[0\]"):
        model.loss(values, times[::-1], mask)
    with pytest.raises(ShapeError, match=r"mask has shape \(3, \d, 1\) but values have shape \(3, \d, 2\)"):
        model.loss(values, times, mask[..., :1])
    with pytest.raises(ValueError, match="extrapolate: query_times must all come after the last observation"):
        model.extrapolate(values, times, mask, [times[-1]])
    with pytest.raises(ValueError, match="query_times must be finite and strictly increasing"):
        model.interpolate(values, times, mask, [1.0, 0.5])
    with pytest.raises(ValueError, match="obs_std must be a positive number"):
        models.LatentODE(2, obs_std=0.0)
    with pytest.raises(ValueError, match="kl_weight"):
        model.loss(values, times, mask, kl_weight=-1.0)


def test_readme_example():
    printed, names = run_readme_section("Latent ODEs for irregular time series")
    lines = printed.split("\n")
    assert lines[0] == "(4, 30, 1) (4, 30, 1)"
    before, after = (float(v) for v in lines[1].split())
    assert after < before
