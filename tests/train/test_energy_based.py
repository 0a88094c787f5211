"""SGLD, the replay buffer, contrastive divergence on 2-D rings and JEM on the digits."""


import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import nn
from lamina.autograd import Tensor
from lamina.data.datasets.digits import load_digits
from lamina.errors import ShapeError
from lamina.train import (
    EBMTrainer,
    JEMTrainer,
    PersistentSampler,
    ReplayBuffer,
    expected_calibration_error,
    jem_energy,
    sgld_sample,
)


def quartic_energy(x):
    return (0.25 * x ** 4 - 0.5 * x * x).sum(axis=1)


def quartic_gradient(x):
    return x ** 3 - x


@pytest.mark.parametrize("noise, clip, bounds", [(None, None, None), (0.05, 0.5, (-1.2, 1.2))])
def test_sgld_update_follows_the_formula_step_by_step(noise, clip, bounds):
    x0 = np.random.default_rng(0).normal(size=(6, 3)) * 1.5
    step = 0.1
    got = sgld_sample(quartic_energy, Tensor(x0, dtype=np.float64), steps=4, step_size=step, noise=noise,
                      clip=clip, bounds=bounds, seed=3).numpy()
    draws = np.random.default_rng(3)
    x = x0.copy()
    for _ in range(4):
        g = quartic_gradient(x)
        if clip is not None:
            g = np.clip(g, -clip, clip)
        x = x - step / 2 * g + (np.sqrt(step) if noise is None else noise) * draws.standard_normal(x.shape)
        if bounds is not None:
            x = np.clip(x, *bounds)
    np.testing.assert_allclose(got, x, rtol=1e-12, atol=1e-12)


def test_long_run_sgld_samples_a_gaussian_with_its_step_size_bias():
    # E = sum_k p_k (x_k - mu_k)^2 / 2. Exact Langevin with step eta is an AR(1) chain whose stationary
    # variance is 1 / (p (1 - eta p / 4)): 1/p up to a relative bias eta p / 4 (5% here for p = 4).
    mu, precision, step = np.array([1.0, -0.5]), np.array([1.0, 4.0]), 0.05
    energy = lambda x: 0.5 * ((x - Tensor(mu, dtype=np.float64)) ** 2 * Tensor(precision, dtype=np.float64)).sum(axis=1)  # noqa: E731
    x0 = np.random.default_rng(0).standard_normal((4000, 2))
    samples = sgld_sample(energy, x0, steps=400, step_size=step, noise=None, seed=1).numpy()
    biased = 1 / (precision * (1 - step * precision / 4))
    print(f"SGLD mean {samples.mean(0)} (true {mu}); variance {samples.var(0)} (1/p {1 / precision}, "
          f"with step bias {biased})")
    np.testing.assert_allclose(samples.mean(0), mu, atol=0.04)
    np.testing.assert_allclose(samples.var(0), biased, rtol=0.06)
    np.testing.assert_allclose(samples.var(0), 1 / precision, rtol=0.12)


def test_sgld_leaves_the_weights_gradients_alone():
    net = nn.Sequential(nn.Dense(4, "tanh"), nn.Dense(1))
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    sgld_sample(net, x, steps=2, step_size=0.1)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("kwargs, message", [
    ({"step_size": 0.0}, "step_size must be a positive"),
    ({"step_size": -1.0}, "step_size must be a positive"),
    ({"steps": 0}, "steps must be a positive int"),
    ({"noise": -0.1}, "noise must be"),
    ({"clip": 0.0}, "clip must be a positive"),
    ({"bounds": (1.0, -1.0)}, "bounds must be"),
])
def test_sgld_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sgld_sample(quartic_energy, np.zeros((2, 2)), **kwargs)


def test_sgld_rejects_an_energy_of_the_wrong_shape():
    with pytest.raises(ShapeError, match=r"one energy per sample.*\(2, 3\)"):
        sgld_sample(lambda x: x * 1.0, np.zeros((2, 3)), steps=1)


def test_replay_buffer_reinitialises_about_five_percent_and_stores_back():
    buffer = ReplayBuffer(100, (2,), bounds=(-1.0, 1.0), seed=0)
    buffer.samples[:] = 5.0                      # stored chains, far from the noise's [-1, 1]
    starts, indices = buffer.draw(4000)
    fresh = (np.abs(starts.numpy()) <= 1.0).all(axis=1).mean()
    assert 0.04 < fresh < 0.06
    buffer.store(np.full((3, 2), 7.0), np.array([1, 2, 3]))
    assert (buffer.samples[1:4] == 7.0).all() and (buffer.samples[0] == 5.0).all()
    with pytest.raises(ShapeError, match="expected samples of shape"):
        buffer.store(np.zeros((3, 5)), np.array([1, 2, 3]))


def rings(n, rng):
    radius = rng.choice([0.5, 1.0], n)
    angle = rng.uniform(0, 2 * np.pi, n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1) + 0.04 * rng.standard_normal((n, 2))
    return points.astype(np.float32)


def mmd(a, b, bandwidth=0.3):
    def kernel(u, v):
        return np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / (2 * bandwidth ** 2))
    return kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean()


def test_contrastive_divergence_learns_two_rings():
    rng = np.random.default_rng(0)
    x = rings(256, rng)
    lamina.backend.manual_seed(0)
    energy = nn.Sequential(nn.Dense(64, "silu"), nn.Dense(64, "silu"), nn.Dense(1))
    settings = {"steps": 20, "step_size": 0.01, "noise": 0.05, "bounds": (-1.5, 1.5)}
    sampler = PersistentSampler(ReplayBuffer(500, (2,), bounds=(-1.5, 1.5), seed=0), **settings)
    trainer = EBMTrainer(energy, sampler, lr=3e-3, alpha=0.1)
    history = trainer.fit(x, epochs=30, batch_size=64, seed=0)
    start = rng.uniform(-1.5, 1.5, (256, 2)).astype(np.float32)
    fresh = sgld_sample(trainer.energy, start, **{**settings, "steps": 100}, seed=2).numpy()
    before, buffered, after = mmd(start, x), mmd(sampler.buffer.samples, x), mmd(fresh, x)
    print(f"CD on rings: MMD^2 to the data, noise {before:.4f}, buffer {buffered:.4f}, 100-step chains "
          f"{after:.4f}; energies data {history['energy_data'][-1]:.3f} samples {history['energy_samples'][-1]:.3f}")
    assert buffered < before / 5
    assert after < before / 3


def digits_split():
    x, y = load_digits(8)
    x = x.reshape(len(x), 64).astype(np.float32) / 127.5 - 1.0
    return x[:600], y[:600], x[1400:], y[1400:]


def test_jem_keeps_the_accuracy_of_a_plain_classifier():
    x_train, y_train, x_test, y_test = digits_split()
    noise = np.random.default_rng(0).uniform(-1, 1, (300, 64)).astype(np.float32)
    noise_mmd = mmd(noise, x_test, bandwidth=4.0)
    results = {}
    for weight in (0.0, 1.0):
        lamina.backend.manual_seed(0)
        classifier = nn.Sequential(nn.Dense(64, "silu"), nn.Dense(10))
        sampler = PersistentSampler(ReplayBuffer(600, (64,), seed=0), steps=10, step_size=2.0, noise=0.01,
                                    bounds=(-1.0, 1.0))
        trainer = JEMTrainer(classifier, sampler, lr=3e-3, generative_weight=weight)
        trainer.fit(x_train, y_train, epochs=20, batch_size=64, seed=0)
        probs = trainer.predict_proba(x_test)
        energy = jem_energy(classifier)
        results[weight] = {
            "accuracy": float((probs.argmax(1) == y_test).mean()),
            "ece": expected_calibration_error(probs, y_test),
            "energy_test": float(energy(Tensor(x_test)).numpy().mean()),
            "energy_noise": float(energy(Tensor(noise)).numpy().mean()),
            "mmd_buffer": float(mmd(sampler.buffer.samples, x_test, bandwidth=4.0)),
        }
    print(f"digits, plain classifier {results[0.0]}; JEM {results[1.0]}; noise MMD^2 {noise_mmd:.4f}")
    assert results[1.0]["accuracy"] > results[0.0]["accuracy"] - 0.1
    assert results[1.0]["mmd_buffer"] < noise_mmd / 5           # SGLD samples look like digits, not noise
    assert results[0.0]["mmd_buffer"] > noise_mmd / 2           # without the generative term they do not


def test_trainers_check_their_inputs():
    buffer = ReplayBuffer(10, (2,), seed=0)
    with pytest.raises(TypeError, match="sampler must be a PersistentSampler"):
        EBMTrainer(nn.Dense(1), buffer)
    with pytest.raises(ValueError, match="step_size must be a positive"):
        PersistentSampler(buffer, step_size=0.0)
    trainer = JEMTrainer(nn.Dense(3), PersistentSampler(buffer))
    with pytest.raises(ShapeError, match="labels must be 4 ints"):
        trainer.fit(np.zeros((4, 2)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="reinit_fraction"):
        ReplayBuffer(10, (2,), reinit_fraction=1.5)


def test_readme_energy_based_example_runs():
    run_readme_section("Energy-based models and score matching")
