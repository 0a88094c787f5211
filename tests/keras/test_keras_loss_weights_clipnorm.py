"""lamina.keras: compile(loss_weights=...) on a model of several outputs, and the optimizers'
per-weight clipnorm, each checked against one SGD step computed by hand in torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import randn

import lamina
from lamina import keras
from lamina.keras import layers, optimizers


def _two_output_model():
    inputs = keras.Input((3,))
    hidden = layers.Dense(4, activation="tanh", name="hidden")(inputs)
    scores = layers.Dense(2, name="scores")(hidden)
    classes = layers.Dense(3, activation="softmax", name="classes")(hidden)
    return keras.Model(inputs, [scores, classes])


def _torch_weights(model) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in model.state_dict().items()}


def _torch_outputs(w, x):
    hidden = torch.tanh(x @ w["hidden.weight"] + w["hidden.bias"])
    scores = hidden @ w["scores.weight"] + w["scores.bias"]
    classes = torch.softmax(hidden @ w["classes.weight"] + w["classes.bias"], dim=1)
    return scores, classes


@pytest.mark.parametrize("weights", [[0.3, 2.0], {"classes": 0.5}])
def test_loss_weights_give_the_weighted_sum_of_the_output_losses(weights, float64):
    model = _two_output_model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=["mse", "sparse_categorical_crossentropy"],
                  loss_weights=weights)
    x, targets, labels = randn(6, 3), randn(6, 2, seed=1), np.array([0, 2, 1, 1, 0, 2])
    w = _torch_weights(model)
    scores, classes = _torch_outputs(w, torch.tensor(x))
    mse = ((scores - torch.tensor(targets)) ** 2).mean()
    cross_entropy = -torch.log(classes[torch.arange(6), torch.tensor(labels)]).mean()
    w_scores, w_classes = (weights if isinstance(weights, list) else [1.0, weights["classes"]])
    total = w_scores * mse + w_classes * cross_entropy
    total.backward()
    logs = model.train_on_batch(x, [targets, labels], return_dict=True)
    assert logs["loss"] == pytest.approx(total.item(), rel=1e-10)
    assert logs["scores_loss"] == pytest.approx(mse.item(), rel=1e-10)
    assert logs["classes_loss"] == pytest.approx(cross_entropy.item(), rel=1e-10)
    for name, value in model.state_dict().items():
        expected = (w[name] - 0.1 * w[name].grad).detach().numpy()
        np.testing.assert_allclose(value, expected, rtol=1e-10, err_msg=name)


def test_several_outputs_fit_evaluate_and_predict(float64):
    model = _two_output_model()
    model.compile(optimizer="adam", loss={"scores": "mse", "classes": "sparse_categorical_crossentropy"})
    x, targets, labels = randn(16, 3), randn(16, 2, seed=1), np.arange(16) % 3
    history = model.fit(x, {"scores": targets, "classes": labels}, epochs=2, batch_size=8, verbose=0)
    assert set(history.history) == {"loss", "scores_loss", "classes_loss"}
    loss, scores_loss, classes_loss = model.evaluate(x, [targets, labels], verbose=0)
    assert loss == pytest.approx(scores_loss + classes_loss, rel=1e-10)
    scores, classes = model.predict(x, verbose=0)
    assert scores.shape == (16, 2) and classes.shape == (16, 3)
    with pytest.raises(ValueError, match="loss_weights holds 3 values"):
        model.compile(optimizer="sgd", loss="mse", loss_weights=[1.0, 2.0, 3.0])


def test_clipnorm_clips_each_gradient_to_its_own_norm(float64):
    lamina.manual_seed(0)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, activation="tanh"), layers.Dense(2)])
    clipnorm = 1.0
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.2, clipnorm=clipnorm), loss="mse")
    x, y = randn(8, 4), randn(8, 2, seed=2) * 3
    w = _torch_weights(model)
    names = list(w)
    hidden = torch.tanh(torch.tensor(x) @ w[names[0]] + w[names[1]])
    loss = ((hidden @ w[names[2]] + w[names[3]] - torch.tensor(y)) ** 2).mean()
    loss.backward()
    norms = [w[name].grad.norm().item() for name in names]
    assert min(norms) < clipnorm < max(norms)          # some gradients are clipped, some are not
    for name in names:
        torch.nn.utils.clip_grad_norm_([w[name]], clipnorm)
    model.train_on_batch(x, y)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, (w[name] - 0.2 * w[name].grad).detach().numpy(), rtol=1e-10,
                                   err_msg=name)
    with pytest.raises(ValueError, match="clipnorm must be a positive number"):
        keras.optimizers.Adam(clipnorm=0.0)


def test_the_output_losses_weigh_the_samples_as_the_total_does():
    lamina.manual_seed(4)
    model = _two_output_model()
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-12), loss=["mse", "sparse_categorical_crossentropy"],
                  loss_weights=[0.5, 2.0])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y_scores, y_classes = rng.standard_normal((10, 2)).astype(np.float32), rng.integers(0, 3, 10)
    weights = rng.uniform(0.0, 2.0, 10)
    scores, probabilities = (np.asarray(a, dtype=np.float64) for a in model.predict(x, verbose=0))
    mse = ((scores - y_scores) ** 2).mean(axis=1)
    cross_entropy = -np.log(probabilities[np.arange(10), y_classes])
    expected = {"scores_loss": (weights @ mse) / 10, "classes_loss": (weights @ cross_entropy) / 10}
    logs = model.evaluate(x, [y_scores, y_classes], batch_size=4, sample_weight=weights, verbose=0,
                          return_dict=True)
    for name in expected:                  # batches of 4, 4 and 2: sum w L / batch size, averaged by size
        assert logs[name] == pytest.approx(expected[name], rel=1e-5), name
    assert logs["loss"] == pytest.approx(0.5 * logs["scores_loss"] + 2.0 * logs["classes_loss"], rel=1e-5)
    history = model.fit(x, [y_scores, y_classes], batch_size=4, epochs=1, sample_weight=weights, shuffle=False,
                        verbose=0)
    assert history.history["classes_loss"][0] == pytest.approx(expected["classes_loss"], rel=1e-5)
    unweighted = model.evaluate(x, [y_scores, y_classes], batch_size=4, verbose=0, return_dict=True)
    assert unweighted["classes_loss"] == pytest.approx(cross_entropy.mean(), rel=1e-5)
    one = model.train_on_batch(x, [y_scores, y_classes], sample_weight=weights, return_dict=True)
    assert one["scores_loss"] == pytest.approx(expected["scores_loss"], rel=1e-5)
    assert one["loss"] == pytest.approx(0.5 * one["scores_loss"] + 2.0 * one["classes_loss"], rel=1e-5)
