"""lamina.keras string identifiers resolve as Keras's, with Keras's defaults; unknown ones are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import randn

import lamina
from lamina import keras, optim
from lamina.keras import layers, losses, metrics, optimizers

# name -> (lamina class, Keras's default learning rate)
OPTIMIZERS = {
    "sgd": (optim.SGD, 0.01), "rmsprop": (optim.RMSprop, 0.001), "adam": (optim.Adam, 0.001),
    "adamw": (optim.AdamW, 0.001), "adagrad": (optim.Adagrad, 0.001), "adadelta": (optim.Adadelta, 0.001),
    "adamax": (optim.Adamax, 0.001), "nadam": (optim.NAdam, 0.001),
}


def _model():
    return keras.Sequential([layers.Dense(3, input_shape=(4,))])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_names_build_lamina_optimizers_with_keras_defaults(name):
    model = _model()
    model.compile(optimizer=name.upper() if name == "adam" else name, loss="mse")
    cls, rate = OPTIMIZERS[name]
    assert type(model.optimizer) is cls
    assert model.optimizer.defaults["lr"] == rate


def test_keras_hyperparameters_map_onto_lamina_names():
    model = _model()
    built = optimizers.RMSprop().build(model)
    assert (built.defaults["alpha"], built.defaults["eps"]) == (0.9, 1e-7)
    built = optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, amsgrad=True).build(model)
    assert built.defaults["betas"] == (0.8, 0.99) and built.defaults["amsgrad"] and built.defaults["lr"] == 0.01
    assert optimizers.AdamW().build(model).defaults["weight_decay"] == 0.004
    assert optimizers.Adagrad().build(model).defaults["initial_accumulator_value"] == 0.1
    assert optimizers.SGD(momentum=0.9, nesterov=True).build(model).defaults["nesterov"]


def test_one_sgd_step_matches_torch():
    x, y = randn(8, 4), randn(8, 3, seed=1)
    model = _model()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="mse")
    model.predict(x[:1], verbose=0)
    weight, bias = (np.array(v) for v in model.get_weights())
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)

    reference = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(weight.T, dtype=torch.float64))
        reference.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    step = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        step.zero_grad()
        torch.nn.functional.mse_loss(reference(torch.tensor(x, dtype=torch.float64)), torch.tensor(y)).backward()
        step.step()
    np.testing.assert_allclose(model.get_weights()[0], reference.weight.detach().numpy().T, rtol=1e-5, atol=1e-6)


LOSS_CASES = {
    "mse": lambda p, t: torch.nn.functional.mse_loss(p, t),
    "mean_squared_error": lambda p, t: torch.nn.functional.mse_loss(p, t),
    "mae": lambda p, t: torch.nn.functional.l1_loss(p, t),
    "huber": lambda p, t: torch.nn.functional.huber_loss(p, t, delta=1.0),
    "binary_crossentropy": lambda p, t: torch.nn.functional.binary_cross_entropy(p, t),
    "categorical_crossentropy": lambda p, t: -(t * torch.log(p)).sum(-1).mean(),
    "kl_divergence": lambda p, t: (t * torch.log(t / p)).sum(-1).mean(),
}


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_loss_names_compute_keras_losses(name):
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(6, 4)), rng.random((6, 4))
    if name in ("categorical_crossentropy", "kl_divergence"):
        predictions = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        targets = targets / targets.sum(-1, keepdims=True)
    elif name == "binary_crossentropy":
        predictions, targets = 1 / (1 + np.exp(-logits)), (targets > 0.5).astype(np.float64)
    else:
        predictions = logits
    loss = losses.get(name)
    ours = loss(targets, lamina.tensor(predictions, dtype=np.float64))          # Keras's order: (y_true, y_pred)
    expected = LOSS_CASES[name](torch.tensor(predictions), torch.tensor(targets))
    np.testing.assert_allclose(float(ours.item()), float(expected), rtol=1e-6)


def test_sparse_cross_entropy_from_logits_and_labels_of_shape_n_by_one():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(5, 4)), rng.integers(0, 4, (5, 1))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels[:, 0]))
    np.testing.assert_allclose(float(loss(labels, lamina.tensor(logits, dtype=np.float64)).item()),
                               float(expected), rtol=1e-6)
    weights = np.array([1.0, 0.0, 2.0, 1.0, 1.0])
    per_sample = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels[:, 0]),
                                                   reduction="none").numpy()
    np.testing.assert_allclose(float(loss(labels, lamina.tensor(logits, dtype=np.float64), weights).item()),
                               (per_sample * weights).sum() / 5, rtol=1e-6)


@pytest.mark.parametrize(("loss", "expected"), [
    ("sparse_categorical_crossentropy", metrics.SparseCategoricalAccuracy),
    ("categorical_crossentropy", metrics.CategoricalAccuracy),
    ("binary_crossentropy", metrics.BinaryAccuracy),
])
def test_accuracy_is_chosen_from_the_loss(loss, expected):
    chosen = metrics.get("accuracy", losses.get(loss))
    assert type(chosen) is expected and chosen.name == "accuracy"
    assert metrics.get("acc", losses.get(loss)).name == "acc"


def test_metric_values():
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    labels = np.array([1, 0, 1, 2])
    assert metrics.sparse_categorical_accuracy(scores, labels) == 0.5
    assert metrics.categorical_accuracy(scores, np.eye(3)[labels]) == 0.5
    probabilities, truth = np.array([0.9, 0.4, 0.6, 0.2]), np.array([1, 1, 0, 0])
    assert metrics.binary_accuracy(probabilities, truth) == 0.5
    precision, recall = metrics.get("precision"), metrics.get("recall")
    precision.update(probabilities, truth)
    recall.update(probabilities, truth)
    assert (precision.result(), recall.result()) == (0.5, 0.5)
    auc = metrics.get("AUC")
    auc.update(probabilities, truth)
    assert auc.name == "auc" and auc.result() == 0.75
    mae, mse = metrics.get("mae"), metrics.get("mse")
    mae.update(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]))
    mse.update(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]))
    assert (mae.name, mae.result(), mse.name, mse.result()) == ("mae", 1.5, "mse", 2.5)


def test_fit_logs_metrics_under_the_given_names():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")[:, None]
    model = keras.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", "AUC", "precision", "recall"])
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y))
    assert list(history.history) == ["loss", "accuracy", "auc", "precision", "recall", "val_loss", "val_accuracy",
                                     "val_auc", "val_precision", "val_recall"]
    values = model.evaluate(x, y, verbose=0)
    scores = model.predict(x, verbose=0)
    assert np.isclose(values[1], ((scores > 0.5) == (y > 0.5)).mean())


@pytest.mark.parametrize(("getter", "name", "listed"), [
    (optimizers.get, "adamm", "'adam'"),
    (losses.get, "sparse_crossentropy", "'sparse_categorical_crossentropy'"),
    (metrics.get, "accuracyy", "'accuracy'"),
])
def test_unknown_identifiers_are_named_with_the_valid_ones(getter, name, listed):
    with pytest.raises(ValueError, match=f"unknown [a-z]+ '{name}'") as error:
        getter(name)
    assert listed in str(error.value)


def test_compile_refuses_unknown_identifiers_and_arguments():
    model = _model()
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        model.compile(optimizer="adamm", loss="mse")
    with pytest.raises(TypeError, match="unexpected argument"):
        model.compile(optimizer="adam", loss="mse", loss_scaling=2)
    model.compile(optimizer="adam", loss="mse", jit_compile=False)


def test_to_categorical():
    np.testing.assert_array_equal(keras.utils.to_categorical([0, 2, 1]), np.eye(3)[[0, 2, 1]])
    assert keras.utils.to_categorical(np.array([[1], [0]]), 4).shape == (2, 4)
    with pytest.raises(ValueError, match="label 5"):
        keras.utils.to_categorical([5], 3)


def test_accuracy_for_other_losses_follows_the_shapes():
    accuracy = metrics.get("accuracy", losses.get("mse"))
    assert accuracy.update(np.array([[0.9], [0.2], [0.7]]), np.array([[1.0], [1.0], [0.0]])) == pytest.approx(1 / 3)
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert accuracy.update(scores, np.array([[0.0, 1.0], [0.0, 1.0]])) == 0.5
    assert accuracy.update(scores, np.array([1, 0])) == 1.0
