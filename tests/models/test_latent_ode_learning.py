"""Learning: a latent ODE trained for a few seconds on irregularly observed sine waves
interpolates held-out points far better than the per-sequence mean of the observed points
and than linear interpolation between them, and, given only the first half of a sequence,
extrapolates the second half better than that mean."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import models, optim
from lamina.autograd import no_grad
from lamina.data import irregular_sines

GRID, HALF = 24, 12
DATA = {"grid_size": GRID, "num_observed": 8, "t_max": 5.0, "frequency": (2.0, 3.0), "amplitude": (0.8, 1.2)}


def train_latent_ode(seed: int, steps: int = 400):
    """Half the steps reconstruct the whole sequence from all its observations, half from
    those of its first half (the paper's extrapolation training)."""
    lamina.manual_seed(seed)
    train = irregular_sines(512, seed=100 + seed, **DATA)
    model = models.LatentODE(1, latent_dim=4, rec_hidden=16, rec_ode_hidden=(16,), ode_hidden=(32,), method="euler")
    opt = optim.Adam(model.parameters(), lr=0.02)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        idx = rng.choice(512, 32, replace=False)
        values, mask, times = train.values[idx], train.mask[idx], train.times
        anneal = min(1.0, step / 50)
        if step % 2:
            loss = model.loss(values[:, :HALF], times[:HALF], mask[:, :HALF], kl_weight=anneal,
                              targets=(values, times, mask))
        else:
            loss = model.loss(values, times, mask, kl_weight=anneal)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _mse(a, b, weight):
    return float(((a - b) ** 2 * weight).sum() / weight.sum())


def measure(model):
    """Held-out MSEs (model, per-sequence mean, linear interpolation) and extrapolation MSEs
    (model, mean of the first half's observations) on fresh sequences."""
    test = irregular_sines(128, seed=999, **DATA)
    held = 1 - test.mask
    model.eval()
    with no_grad():
        path = model.interpolate(test.values, test.times, test.mask, test.times).numpy()
        ahead = model.extrapolate(test.values[:, :HALF], test.times[:HALF], test.mask[:, :HALF],
                                  test.times[HALF:]).numpy()
    observed_mean = (test.values * test.mask).sum(1, keepdims=True) / test.mask.sum(1, keepdims=True)
    linear = np.stack([np.interp(test.times, test.times[m[:, 0] > 0], v[m[:, 0] > 0, 0])
                       for v, m in zip(test.values, test.mask)])[..., None]
    first = test.mask[:, :HALF]
    first_mean = (test.values[:, :HALF] * first).sum(1, keepdims=True) / np.maximum(first.sum(1, keepdims=True), 1)
    later = np.ones_like(test.clean[:, HALF:])
    return (_mse(path, test.clean, held), _mse(observed_mean, test.clean, held), _mse(linear, test.clean, held),
            _mse(ahead, test.clean[:, HALF:], later), _mse(first_mean, test.clean[:, HALF:], later))


def test_latent_ode_interpolates_and_extrapolates_irregular_sines():
    interp, mean, linear, extrap, extrap_mean = measure(train_latent_ode(seed=0))
    # measured: interp 0.14-0.18 (seeds 0-2, Haswell and SkylakeX kernels), mean 0.60, linear 0.36;
    # extrapolation 0.28-0.30 against the first half's mean 0.62
    assert interp < 0.6 * linear and interp < 0.35 * mean
    assert extrap < 0.7 * extrap_mean
