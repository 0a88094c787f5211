"""MC dropout and deep ensembles: with rate 0 the samples are the model's output; the sampled
statistics against a NumPy forward pass with the same seeded masks; batch norm stays in
evaluation mode and modes are restored; ensembles train distinct members and summarise them."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train.uncertainty import DeepEnsemble, mc_dropout_predict, predictive_summary


def mlp(rate, batch_norm=False):
    layers = [nn.Dense(6, activation="relu")]
    if batch_norm:
        layers.append(nn.BatchNorm())
    layers += [nn.Dropout(rate), nn.Dense(4)]
    return nn.Sequential(*layers)


def inputs(n=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_rate_zero_gives_no_variance_and_the_model_output():
    lamina.manual_seed(0)
    model, x = mlp(0.0, batch_norm=True), inputs()
    model(x)
    model.layers[1].running_mean = np.full(6, 0.3, dtype=np.float32)      # evaluation statistics differ from
    model.layers[1].running_var = np.full(6, 2.0, dtype=np.float32)       # the batch's
    model.train()
    summary = mc_dropout_predict(model, x, samples=4, outputs="values")
    with lamina.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(summary.mean, expected, rtol=1e-6)
    np.testing.assert_array_equal(summary.variance, 0.0)
    logits = mc_dropout_predict(model, x, samples=3)
    np.testing.assert_allclose(logits.mean, softmax(expected.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(logits.mutual_information, 0.0, atol=1e-12)


def test_statistics_equal_a_numpy_reference_with_the_same_masks():
    lamina.manual_seed(1)
    model, x, rate, samples = mlp(0.4), inputs(7, seed=1), 0.4, 6
    model(x)
    model.train()
    lamina.manual_seed(2)
    summary = mc_dropout_predict(model, x, samples=samples)
    assert all(module.training for module in model.modules())             # modes restored
    w1, b1 = (model.layers[0].weight.data.astype(np.float64), model.layers[0].bias.data.astype(np.float64))
    w2, b2 = (model.layers[2].weight.data.astype(np.float64), model.layers[2].bias.data.astype(np.float64))
    masks = np.random.default_rng(2)                                         # lamina.manual_seed(2)'s generator
    probs = []
    for _ in range(samples):
        keep = masks.random((7, 6), dtype=np.float32) >= rate
        hidden = np.maximum(x.astype(np.float64) @ w1 + b1, 0) * keep / (1 - rate)
        probs.append(softmax(hidden @ w2 + b2))
    probs = np.stack(probs)
    mean = probs.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum(axis=1)
    expected_entropy = -(probs * np.log(probs)).sum(axis=2).mean(axis=0)
    np.testing.assert_allclose(summary.samples, probs, rtol=1e-5)
    np.testing.assert_allclose(summary.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(summary.variance, ((probs - mean) ** 2).mean(axis=0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(summary.entropy, entropy, rtol=1e-5)
    np.testing.assert_allclose(summary.mutual_information, entropy - expected_entropy, rtol=1e-4, atol=1e-9)
    assert np.all(summary.mutual_information > 0)


def test_predictive_summary_disagreement_and_errors():
    members = np.array([[[0.7, 0.3]], [[0.6, 0.4]], [[0.4, 0.6]]])            # mean (0.57, 0.43): class 0
    summary = predictive_summary(members)
    assert summary.disagreement[0] == pytest.approx(1 / 3)
    mean = 1.7 / 3
    assert summary.entropy[0] == pytest.approx(-mean * np.log(mean) - (1 - mean) * np.log(1 - mean))
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        mc_dropout_predict(mlp(0.1), inputs(), samples=0)
    with pytest.raises(ValueError, match="outputs must be one of"):
        predictive_summary(members, outputs="scores")


def test_deep_ensemble_trains_distinct_members_and_averages_them():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    ensemble = DeepEnsemble(lambda: nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(3)), n=3,
                            loss=lambda out, labels: lamina.functional.categorical_cross_entropy(
                                out, labels, from_logits=True),
                            make_optimizer=lambda m: optim.Adam(m, lr=1e-2), seed=5)
    ensemble.fit((x, y), epochs=3, batch_size=20)
    assert len(ensemble.members) == 3 and len(ensemble.histories) == 3
    first, second = (m.layers[0].weight.data for m in ensemble.members[:2])
    assert not np.allclose(first, second)
    summary = ensemble.predict(x[:10])
    with lamina.no_grad():
        outputs = np.stack([m(x[:10]).numpy() for m in ensemble.members]).astype(np.float64)
    np.testing.assert_allclose(summary.mean, softmax(outputs).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(summary.disagreement, np.mean(
        softmax(outputs).argmax(axis=2) != summary.mean.argmax(axis=1), axis=0))
    with pytest.raises(RuntimeError, match="call fit"):
        DeepEnsemble(lambda: mlp(0.0), n=2).predict(x)
