"""SWAG: collected from SGD iterates during fit, its mean is SWA's average; its second moment
and deviation matrix equal a NumPy computation on the recorded iterates; a sample is the
paper's formula with the same draws, and many samples have its covariance; batch norm is
recomputed for sampled weights."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import LambdaCallback, Trainer, WeightAveraging
from lamina.train.swag import SWAG, CollectSWAG


def flat(model):
    return np.concatenate([np.asarray(p.data, dtype=np.float64).ravel() for p in model.parameters()])


def regression_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3 * rng.standard_normal((n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def collected():
    """A SWAG of rank 4 collected after every SGD step, SWA's average and the iterates."""
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(4, activation="tanh"), nn.Dense(1))
    model(np.zeros((1, 3), np.float32))
    swag, averaging, iterates = SWAG(model, max_rank=4), WeightAveraging(every="iteration", swap_at_end=False), []
    trainer = Trainer(model, "mean_squared_error", optim.SGD(model, lr=0.05), metrics=(), verbose=0,
                      callbacks=[CollectSWAG(swag, every="iteration"), averaging,
                                 LambdaCallback(on_batch_end=lambda i, logs: iterates.append(flat(model)))])
    trainer.fit(regression_data(), epochs=3, batch_size=8, seed=0)
    return swag, averaging, np.stack(iterates)


def test_the_mean_is_swa_average_of_the_iterates(collected):
    swag, averaging, iterates = collected
    assert swag.n_collected == len(iterates) == 18
    np.testing.assert_allclose(swag.mean, flat(averaging.averaged.module), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(flat(swag.averaged_model()), flat(averaging.averaged.module), rtol=1e-5, atol=1e-7)


def test_second_moment_and_deviations_equal_a_numpy_reference(collected):
    swag, _, iterates = collected
    mean = iterates.mean(axis=0)
    np.testing.assert_allclose(swag.mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(swag.variance, np.maximum((iterates ** 2).mean(axis=0) - mean ** 2, 1e-30),
                               rtol=1e-6, atol=1e-12)
    running_means = np.cumsum(iterates, axis=0) / np.arange(1, 19)[:, None]
    np.testing.assert_allclose(swag.deviations, (iterates - running_means)[-4:].T, rtol=1e-8, atol=1e-12)


def test_a_sample_follows_the_paper_formula_and_has_its_covariance(collected):
    swag, _, _ = collected
    draws = np.random.default_rng(3)
    z_diag, z_rank = draws.standard_normal(swag.mean.size), draws.standard_normal(4)
    expected = swag.mean + np.sqrt(0.5) * (np.sqrt(swag.variance) * z_diag + swag.deviations @ z_rank / np.sqrt(3))
    np.testing.assert_allclose(swag.sample_vector(rng=np.random.default_rng(3)), expected, rtol=1e-12)
    sampled = swag.sample(rng=np.random.default_rng(3))
    np.testing.assert_allclose(flat(sampled), expected, rtol=1e-6)
    rng = np.random.default_rng(4)
    vectors = np.stack([swag.sample_vector(scale=1.0, rng=rng) for _ in range(20000)])
    covariance = np.diag(swag.variance) + swag.deviations @ swag.deviations.T / 3
    scale = np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
    np.testing.assert_allclose(np.cov(vectors.T) / scale, covariance / scale, atol=0.04)


def test_batch_norm_statistics_are_recomputed_for_a_sample():
    lamina.manual_seed(1)
    model = nn.Sequential(nn.Dense(3), nn.BatchNorm(), nn.Dense(1))
    x, y = regression_data(40, seed=1)
    swag = SWAG(model, max_rank=2)
    trainer = Trainer(model, "mean_squared_error", optim.SGD(model, lr=0.05), metrics=(), verbose=0,
                      callbacks=[CollectSWAG(swag)])
    trainer.fit((x, y), epochs=3, batch_size=10, seed=0)
    sampled = swag.sample(bn_data=x)
    features = x.astype(np.float64) @ sampled.layers[0].weight.data + sampled.layers[0].bias.data
    np.testing.assert_allclose(sampled.layers[1].running_mean, features.mean(axis=0), rtol=1e-4, atol=1e-6)
    summary = swag.predict(x[:5], samples=3, bn_data=x, outputs="values")
    assert summary.samples.shape == (3, 5, 1) and np.all(summary.variance > 0)


def test_clear_errors():
    model = nn.Sequential(nn.Dense(2))
    with pytest.raises(ValueError, match="max_rank must be an integer >= 0"):
        SWAG(model, max_rank=-1)
    with pytest.raises(RuntimeError, match="no weights collected"):
        SWAG(model).sample()
