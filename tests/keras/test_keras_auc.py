"""lamina.keras's AUC: every output one prediction (flattened, as Keras's), multi-label
means, sample weights and the mask of a sequence output; against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import lamina
from lamina import keras
from lamina.errors import ShapeError
from lamina.keras import layers, metrics


def _multi_label(seed=0, n=60, labels=3):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, (n, labels))
    scores = np.round(rng.random((n, labels)) * 0.6 + 0.4 * truth, 2)
    return scores, truth


def test_outputs_are_flattened_into_one_curve_as_keras():
    scores, truth = _multi_label()
    auc = metrics.get("AUC")
    auc.update(scores[:25], truth[:25])
    auc.update(scores[25:], truth[25:])
    assert auc.result() == pytest.approx(roc_auc_score(truth.reshape(-1), scores.reshape(-1)), rel=1e-12)
    weights = np.random.default_rng(1).uniform(0, 2, len(truth))
    weighted = metrics.AUC()
    weighted.update(scores, truth, weights)                    # one weight per sample, for all its outputs
    expected = roc_auc_score(truth.reshape(-1), scores.reshape(-1), sample_weight=np.repeat(weights, 3))
    assert weighted.result() == pytest.approx(expected, rel=1e-12)
    assert weighted.result() != pytest.approx(auc.result(), rel=1e-6)


def test_multi_label_averages_the_classes_curves():
    scores, truth = _multi_label(2)
    per_class = np.array([roc_auc_score(truth[:, j], scores[:, j]) for j in range(3)])
    auc = metrics.AUC(multi_label=True)
    auc.update(scores, truth)
    assert auc.result() == pytest.approx(per_class.mean(), rel=1e-12)
    label_weights = np.array([1.0, 0.0, 3.0])
    weighted = metrics.AUC(multi_label=True, label_weights=label_weights)
    weighted.update(scores, truth)
    assert weighted.result() == pytest.approx(per_class @ label_weights / 4.0, rel=1e-12)
    logits = metrics.AUC(multi_label=True, from_logits=True)              # a sigmoid keeps the order
    logits.update(np.log(scores + 1e-3) - np.log1p(1e-3 - scores), truth)
    assert logits.result() == pytest.approx(auc.result(), rel=1e-12)


def test_the_auc_of_a_masked_sequence_output_counts_the_unmasked_steps():
    ids = np.array([[1, 2, 3, 0], [4, 0, 0, 0], [1, 1, 2, 2], [3, 4, 0, 0], [2, 3, 4, 1], [4, 2, 0, 0]])
    steps = np.array([[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]])
    weights = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.25])
    lamina.manual_seed(3)
    model = keras.Sequential([keras.Input((4,), dtype="int64"), layers.Embedding(5, 4, mask_zero=True),
                              layers.SimpleRNN(5, return_sequences=True), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["AUC"], weighted_metrics=["AUC"])
    logs = model.evaluate(ids, steps[..., None], batch_size=4, sample_weight=weights, verbose=0, return_dict=True)
    scores = model.predict(ids, verbose=0)[..., 0].astype(np.float64)
    kept = ids != 0
    assert logs["auc"] == pytest.approx(roc_auc_score(steps[kept], scores[kept]), rel=1e-9)
    step_weights = np.broadcast_to(weights[:, None], ids.shape)[kept]
    assert logs["weighted_auc"] == pytest.approx(roc_auc_score(steps[kept], scores[kept],
                                                               sample_weight=step_weights), rel=1e-9)
    assert logs["auc"] != pytest.approx(roc_auc_score(steps.reshape(-1), scores.reshape(-1)), rel=1e-6)


def test_bad_arguments_are_refused():
    scores, truth = _multi_label(3, n=8)
    with pytest.raises(ShapeError, match=r"AUC: labels of shape \(8, 2\) for outputs of shape \(8, 3\)"):
        metrics.AUC().update(scores, truth[:, :2])
    with pytest.raises(ShapeError, match=r"AUC: sample_weight of shape \(5,\) does not fit outputs"):
        metrics.AUC().update(scores, truth, np.ones(5))
    with pytest.raises(ShapeError, match="multi_label=True"):
        metrics.AUC(multi_label=True).update(scores[:, 0], truth[:, 0])
    with pytest.raises(ShapeError, match=r"label_weights of shape \(2,\) for 3 labels"):
        metrics.AUC(multi_label=True, label_weights=[1, 2]).update(scores, truth)
    with pytest.raises(ValueError, match="AUC: no samples in this epoch"):
        metrics.AUC().result()
