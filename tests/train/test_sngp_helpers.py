"""lamina.train's SNGP helpers: resetting the precision matrix each epoch, and mean-field predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lamina
from helpers import randn
from lamina import functional as F
from lamina import nn
from lamina.autograd import no_grad
from lamina.optim import Adam
from lamina.train import ResetCovariance, Trainer, sngp_predict


def _features(layer, x):
    w, b = np.asarray(layer.W, dtype=np.float64), np.asarray(layer.b, dtype=np.float64)
    return math.sqrt(2.0 / layer.num_inducing) * np.cos(np.asarray(x, dtype=np.float64) @ w / layer.scale + b)


@pytest.mark.parametrize("reset", [True, False])
def test_reset_covariance_makes_the_precision_sum_the_last_epoch(reset):
    lamina.manual_seed(0)
    x, y = randn(12, 3, seed=1).astype(np.float32), np.arange(12) % 2
    layer = nn.RandomFeatureGaussianProcess(2, num_inducing=10, ridge_penalty=0.5)
    with no_grad():
        layer(x[:1])
    layer.reset_covariance()
    trainer = Trainer(layer, loss=lambda out, target: F.cross_entropy(out, target), optimizer=Adam(layer, lr=0.01),
                      metrics=(), callbacks=[ResetCovariance()] if reset else [], verbose=0)
    trainer.fit((x, y), epochs=3, batch_size=5)
    phi = _features(layer, x)
    epochs_summed = 1 if reset else 3
    np.testing.assert_allclose(layer.precision, 0.5 * np.eye(10) + epochs_summed * phi.T @ phi, rtol=1e-4, atol=1e-5)


def test_sngp_predict_gives_mean_field_probabilities():
    lamina.manual_seed(2)
    model = nn.SNGPResMLP(3, hidden=8, num_layers=2, gp={"num_inducing": 16})
    x = randn(6, 2, seed=3).astype(np.float32)
    with no_grad():
        model(x)
    model.train()
    prediction = sngp_predict(model, x, mean_field_factor=0.5)
    assert model.training                                  # the mode is restored
    model.eval()
    with no_grad():
        logits, variance = model(x, return_variance=True)
    adjusted = logits.numpy().astype(np.float64) / np.sqrt(1 + 0.5 * variance.numpy().astype(np.float64))[:, None]
    probs = np.exp(adjusted) / np.exp(adjusted).sum(-1, keepdims=True)
    np.testing.assert_allclose(prediction.probs, probs, rtol=1e-5)
    np.testing.assert_allclose(prediction.confidence, probs.max(-1), rtol=1e-5)
    np.testing.assert_allclose(prediction.entropy, -(probs * np.log(probs)).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(prediction.variance, variance.numpy())
    with pytest.raises(TypeError, match="sngp_predict: .* has no RandomFeatureGaussianProcess"):
        sngp_predict(nn.Dense(2), x)
