"""DPOptimizer: per-sample clipping, Gaussian noise, the inner step; Poisson batches."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn
from lamina.data import ArrayDataset, DataLoader, PoissonSampler
from lamina.nn import per_sample_gradients
from lamina.optim import SGD, DPOptimizer


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    assert not lamina.nn.per_sample._ATTACHED, "a test left per-sample tracking attached"


def _model():
    model = nn.Sequential(nn.Dense(4, activation="tanh"), nn.Dense(3))
    model.build((None, 5))
    return model


def _loss(out, y):
    return F.categorical_cross_entropy(out, y, from_logits=True)


def test_noiseless_step_is_the_mean_of_the_clipped_per_sample_gradients():
    model = _model()
    x, y = randn(6, 5, scale=3.0), np.array([0, 1, 2, 0, 1, 2])
    per_sample = per_sample_gradients(model, _loss, x, y, reduction="mean")
    names = [name for name, _ in model.named_parameters()]
    norms = np.sqrt(sum((per_sample[n].reshape(6, -1) ** 2).sum(axis=1) for n in names))
    clip = float(np.median(norms))                                   # some samples clipped, some not
    factors = np.minimum(1.0, clip / (norms + 1e-6))
    expected = {n: np.tensordot(factors, per_sample[n], axes=(0, 0)) / 6 for n in names}
    before = {n: p.data.copy() for n, p in model.named_parameters()}

    opt = DPOptimizer(SGD(model, lr=0.1), noise_multiplier=0.0, max_grad_norm=clip)
    opt.zero_grad()
    _loss(model(x), y).backward()
    opt.step()
    opt.detach()
    assert (factors < 1).any() and (factors == 1).any()
    for n, p in model.named_parameters():
        assert_close(p.grad, expected[n], 1e-10, what=n)
        assert_close(p.data, before[n] - 0.1 * expected[n], 1e-10, what=n)


def test_noise_std_is_sigma_times_clip_over_the_expected_batch_size():
    model = _model()
    x, y = randn(4, 5), np.array([0, 1, 2, 0])
    sigma, clip, batch = 1.5, 0.7, 8
    opt = DPOptimizer(SGD(model, lr=0.0), noise_multiplier=sigma, max_grad_norm=clip, expected_batch_size=batch)
    noiseless = DPOptimizer(SGD(model, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip, expected_batch_size=batch)
    draws = []
    for optimizer in [noiseless] + [opt] * 200:
        optimizer.zero_grad()
        _loss(model(x), y).backward()
        optimizer.step()
        draws.append(np.concatenate([p.grad.ravel() for p in model.parameters()]))
    opt.detach()
    noiseless.detach()
    noise = np.array(draws[1:]) - draws[0]                          # 200 draws x 39 coordinates
    assert abs(noise.std() / (sigma * clip / batch) - 1) < 0.03
    assert abs(noise.mean()) < 3 * sigma * clip / batch / np.sqrt(noise.size)


def test_step_without_recorded_per_sample_gradients_is_refused():
    model = _model()
    opt = DPOptimizer(SGD(model, lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0)
    opt.detach()
    _loss(model(randn(3, 5)), np.array([0, 1, 2])).backward()
    with pytest.raises(RuntimeError, match="no per-sample gradients"):
        opt.step()


def test_epsilon_follows_the_accountant_and_needs_a_sample_rate():
    model = _model()
    opt = DPOptimizer(SGD(model, lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1)
    for _ in range(3):
        opt.zero_grad()
        _loss(model(randn(2, 5)), np.array([0, 1])).backward()
        opt.step()
    opt.detach()
    assert opt.accountant.steps == 3
    assert opt.epsilon(1e-5) == pytest.approx(lamina.optim.privacy.compute_epsilon(1.0, 0.1, 3, 1e-5))
    unknown = DPOptimizer(SGD(model, lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0)
    unknown.detach()
    with pytest.raises(ValueError, match="sample rate is unknown"):
        unknown.epsilon(1e-5)


def test_poisson_batches_include_each_sample_with_probability_q():
    n, q = 50, 0.2
    loader = DataLoader(ArrayDataset(np.arange(n, dtype=np.float64)[:, None], np.arange(n)),
                        sampler=PoissonSampler(q, steps=400), seed=3)
    assert len(loader) == 400
    counts = np.zeros(n)
    sizes = []
    for _, yb in loader:
        counts[yb] += 1
        sizes.append(len(yb))
        assert len(np.unique(yb)) == len(yb)                        # at most once per batch
    assert abs(np.mean(sizes) - q * n) < 4 * np.sqrt(n * q * (1 - q) / 400)
    assert abs(counts / 400 - q).max() < 5 * np.sqrt(q * (1 - q) / 400)
    assert len(DataLoader(ArrayDataset(np.zeros((10, 1))), sampler=PoissonSampler(0.3))) == 3
    with pytest.raises(ValueError, match="sample_rate"):
        PoissonSampler(0.0)


def test_a_dp_optimizer_leaves_other_models_alone_and_stops_when_dropped():
    import gc
    import weakref

    import lamina
    from lamina import nn as lnn
    from lamina.nn import per_sample

    lamina.manual_seed(0)
    private = lnn.Sequential(lnn.Dense(3))
    private.build((None, 4))
    dp = DPOptimizer(SGD(private, lr=0.1), noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=2)
    other = lnn.Sequential(lnn.Dense(3), lnn.BatchNorm())       # a model the optimizer does not train
    other.build((None, 4))
    out = other(np.ones((2, 4), dtype=np.float32))               # batch norm in training mode: not refused
    out.sum().backward()
    assert dp.tracker.attached and other[0].weight.grad is not None
    tracker = weakref.ref(dp.tracker)
    del dp
    gc.collect()
    assert tracker() is None and not per_sample._live_trackers()
