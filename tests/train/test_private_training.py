"""DP-SGD through the Trainer: make_private and PrivacyMonitor on scikit-learn's digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

import lamina
from lamina import nn
from lamina.optim import SGD
from lamina.optim.privacy import compute_epsilon
from lamina.train import PrivacyMonitor, Trainer, make_private


def test_dp_sgd_mlp_learns_digits_and_reports_a_finite_epsilon():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    train, test = slice(0, 1500), slice(1500, None)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10), nn.Softmax())
    model.build((None, 64))
    optimizer, loader = make_private(model, SGD(model, lr=0.5, momentum=0.5), (x[train], y[train]),
                                     noise_multiplier=1.0, max_grad_norm=1.0, batch_size=60, seed=0)
    trainer = Trainer(model, loss="categorical_cross_entropy", optimizer=optimizer,
                      callbacks=[PrivacyMonitor(delta=1e-5)], verbose=0)
    trainer.fit(loader, epochs=4)
    optimizer.detach()
    accuracy = trainer.evaluate((x[test], y[test]))["accuracy"]
    # Seeds 0-2 reach 0.89-0.92 (an untrained model: 0.1); 0.85 leaves room for the noise of
    # sigma = 1 on batches of ~60 while ruling out a broken clip, noise scale or step.
    assert accuracy >= 0.85
    epsilons = trainer.history["epsilon"]
    assert len(epsilons) == 4 and all(math.isfinite(e) for e in epsilons)
    assert epsilons == sorted(epsilons)
    assert epsilons[-1] == pytest.approx(compute_epsilon(1.0, 60 / 1500, 4 * 25, 1e-5))


def test_empty_poisson_batches_still_take_a_noisy_step():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(2))
    model.build((None, 3))
    optimizer, loader = make_private(model, SGD(model, lr=1.0), (np.ones((4, 3)), np.array([0, 1, 0, 1])),
                                     noise_multiplier=1.0, max_grad_norm=1.0, batch_size=1, seed=0)
    loader.sampler.sample_rate = 1e-9                       # every batch empty
    before = model.parameters()[0].data.copy()
    trainer = Trainer(model, optimizer=optimizer, verbose=0)
    trainer.fit(loader, epochs=1)
    optimizer.detach()
    assert trainer.steps == 4
    assert not np.allclose(model.parameters()[0].data, before)   # moved by the noise alone
