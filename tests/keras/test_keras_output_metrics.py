"""lamina.keras: compile(metrics=...) on a model of several outputs, with Keras 3's names
"<output>_<metric>", checked against NumPy on the model's predictions."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import randn

import lamina
from lamina import keras
from lamina.keras import layers
from lamina.train import R2Score


def _model():
    lamina.manual_seed(1)
    inputs = keras.Input((3,))
    hidden = layers.Dense(6, activation="tanh", name="hidden")(inputs)
    scores = layers.Dense(2, name="scores")(hidden)
    classes = layers.Dense(3, activation="softmax", name="classes")(hidden)
    return keras.Model(inputs, [scores, classes])


def _data(n: int = 24, seed: int = 0):
    x = randn(n, 3, seed=seed)
    targets = np.stack([x[:, 0] - x[:, 1], x[:, 2]], axis=1)
    labels = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, targets, labels


def _numpy_metrics(model, x, targets, labels) -> dict:
    scores, probabilities = model.predict(x, verbose=0)
    return {"scores_mae": np.abs(scores - targets).mean(), "scores_mse": ((scores - targets) ** 2).mean(),
            "classes_accuracy": (probabilities.argmax(axis=1) == labels).mean(),
            "classes_loss": -np.log(probabilities[np.arange(len(labels)), labels]).mean()}


@pytest.mark.parametrize("metrics,names", [
    ({"scores": "mae", "classes": ["accuracy"]}, ["scores_mae", "classes_accuracy"]),
    ([["mae", "mse"], "accuracy"], ["scores_mae", "scores_mse", "classes_accuracy"]),
    ([None, ["accuracy"]], ["classes_accuracy"]),
])
def test_metrics_per_output_are_named_and_computed_as_keras(metrics, names):
    model = _model()
    model.compile(optimizer="adam", loss=["mse", "sparse_categorical_crossentropy"], metrics=metrics)
    x, targets, labels = _data()
    logs = model.evaluate(x, [targets, labels], verbose=0, return_dict=True)
    assert list(logs) == ["loss", "scores_loss", "classes_loss", *names]
    expected = _numpy_metrics(model, x, targets, labels)
    for name in names + ["classes_loss"]:
        assert logs[name] == pytest.approx(expected[name], rel=1e-5), name
    values = model.evaluate(x, [targets, labels], verbose=0)
    assert values == pytest.approx([logs[k] for k in logs], rel=1e-6)


def test_one_list_applies_to_every_output_and_repeated_names_are_numbered():
    model = _model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x, targets, labels = _data()
    logs = model.evaluate(x, [targets, np.eye(3)[labels]], verbose=0, return_dict=True)
    scores, probabilities = model.predict(x, verbose=0)
    assert logs["scores_mae"] == pytest.approx(np.abs(scores - targets).mean(), rel=1e-5)
    assert logs["classes_mae"] == pytest.approx(np.abs(probabilities - np.eye(3)[labels]).mean(), rel=1e-5)
    model.compile(optimizer="adam", loss=["mse", "sparse_categorical_crossentropy"],
                  metrics={"classes": ["accuracy", "accuracy"]})
    assert [m.name for m in model.compiled_metrics][2:] == ["classes_accuracy", "classes_accuracy_1"]


def test_a_two_output_model_with_metrics_trains_and_validates():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=["mse", "sparse_categorical_crossentropy"],
                  metrics={"scores": ["mae"], "classes": ["accuracy"]})
    x, targets, labels = _data(160)
    x_val, targets_val, labels_val = _data(40, seed=1)
    before = _numpy_metrics(model, x_val, targets_val, labels_val)
    history = model.fit(x, [targets, labels], epochs=15, batch_size=16, verbose=0,
                        validation_data=(x_val, [targets_val, labels_val]))
    names = ["loss", "scores_loss", "classes_loss", "scores_mae", "classes_accuracy"]
    assert set(history.history) == {*names, *(f"val_{n}" for n in names)}
    after = _numpy_metrics(model, x_val, targets_val, labels_val)
    for name in ("scores_mae", "classes_accuracy"):
        assert history.history[f"val_{name}"][-1] == pytest.approx(after[name], rel=1e-5), name
    assert after["scores_mae"] < 0.5 * before["scores_mae"]
    assert after["classes_accuracy"] > 0.8
    logs = model.evaluate(x_val, [targets_val, labels_val], verbose=0, return_dict=True)
    assert logs["classes_accuracy"] == pytest.approx(after["classes_accuracy"], rel=1e-5)


def test_bad_metric_arguments_are_refused():
    model = _model()
    with pytest.raises(ValueError, match="not outputs"):
        model.compile(optimizer="adam", loss="mse", metrics={"other": ["mae"]})
    with pytest.raises(ValueError, match="one entry per output"):
        model.compile(optimizer="adam", loss="mse", metrics=[["mae"], ["mse"], ["mae"]])
    with pytest.raises(ValueError, match="weighted_metrics"):
        model.compile(optimizer="adam", loss="mse", weighted_metrics={"other": ["mae"]})
    with pytest.raises(ValueError, match="takes no sample weights"):
        model.compile(optimizer="adam", loss="mse", weighted_metrics=[R2Score()])
