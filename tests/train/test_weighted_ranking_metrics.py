"""Sample weights in the ranking metrics AUC and AveragePrecision: scikit-learn's
``sample_weight``, zero weights as left-out samples, integer weights as repeated samples,
and the weighted metrics of a fit."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import lamina
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.train import AUC, AveragePrecision, Trainer

METRICS = ((AUC, roc_auc_score), (AveragePrecision, average_precision_score))


def _data(seed, n=300):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.round((rng.random(n) * 0.7 + 0.3 * labels) * 32) / 32           # ties within and across classes
    return scores, labels, rng.uniform(0.0, 2.0, n)


def _feed(metric, scores, labels, weights, sizes=(7, 100, 1, 64)):
    edges = np.cumsum(sizes)
    for batch in np.split(np.arange(len(labels)), edges[edges < len(labels)]):
        metric.update(scores[batch], labels[batch], weights[batch])
    return metric.result()


@pytest.mark.parametrize("metric_class, reference", METRICS)
@pytest.mark.parametrize("kind", ("flat", "column", "softmax"))
def test_weighted_values_equal_scikit_learn(metric_class, reference, kind):
    scores, labels, weights = _data(1)
    weights[::5] = 0.0
    outputs = {"flat": scores, "column": scores[:, None], "softmax": np.stack([1 - scores, scores], axis=1)}[kind]
    expected = reference(labels, scores, sample_weight=weights)
    assert _feed(metric_class(), outputs, labels, weights[:, None] if kind == "column" else weights) == \
        pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(reference(labels, scores), rel=1e-6)                 # the weights matter


@pytest.mark.parametrize("metric_class, reference", METRICS)
def test_zero_weights_leave_samples_out_and_integer_weights_repeat_them(metric_class, reference):
    scores, labels, _ = _data(2, n=120)
    counts = np.random.default_rng(3).integers(0, 4, len(labels))
    weighted = _feed(metric_class(), scores, labels, counts.astype(np.float64))
    repeated = metric_class()
    repeated.update(np.repeat(scores, counts), np.repeat(labels, counts))
    assert weighted == pytest.approx(repeated.result(), rel=1e-12)
    kept = counts > 0
    assert weighted != pytest.approx(reference(labels[kept], scores[kept]), rel=1e-6)  # counts, not just presence


def test_unweighted_batches_count_one_each_beside_weighted_ones():
    scores, labels, weights = _data(4, n=80)
    metric = AUC()
    metric.update(scores[:40], labels[:40])
    metric.update(scores[40:], labels[40:], weights[40:])
    expected = roc_auc_score(labels, scores, sample_weight=np.r_[np.ones(40), weights[40:]])
    assert metric.result() == pytest.approx(expected, rel=1e-12)


def test_bad_weights_are_refused_and_all_zero_weights_leave_no_samples():
    scores, labels, _ = _data(5, n=6)
    with pytest.raises(ShapeError, match=r"AUC: sample_weight of shape \(5,\) for 6 samples"):
        AUC().update(scores, labels, np.ones(5))
    with pytest.raises(ValueError, match="AveragePrecision: sample weights must be finite and non-negative"):
        AveragePrecision().update(scores, labels, -np.ones(6))
    with pytest.raises(ValueError, match="finite"):
        AUC().update(scores, labels, np.full(6, np.nan))
    nothing = AUC()
    nothing.update(scores, labels, np.zeros(6))
    with pytest.raises(ValueError, match=r"AUC: no samples in this epoch \(or only samples of weight 0\)"):
        nothing.result()


def test_a_fit_logs_the_weighted_auc():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x[:, :1] + 0.8 * rng.standard_normal((64, 1)) > 0).astype(np.float32)
    w = rng.uniform(0.0, 3.0, 64)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    trainer = Trainer(model, "mse", optim.SGD(model, lr=0.0), metrics=(AUC(),),
                      weighted_metrics=(AUC(), AveragePrecision()), verbose=0)
    logs = trainer.fit((x, y), epochs=1, batch_size=16, sample_weight=w, shuffle=False)
    scores = trainer.predict(x)[:, 0].astype(np.float64)
    assert logs["weighted_auc"][0] == pytest.approx(roc_auc_score(y[:, 0], scores, sample_weight=w), rel=1e-9)
    assert logs["weighted_average_precision"][0] == pytest.approx(
        average_precision_score(y[:, 0], scores, sample_weight=w), rel=1e-9)
    assert logs["auc"][0] == pytest.approx(roc_auc_score(y[:, 0], scores), rel=1e-9)
    assert logs["auc"][0] != pytest.approx(logs["weighted_auc"][0], rel=1e-6)
