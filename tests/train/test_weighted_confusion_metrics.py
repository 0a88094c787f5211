"""Precision, recall and F1 as weighted metrics: a confusion matrix of sample weights, checked
against scikit-learn's precision_recall_fscore_support(sample_weight=...), in fit too."""

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

import lamina
from lamina import nn, optim
from lamina.train import F1Score, Precision, Recall, Trainer

AVERAGES = ("macro", "micro", "weighted", "binary")
WHICH = {Precision: 0, Recall: 1, F1Score: 2}


def sklearn_score(metric_class, labels, predicted, weights, average):
    return precision_recall_fscore_support(labels, predicted, average=average, sample_weight=weights,
                                           zero_division=0)[WHICH[metric_class]]


def scored_batches(classes, n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    scores = rng.standard_normal((n, classes)) + 1.5 * np.eye(classes)[labels]     # right more often than not
    weights = rng.uniform(0, 3, n) * (rng.random(n) > 0.2)                         # some weights 0
    return scores, labels, weights


@pytest.mark.parametrize("metric_class", [Precision, Recall, F1Score])
@pytest.mark.parametrize("average", AVERAGES)
def test_weighted_scores_over_batches_equal_sklearn(metric_class, average):
    classes = 2 if average == "binary" else 4
    scores, labels, weights = scored_batches(classes)
    metric = metric_class(average)
    for batch in np.array_split(np.arange(len(labels)), 4):
        metric.update(scores[batch], labels[batch], weights[batch])
    expected = sklearn_score(metric_class, labels, scores.argmax(axis=1), weights, average)
    assert metric.result() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    unweighted = sklearn_score(metric_class, labels, scores.argmax(axis=1), None, average)
    assert abs(expected - unweighted) > 1e-3        # the weights matter in this example


@pytest.mark.parametrize("average", ("macro", "weighted"))
def test_a_class_of_weight_zero_only_counts_as_sklearn_counts_it(average):
    # Class 2 occurs only in samples of weight 0: macro averaging still counts it (as 0).
    labels = np.array([0, 1, 2, 0, 1, 1])
    scores = np.eye(3)[[0, 1, 2, 1, 1, 0]]
    weights = np.array([1.0, 2.0, 0.0, 0.5, 1.0, 0.25])
    for metric_class in WHICH:
        metric = metric_class(average)
        metric.update(scores, labels, weights)
        expected = sklearn_score(metric_class, labels, scores.argmax(axis=1), weights, average)
        assert metric.result() == pytest.approx(expected, abs=1e-12), metric_class.__name__


def test_small_weights_are_not_floored_in_the_weighted_average():
    labels, scores = np.array([0, 1, 1]), np.eye(2)[[0, 1, 0]]
    weights = np.full(3, 0.01)
    metric = Recall("weighted")
    metric.update(scores, labels, weights)
    expected = sklearn_score(Recall, labels, scores.argmax(axis=1), weights, "weighted")
    assert metric.result() == pytest.approx(expected)


def test_a_single_sigmoid_output_is_weighted_like_its_0_1_predictions():
    rng = np.random.default_rng(3)
    probabilities, labels, weights = rng.random(30), rng.integers(0, 2, 30), rng.uniform(0, 2, 30)
    metric = F1Score("binary")
    metric.update(probabilities[:, None], labels[:, None], weights)
    expected = sklearn_score(F1Score, labels, (probabilities > 0.5).astype(int), weights, "binary")
    assert metric.result() == pytest.approx(expected)


def test_weighted_precision_recall_f1_in_fit_equal_sklearn_over_the_epoch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    w = rng.uniform(0.1, 3.0, 40)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(3), nn.Softmax())
    model.build((None, 5))
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.0), metrics=(), verbose=0,
                      weighted_metrics=("precision", "recall", Recall("micro"), F1Score("weighted")))
    trainer.fit((x, y), val=(x, y, w), epochs=1, batch_size=8, sample_weight=w, shuffle=False)
    predicted = trainer.predict(x).argmax(axis=1)           # lr 0: the weights never move
    logs = {k: v[-1] for k, v in trainer.history.epoch.items()}
    for prefix in ("", "val_"):
        for name, metric_class, average in (("weighted_precision", Precision, "macro"),
                                            ("weighted_recall", Recall, "macro"),
                                            ("weighted_recall_micro", Recall, "micro"),
                                            ("weighted_f1_weighted", F1Score, "weighted")):
            expected = sklearn_score(metric_class, y, predicted, w, average)
            assert logs[prefix + name] == pytest.approx(expected, rel=1e-6), prefix + name


def test_a_metric_that_takes_no_weights_is_refused_as_a_weighted_metric():
    from lamina.train import R2Score

    model = nn.Sequential(nn.Dense(2))
    with pytest.raises(TypeError, match="R2Score takes no sample weights"):
        Trainer(model, optimizer=optim.SGD(model, lr=0.1), weighted_metrics=(R2Score(),))
