"""lamina.keras: metrics of masked sequence outputs (the mask as weights, times the sample
weights of weighted_metrics), weighted_metrics per output, and the compile settings kept by
save/load_model; checked against NumPy on the model's predictions."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import randn

import lamina
from lamina import keras
from lamina.keras import layers, optimizers

IDS = np.array([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0], [1, 1, 2, 2, 3], [3, 4, 0, 0, 0], [2, 0, 0, 0, 0],
                [4, 3, 2, 1, 0], [1, 4, 0, 0, 0]])
LABELS = np.array([[0, 1, 2, 0, 0], [1, 0, 0, 0, 0], [2, 2, 1, 0, 1], [0, 2, 0, 0, 0], [1, 0, 0, 0, 0],
                   [2, 1, 0, 1, 0], [0, 0, 0, 0, 0]])
WEIGHTS = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.25, 2.5])


def _tagger():
    lamina.manual_seed(2)
    return keras.Sequential([keras.Input((5,), dtype="int64"), layers.Embedding(5, 4, mask_zero=True),
                             layers.SimpleRNN(6, return_sequences=True), layers.Dense(3, activation="softmax")])


def _masked_mean(values: np.ndarray, weights: np.ndarray) -> float:
    return float((values * weights).sum() / weights.sum())


def _numpy_tagger_metrics(model, weights: np.ndarray | None = None) -> dict:
    probabilities = model.predict(IDS, verbose=0)
    mask = (IDS != 0).astype(np.float64)
    hits = (probabilities.argmax(axis=-1) == LABELS).astype(np.float64)
    onehot = np.eye(3)[LABELS]
    errors = np.abs(probabilities - onehot).mean(axis=-1)
    steps = mask if weights is None else mask * weights[:, None]
    return {"accuracy": _masked_mean(hits, mask), "weighted_accuracy": _masked_mean(hits, steps),
            "weighted_mae": _masked_mean(errors, steps)}


def _mae_on_onehot(y_true, y_pred):
    """Keras's argument order: |y_pred - one_hot(y_true)| averaged over the classes, per step."""
    labels = np.asarray(y_true).astype(np.int64).reshape(np.shape(y_pred)[:-1])
    return np.abs(np.asarray(y_pred) - np.eye(3)[labels]).mean(axis=-1)


_mae_on_onehot.__name__ = "mae"


def test_masked_accuracy_counts_the_unmasked_steps_only():
    model = _tagger()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  weighted_metrics=["accuracy", _mae_on_onehot])
    expected = _numpy_tagger_metrics(model, WEIGHTS)
    # batches of 3, 3 and 1 sequences: the epoch's value is over all unmasked steps, not a mean of batches
    logs = model.evaluate(IDS, LABELS, batch_size=3, sample_weight=WEIGHTS, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "accuracy", "weighted_accuracy", "weighted_mae"]
    for name in ("accuracy", "weighted_accuracy", "weighted_mae"):
        assert logs[name] == pytest.approx(expected[name], rel=1e-9), name
    assert expected["accuracy"] != pytest.approx(expected["weighted_accuracy"])
    plain = model.evaluate(IDS, LABELS, batch_size=3, verbose=0, return_dict=True)
    assert plain["weighted_accuracy"] == pytest.approx(expected["accuracy"], rel=1e-9)


def test_masked_metrics_in_fit_and_validation():
    model = _tagger()
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-12), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], weighted_metrics=["accuracy"])
    expected = _numpy_tagger_metrics(model, WEIGHTS)
    history = model.fit(IDS, LABELS, batch_size=2, epochs=1, sample_weight=WEIGHTS, shuffle=False, verbose=0,
                        validation_data=(IDS, LABELS, WEIGHTS))
    for prefix in ("", "val_"):
        assert history.history[f"{prefix}accuracy"][0] == pytest.approx(expected["accuracy"], rel=1e-9)
        assert history.history[f"{prefix}weighted_accuracy"][0] == pytest.approx(expected["weighted_accuracy"],
                                                                                rel=1e-9)
    logs = model.train_on_batch(IDS, LABELS, sample_weight=WEIGHTS, return_dict=True)
    assert logs["weighted_accuracy"] == pytest.approx(expected["weighted_accuracy"], rel=1e-9)


def _two_outputs():
    """A masked per-step output ("tags") and a per-sequence one ("kind") from the same encoder."""
    lamina.manual_seed(3)
    ids = keras.Input((5,), dtype="int64")
    states = layers.SimpleRNN(6, return_sequences=True)(layers.Embedding(5, 4, mask_zero=True)(ids))
    tags = layers.Dense(3, activation="softmax", name="tags")(states)
    kind = layers.Dense(2, name="kind")(layers.GlobalAveragePooling1D()(states))
    return keras.Model(ids, [tags, kind])


def _kind_targets() -> np.ndarray:
    return np.stack([(IDS != 0).sum(axis=1) / 5.0, IDS[:, 0] / 4.0], axis=1)


def test_weighted_metrics_per_output_against_numpy():
    model = _two_outputs()
    model.compile(optimizer="adam", loss={"tags": "sparse_categorical_crossentropy", "kind": "mse"},
                  metrics={"tags": "accuracy"}, weighted_metrics=[["accuracy"], ["mae", "mse"]])
    targets = _kind_targets()
    logs = model.evaluate(IDS, [LABELS, targets], batch_size=4, sample_weight=WEIGHTS, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "tags_loss", "kind_loss", "tags_accuracy", "tags_weighted_accuracy",
                          "kind_weighted_mae", "kind_weighted_mse"]
    probabilities, kind = model.predict(IDS, verbose=0)
    mask = (IDS != 0).astype(np.float64)
    hits = (probabilities.argmax(axis=-1) == LABELS).astype(np.float64)
    assert logs["tags_accuracy"] == pytest.approx(_masked_mean(hits, mask), rel=1e-9)
    assert logs["tags_weighted_accuracy"] == pytest.approx(_masked_mean(hits, mask * WEIGHTS[:, None]), rel=1e-9)
    errors = kind - targets
    assert logs["kind_weighted_mae"] == pytest.approx(_masked_mean(np.abs(errors).mean(axis=1), WEIGHTS), rel=1e-6)
    assert logs["kind_weighted_mse"] == pytest.approx(_masked_mean((errors ** 2).mean(axis=1), WEIGHTS), rel=1e-6)
    values = model.evaluate(IDS, [LABELS, targets], batch_size=4, sample_weight=WEIGHTS, verbose=0)
    assert values == pytest.approx(list(logs.values()), rel=1e-12)
    # the sample-weighted loss: sum(L m w) / sum(m) for the masked steps plus mean(w mse) for the other output
    whole = model.evaluate(IDS, [LABELS, targets], batch_size=len(IDS), sample_weight=WEIGHTS, verbose=0,
                           return_dict=True)
    picked = np.take_along_axis(probabilities, LABELS[:, :, None], axis=2)[:, :, 0]
    tags_loss = -(np.log(picked) * mask * WEIGHTS[:, None]).sum() / mask.sum()
    kind_loss = (WEIGHTS * (errors ** 2).mean(axis=1)).mean()
    assert whole["loss"] == pytest.approx(tags_loss + kind_loss, rel=1e-5)


def test_precision_weighs_each_prediction_by_its_sample_weight():
    lamina.manual_seed(4)
    x = randn(12, 3, seed=4)
    labels = (x[:, 0] > 0).astype(np.float64)
    model = keras.Sequential([keras.Input((3,)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", weighted_metrics=["precision"])
    weights = np.linspace(0.5, 3.0, 12)
    logs = model.evaluate(x, labels[:, None], batch_size=5, sample_weight=weights, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0)[:, 0] > 0.5
    expected = (weights * (predicted & (labels > 0.5))).sum() / (weights * predicted).sum()
    assert logs["weighted_precision"] == pytest.approx(expected, rel=1e-9)


def test_a_reloaded_model_keeps_nested_metrics_loss_weights_and_weighted_metrics(tmp_path):
    model = _two_outputs()
    model.compile(optimizer="adam", loss={"tags": "sparse_categorical_crossentropy", "kind": "mse"},
                  metrics={"tags": ["accuracy"], "kind": ["mae", "mse"]}, weighted_metrics=[None, ["mae"]],
                  loss_weights={"tags": 0.3, "kind": 2.0})
    targets = _kind_targets()
    model.fit(IDS, [LABELS, targets], batch_size=4, epochs=2, verbose=0)
    logs = model.evaluate(IDS, [LABELS, targets], sample_weight=WEIGHTS, verbose=0, return_dict=True)
    path = tmp_path / "tagger.keras"
    model.save(path)
    reloaded = keras.load_model(path)
    again = reloaded.evaluate(IDS, [LABELS, targets], sample_weight=WEIGHTS, verbose=0, return_dict=True)
    assert list(again) == list(logs) == ["loss", "tags_loss", "kind_loss", "tags_accuracy", "kind_mae", "kind_mse",
                                         "kind_weighted_mae"]
    assert again == pytest.approx(logs, rel=1e-12)
    plain = reloaded.evaluate(IDS, [LABELS, targets], batch_size=len(IDS), verbose=0, return_dict=True)
    assert plain["loss"] == pytest.approx(0.3 * plain["tags_loss"] + 2.0 * plain["kind_loss"], rel=1e-5)
