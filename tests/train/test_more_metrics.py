import warnings

import numpy as np
import pytest

from helpers import DeviceArray
from lamina.errors import ShapeError
from lamina.train import AUC, AveragePrecision, MeanAbsoluteError, R2Score, mean_absolute_error, r2_score
from lamina.train.metrics import get_metric

sk = pytest.importorskip("sklearn.metrics")

SIZES = (1, 17, 64, 3, 200, 90)                     # uneven batches; the rest goes in the last one


def _feed(metric, predictions, targets, sizes=SIZES):
    start = 0
    for size in sizes:
        if start >= len(targets):
            break
        metric.update(predictions[start:start + size], targets[start:start + size])
        start += size
    if start < len(targets):
        metric.update(predictions[start:], targets[start:])
    return metric.result()


def _binary_data(seed, n=500, dtype=np.float64):
    """Labels 0/1 and scores in steps of 1/64: many tied scores, across classes too (and
    exact in float32, so 1 - score and the logits below keep them tied)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = (np.round((rng.random(n) * 0.7 + 0.3 * labels) * 64) / 64).astype(dtype)
    assert len(np.unique(scores)) < n / 3                          # ties decide part of the result
    return scores, labels


def _as_outputs(kind, scores):
    """The model outputs of each kind and the 1-D score scikit-learn ranks them by."""
    if kind == "flat":
        return scores, scores
    if kind == "column":
        return scores[:, None], scores
    if kind == "softmax":                                           # two-class probabilities
        return np.stack([1 - scores, scores], axis=1), scores
    offsets = (np.arange(len(scores)) % 7 - 3).astype(scores.dtype)           # logits outside [0, 1]
    logits = np.stack([offsets, offsets + 4 * scores - 1], axis=1)            # column 1 alone ranks wrong
    return logits, logits[:, 1].astype(np.float64) - logits[:, 0]


KINDS = ("flat", "column", "softmax", "logits")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_auc_over_uneven_batches_matches_scikit_learn(kind, dtype):
    scores, labels = _binary_data(0, dtype=dtype)
    outputs, reference = _as_outputs(kind, scores)
    expected = sk.roc_auc_score(labels, reference)
    assert _feed(AUC(), outputs, labels) == pytest.approx(expected, rel=1e-12, abs=0)
    positives_first = sk.roc_auc_score(labels, reference + 1e-6 * labels)
    assert positives_first - expected > 1e-3                       # ties count one half


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_average_precision_over_uneven_batches_matches_scikit_learn(kind, dtype):
    scores, labels = _binary_data(2, dtype=dtype)
    outputs, reference = _as_outputs(kind, scores)
    expected = sk.average_precision_score(labels, reference)
    assert _feed(AveragePrecision(), outputs, labels) == pytest.approx(expected, rel=1e-12, abs=0)
    positives_first = sk.average_precision_score(labels, reference + 1e-6 * labels)
    assert positives_first - expected > 1e-3                       # a tied group is one step
    precision, recall, _ = sk.precision_recall_curve(labels, reference)
    assert abs(-np.trapezoid(precision, recall) - expected) > 1e-4   # step-wise, not the trapezoids


def test_ranking_metrics_take_one_hot_labels_and_softmax_outputs_of_a_confident_model():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    p1 = np.where(labels == 1, rng.random(300) * 1e-3 + 0.5, rng.random(300) * 1e-20).astype(np.float32)
    p1[:40] = rng.random(40) * 1e-20                               # some positives scored low
    probabilities = np.stack([1 - p1, p1], axis=1)                 # 1 - p1 is 1: p1 - p0 would tie
    one_hot = np.eye(2)[labels]
    assert _feed(AUC(), probabilities, one_hot) == pytest.approx(sk.roc_auc_score(labels, p1), rel=1e-12)
    assert _feed(AveragePrecision(), probabilities, one_hot) == pytest.approx(
        sk.average_precision_score(labels, p1), rel=1e-12)


def test_ranking_metrics_reset_between_epochs():
    first, first_labels = _binary_data(4)
    second, second_labels = _binary_data(5, n=333)
    for metric, reference in ((AUC(), sk.roc_auc_score), (AveragePrecision(), sk.average_precision_score)):
        _feed(metric, first, first_labels)
        metric.reset()
        assert _feed(metric, second, second_labels) == pytest.approx(reference(second_labels, second), rel=1e-12)
        assert reference(second_labels, second) != pytest.approx(
            reference(np.r_[first_labels, second_labels], np.r_[first, second]), rel=1e-6)


def test_update_returns_the_value_of_the_batch_alone():
    scores, labels = _binary_data(6)
    metric = AUC()
    metric.update(scores[:100], labels[:100])
    assert metric.update(scores[100:], labels[100:]) == pytest.approx(sk.roc_auc_score(labels[100:], scores[100:]))
    assert np.isnan(metric.update(np.array([0.2, 0.7]), np.array([1, 1])))        # one class: NaN, no error
    assert AveragePrecision().update(scores[:50], labels[:50]) == pytest.approx(
        sk.average_precision_score(labels[:50], scores[:50]))


def test_ranking_metrics_at_the_edges():
    one_class = AUC()
    one_class.update(np.array([0.1, 0.4, 0.3]), np.array([1, 1, 1]))
    one_class.update(np.array([0.9, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match=r"AUC: all 5 labels of the epoch are 1; ROC AUC needs both classes"):
        one_class.result()
    with pytest.raises(ValueError, match="AUC: no samples in this epoch"):
        AUC().result()
    with pytest.raises(ValueError, match="AveragePrecision: no samples in this epoch"):
        AveragePrecision().result()

    no_positive = AveragePrecision()
    no_positive.update(np.array([0.1, 0.4, 0.3]), np.array([0, 0, 0]))
    with pytest.warns(UserWarning, match="no positive label"):
        assert no_positive.result() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sk.average_precision_score([0, 0, 0], [0.1, 0.4, 0.3]) == 0.0
    only_positive = AveragePrecision()
    only_positive.update(np.array([0.1, 0.4, 0.3]), np.array([1, 1, 1]))
    assert only_positive.result() == 1.0

    diverged = AUC()
    diverged.update(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))
    assert np.isnan(diverged.result())


def test_ranking_metrics_reject_wrong_shapes_and_labels():
    scores = np.array([0.1, 0.8, 0.4])
    with pytest.raises(ShapeError, match=r"AUC: scores of shape \(3, 3\); expected one score per sample"):
        AUC().update(np.ones((3, 3)) / 3, np.array([0, 1, 0]))
    with pytest.raises(ShapeError, match=r"AveragePrecision: scores of shape \(3, 1, 1\)"):
        AveragePrecision().update(scores.reshape(3, 1, 1), np.array([0, 1, 0]))
    with pytest.raises(ShapeError, match="AUC: scores for 3 samples but 2 labels"):
        AUC().update(scores, np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"AUC: labels of shape \(3, 3\)"):
        AUC().update(scores, np.eye(3))
    with pytest.raises(ValueError, match=r"AUC: labels must be 0 or 1 \(binary classification\), found 2"):
        AUC().update(scores, np.array([0, 2, 1]))
    with pytest.raises(ValueError, match=r"labels must be 0 or 1 .*found -1"):
        AveragePrecision().update(scores, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="must be one-hot rows"):
        AUC().update(scores, np.array([[0, 1], [1, 1], [1, 0]]))
    mixed = AUC()
    mixed.update(scores, np.array([0, 1, 0]))
    with pytest.raises(ShapeError, match="one epoch needs one kind of output"):
        mixed.update(np.stack([1 - scores, scores], axis=1), np.array([0, 1, 0]))


def _regression_data(seed, outputs, n=400, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    shape = (n,) if outputs is None else (n, outputs)
    targets = (offset + rng.standard_normal(shape) * 3).astype(dtype)
    predictions = (targets + rng.standard_normal(shape) * 2).astype(dtype)
    return predictions, targets


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("outputs", [None, 1, 3])
def test_regression_metrics_over_uneven_batches_match_scikit_learn(outputs, dtype):
    predictions, targets = _regression_data(7, outputs, dtype=dtype)
    # scikit-learn keeps float32 in float32; the metrics sum in float64, so the reference is
    # scikit-learn on the same values in float64
    p64, t64 = predictions.astype(np.float64), targets.astype(np.float64)
    assert _feed(MeanAbsoluteError(), predictions, targets) == pytest.approx(
        sk.mean_absolute_error(t64, p64), rel=1e-12, abs=0)
    assert _feed(R2Score(), predictions, targets) == pytest.approx(sk.r2_score(t64, p64), rel=1e-12, abs=0)
    assert mean_absolute_error(predictions, targets) == pytest.approx(sk.mean_absolute_error(t64, p64), rel=1e-12)
    assert r2_score(predictions, targets) == pytest.approx(sk.r2_score(t64, p64), rel=1e-12)


def test_r2_is_uniform_over_outputs_and_takes_predictions_of_shape_n_by_1():
    predictions, targets = _regression_data(8, 3)
    targets[:, 0] *= 10                            # the outputs differ: a pooled R^2 would not match
    per_output = [sk.r2_score(targets[:, j], predictions[:, j]) for j in range(3)]
    assert _feed(R2Score(), predictions, targets) == pytest.approx(np.mean(per_output), rel=1e-12)
    assert _feed(R2Score(), predictions, targets) != pytest.approx(
        sk.r2_score(targets.ravel(), predictions.ravel()), rel=1e-6)
    p, t = _regression_data(9, None)
    assert _feed(R2Score(), p[:, None], t) == pytest.approx(sk.r2_score(t, p), rel=1e-12)


@pytest.mark.parametrize("sizes", [(1,) * 400, (7,) * 58, (64,) * 7, (3, 250, 1, 40)])
def test_r2_with_a_large_mean_does_not_depend_on_the_batches(sizes):
    # targets near 1e8 with a spread of 3: sum y^2 - n mean^2 loses every digit, and merging
    # batch means of that size loses about seven
    predictions, targets = _regression_data(10, 2, offset=1e8)
    expected = sk.r2_score(targets, predictions)
    assert _feed(R2Score(), predictions, targets, sizes) == pytest.approx(expected, rel=1e-12, abs=0)


def test_r2_with_constant_targets_and_few_samples_as_scikit_learn():
    targets = np.stack([np.arange(10.0), np.full(10, 3.0), np.full(10, 3.0)], axis=1)
    predictions = targets + np.stack([np.ones(10) * 0.5, np.zeros(10), np.r_[0.1, np.zeros(9)]], axis=1)
    expected = sk.r2_score(targets, predictions)           # outputs scored R^2, 1 (exact) and 0
    assert _feed(R2Score(), predictions, targets, (3, 3)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx((1 - 2.5 / 82.5 + 1 + 0) / 3)
    one = R2Score()
    assert np.isnan(one.update(np.array([1.0]), np.array([2.0])))
    assert one.update(np.array([2.0]), np.array([4.0])) == pytest.approx(sk.r2_score([2.0, 4.0], [1.0, 2.0]))
    assert np.isnan(MeanAbsoluteError().result())


def test_regression_metrics_reset_between_epochs():
    first_p, first_t = _regression_data(11, 2)
    second_p, second_t = _regression_data(12, 2, n=123, offset=5.0)
    for metric, reference in ((MeanAbsoluteError(), sk.mean_absolute_error), (R2Score(), sk.r2_score)):
        _feed(metric, first_p, first_t)
        metric.reset()
        assert _feed(metric, second_p, second_t) == pytest.approx(reference(second_t, second_p), rel=1e-12)


def test_regression_metrics_reject_wrong_shapes():
    with pytest.raises(ShapeError, match=r"R2Score: predictions of shape \(4, 2\) for targets of shape \(4, 3\)"):
        R2Score().update(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"MeanAbsoluteError: predictions of shape \(4, 2\) for targets of shape"):
        MeanAbsoluteError().update(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ShapeError, match=r"predictions of shape \(4,\) for targets of shape \(3,\)"):
        MeanAbsoluteError().update(np.zeros(4), np.zeros(3))
    with pytest.raises(ShapeError, match=r"expected \(samples,\) or \(samples, outputs\)"):
        R2Score().update(np.zeros((4, 2, 1)), np.zeros((4, 2, 1)))
    metric = R2Score()
    metric.update(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ShapeError, match="R2Score: a batch of 3 outputs after batches of 2"):
        metric.update(np.zeros((4, 3)), np.ones((4, 3)))


def test_names_resolve_to_epoch_metrics():
    for name, kind in (("auc", AUC), ("average_precision", AveragePrecision), ("mae", MeanAbsoluteError),
                       ("r2", R2Score)):
        resolved, metric = get_metric(name)
        assert resolved == name and type(metric) is kind
    with pytest.raises(ValueError, match=r"unknown metric 'roc'; expected one of .*'auc'.*'average_precision'"):
        get_metric("roc")


def test_metrics_take_arrays_from_the_device():
    scores, labels = _binary_data(13)
    with pytest.raises(TypeError):
        np.asarray(DeviceArray(scores))
    for metric, reference in ((AUC(), sk.roc_auc_score), (AveragePrecision(), sk.average_precision_score)):
        metric.update(DeviceArray(scores[:200, None]), DeviceArray(labels[:200]))
        metric.update(DeviceArray(scores[200:, None]), labels[200:])
        assert metric.result() == pytest.approx(reference(labels, scores), rel=1e-12)
    predictions, targets = _regression_data(14, 2)
    for metric, reference in ((MeanAbsoluteError(), sk.mean_absolute_error), (R2Score(), sk.r2_score)):
        metric.update(DeviceArray(predictions[:150]), DeviceArray(targets[:150]))
        metric.update(DeviceArray(predictions[150:]), targets[150:])
        assert metric.result() == pytest.approx(reference(targets, predictions), rel=1e-12)


def test_trainer_logs_the_auc_of_the_validation_set():
    from sklearn.datasets import load_breast_cancer

    import lamina
    from lamina import nn, optim
    from lamina.train import Trainer

    lamina.manual_seed(0)
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(15).permutation(len(y))
    x, y = x[order], y[order]
    x = ((x - x[:400].mean(axis=0)) / x[:400].std(axis=0)).astype(np.float32)
    y = y.reshape(-1, 1).astype(np.float32)
    (x_train, y_train), (x_val, y_val) = (x[:400], y[:400]), (x[400:], y[400:])
    model = nn.Sequential(nn.Dense(1, activation="sigmoid"))
    trainer = Trainer(model, "binary_cross_entropy", optim.SGD(model, lr=0.05), verbose=0,
                      metrics=("binary_accuracy", "auc"))
    history = trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=2, batch_size=32, seed=0)
    assert {"auc", "binary_accuracy", "val_auc", "val_binary_accuracy"} <= set(history.epoch)
    assert len(history.iteration["auc"]) == 2 * 13                # a value per batch, too
    probabilities = trainer.predict(x_val)
    assert probabilities.shape == (len(y_val), 1)
    expected = sk.roc_auc_score(y_val.ravel(), probabilities.ravel())
    assert 0.9 < expected < 1.0
    assert history["val_auc"][-1] == pytest.approx(expected, rel=1e-12, abs=0)
    assert history["val_auc"][-1] != pytest.approx(history["val_auc"][0], rel=1e-9)   # the model moved
    assert history["val_binary_accuracy"][-1] == pytest.approx(((probabilities > 0.5) == (y_val > 0.5)).mean())
    assert trainer.evaluate((x_val, y_val), batch_size=13)["auc"] == pytest.approx(expected, rel=1e-12, abs=0)
