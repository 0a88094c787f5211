"""DANN: the lambda schedule, the two costs against their definitions, the reversed
gradient reaching the features, and adaptation from upright to rotated digits beating
training on the source alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.data import rotated_tasks
from lamina.data.datasets import load_digits
from lamina.optim import SGD
from lamina.train import DANN, dann_lambda, train_dann
from lamina.train.continual import evaluate_tasks


def make(seed=0):
    lamina.manual_seed(seed)
    model = DANN(nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(32, activation="relu")), nn.Dense(10),
                 nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(2)))
    probe = np.zeros((1, 64), dtype=np.float32)
    model(probe)
    model.domain_logits(probe)
    return model


def test_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    for p in (0.1, 0.5, 1.0):
        assert dann_lambda(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
    assert dann_lambda(1.0) > 0.999
    with pytest.raises(ValueError, match="progress"):
        dann_lambda(1.5)


def test_losses_and_the_reversed_feature_gradient():
    model = make()
    rng = np.random.default_rng(0)
    xs, xt = rng.random((5, 64)).astype(np.float32), rng.random((3, 64)).astype(np.float32)
    ys = rng.integers(0, 10, 5)
    model.reversal.lambda_ = 0.5
    class_loss, domain_loss = model.losses(xs, ys, xt)
    expected_class = F.categorical_cross_entropy(model(lamina.tensor(xs)), ys, from_logits=True).item()
    logits = np.concatenate([model.domain_logits(lamina.tensor(v)).numpy() for v in (xs, xt)])
    domains = np.array([0] * 5 + [1] * 3)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert class_loss.item() == pytest.approx(expected_class, rel=1e-5)
    assert domain_loss.item() == pytest.approx(-log_p[np.arange(8), domains].mean(), rel=1e-5)
    # the features get -lambda times the domain cost's gradient; the discriminator its own
    feature_weight = model.features.parameters()[0]
    disc_weight = model.discriminator.parameters()[0]
    reversed_grads = lamina.autograd.grad(domain_loss, [feature_weight, disc_weight])
    model.reversal.lambda_ = -1.0
    _, plain = model.losses(xs, ys, xt)
    true_grads = lamina.autograd.grad(plain, [feature_weight, disc_weight])
    np.testing.assert_allclose(reversed_grads[0], -0.5 * true_grads[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(reversed_grads[1], true_grads[1], rtol=1e-5, atol=1e-7)


def test_dann_beats_source_only_on_rotated_digits():
    x8, y = load_digits(8)
    order = np.random.default_rng(0).permutation(len(y))
    a, b = order[:900], order[900:]
    xs = (x8[a].reshape(len(a), -1) / 255.0).astype(np.float32)
    target = rotated_tasks(x8[b], y[b], [45])[0][0]
    xt = (target.reshape(len(b), -1) / 255.0).astype(np.float32)
    accuracies = {}
    for adapt in (False, True):
        model = make()
        history = train_dann(model, (xs, y[a]), xt, SGD(model, lr=0.01, momentum=0.9), epochs=30, batch_size=32,
                             adapt=adapt)
        accuracies[adapt] = evaluate_tasks(model, [(xt, y[b]), (xs, y[a])])
    print(f"rotated digits: source-only target accuracy {accuracies[False][0]:.3f}, "
          f"DANN {accuracies[True][0]:.3f} (source {accuracies[False][1]:.3f}, {accuracies[True][1]:.3f}); "
          f"final domain loss {history['domain_loss'][-1]:.3f}")
    assert accuracies[True][1] > 0.95                     # the source task is still learnt
    assert accuracies[True][0] > accuracies[False][0] + 0.05
    assert history["lambda"][-1] > 0.99
