import numpy as np
import pytest

from helpers import DeviceArray
from lamina.errors import ShapeError
from lamina.train import accuracy, binary_accuracy, confusion_matrix, top_k_accuracy, top_k_error


def test_accuracy_and_top_k():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = np.array([1, 0, 1, 2])
    assert accuracy(scores, labels) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, k=2) == pytest.approx(0.75)
    assert top_k_error(scores, labels, k=1) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, k=3) == 1.0
    one_hot = np.eye(3)[labels]
    assert accuracy(scores, one_hot) == pytest.approx(0.5)


def test_binary_accuracy_threshold():
    assert binary_accuracy(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 0])) == pytest.approx(0.75)
    assert accuracy(np.array([[0.9], [0.2]]), np.array([1, 1])) == pytest.approx(0.5)


def test_confusion_matrix_counts():
    m = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), num_classes=3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m.sum() == 5


def _batches(scores, labels, size):
    for i in range(0, len(labels), size):
        yield scores[i:i + size], labels[i:i + size]


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_precision_recall_f1_over_batches_match_scikit_learn(average):
    from sklearn import metrics as sk

    from lamina.train import F1Score, Precision, Recall

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 203)                 # 5 outputs: class 4 never occurs, nor is predicted
    scores = rng.standard_normal((203, 5))
    scores[:, 4] = -10
    scores[np.arange(203), labels] += rng.random(203) * 1.5          # right more often than not
    predicted = scores.argmax(axis=1)
    for kind, reference in ((Precision, sk.precision_score), (Recall, sk.recall_score), (F1Score, sk.f1_score)):
        metric = kind(average)
        for xb, yb in _batches(scores, labels, 32):
            metric.update(xb, yb)
        expected = reference(labels, predicted, average=average, zero_division=0)
        assert metric.result() == pytest.approx(expected, rel=1e-12), (kind.__name__, average)
        metric.reset()
        assert metric.result() == 0.0
    assert F1Score("micro").update(scores, labels) == pytest.approx(accuracy(scores, labels))


def test_binary_outputs_and_the_binary_average():
    from sklearn import metrics as sk

    from lamina.train import F1Score, Precision

    rng = np.random.default_rng(1)
    probabilities, labels = rng.random(101), rng.integers(0, 2, 101)
    predicted = (probabilities > 0.5).astype(int)
    assert F1Score("binary").update(probabilities[:, None], labels) == pytest.approx(sk.f1_score(labels, predicted))
    assert Precision().update(probabilities, labels) == pytest.approx(
        sk.precision_score(labels, predicted, average="macro"))
    with pytest.raises(ValueError, match="F1Score: average must be one of"):
        F1Score("samples")


def test_trainer_reports_epoch_metrics_of_the_whole_set():
    from sklearn import metrics as sk

    from lamina import models, optim
    from lamina.train import Precision, Trainer

    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((90, 6)).astype(np.float32), rng.integers(0, 3, 90)
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(6,))
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=0.01), verbose=0,
                      metrics=("accuracy", "f1", Precision("weighted")))
    history = trainer.fit((x, y), val=(x, y), epochs=2, batch_size=16)
    assert {"f1", "precision_weighted", "val_f1", "val_precision_weighted"} <= set(history.epoch)
    results = trainer.evaluate((x, y), batch_size=7)              # batches of 7: the epoch's counts decide
    predicted = trainer.predict(x).argmax(axis=1)
    assert results["f1"] == pytest.approx(sk.f1_score(y, predicted, average="macro", zero_division=0))
    assert results["precision_weighted"] == pytest.approx(
        sk.precision_score(y, predicted, average="weighted", zero_division=0))
    assert results["accuracy"] == pytest.approx((predicted == y).mean())
    with pytest.raises(ValueError, match="unknown metric 'auroc'.*'f1'"):
        Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=0.01), metrics=("auroc",))


def test_epoch_metrics_take_scores_from_the_device():
    from lamina.train import F1Score
    from lamina.train.metrics import get_metric

    scores, labels = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 0, 0])
    with pytest.raises(TypeError):
        np.asarray(DeviceArray(scores))
    _, mean = get_metric("accuracy")
    assert mean.update(DeviceArray(scores), labels) == pytest.approx(2 / 3)
    assert F1Score().update(DeviceArray(scores), labels) == pytest.approx(F1Score().update(scores, labels))


def test_accuracy_over_sequence_steps_leaves_out_ignored_labels():
    scores = np.zeros((2, 3, 4))
    scores[0, :, 1] = scores[1, :, 2] = 1.0                 # predicts 1 at every step of sample 0, 2 of sample 1
    labels = np.array([[1, 1, 3], [2, -100, -100]])
    assert accuracy(scores, labels) == 3 / 4                # the two padded steps are not counted
    assert np.isnan(accuracy(scores, np.full((2, 3), -100)))


@pytest.mark.parametrize("column", [True, False])
def test_confusion_matrix_thresholds_probabilities_of_class_one(column):
    from sklearn import metrics as sk

    p, y = np.array([0.9, 0.2, 0.8, 0.1, 0.6]), np.array([1, 0, 1, 0, 0])
    expected = sk.confusion_matrix(y, p > 0.5)
    assert confusion_matrix(y, p[:, None] if column else p).tolist() == expected.tolist()


def test_confusion_matrix_keeps_whole_float_class_ids():
    m = confusion_matrix(np.array([0, 1, 2]), np.array([0.0, 2.0, 2.0]), num_classes=3)
    assert m.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_accuracy_reads_float_step_labels_as_class_ids():
    import torch

    s = np.random.default_rng(0).normal(size=(4, 5, 3))
    y = np.random.default_rng(1).integers(0, 3, size=(4, 5))
    expected = (torch.tensor(s).argmax(-1) == torch.tensor(y)).double().mean().item()
    assert accuracy(s, y.astype(np.float32)) == pytest.approx(expected)
    assert accuracy(s, np.eye(3)[y]) == pytest.approx(expected)          # one-hot rows of the scores' shape
    with pytest.raises(ShapeError, match="accuracy"):
        accuracy(s, y[:, :4])


def test_confusion_metrics_take_step_labels_and_ignore_negative_ones():
    from sklearn import metrics as sk

    from lamina.train import F1Score, Precision, Recall

    rng = np.random.default_rng(0)
    s, y = rng.normal(size=(3, 5, 4)), rng.integers(0, 4, size=(3, 5))
    y[0, 3:] = y[2, 1] = -100
    kept = y >= 0
    truth, predicted = y[kept], s.argmax(-1)[kept]
    for metric, reference in [(F1Score, sk.f1_score), (Precision, sk.precision_score), (Recall, sk.recall_score)]:
        got = metric(average="macro")
        got.update(s[:2], y[:2])
        got.update(s[2:], y[2:])
        assert got.result() == pytest.approx(reference(truth, predicted, average="macro", zero_division=0))
    w = np.array([1.0, 2.0, 0.5])
    weighted = F1Score(average="weighted")
    weighted.update(s, y, sample_weight=w)
    step_weights = np.broadcast_to(w[:, None], y.shape)[kept]
    expected = sk.f1_score(truth, predicted, average="weighted", sample_weight=step_weights)
    assert weighted.result() == pytest.approx(expected)
    flat = F1Score()
    flat.update(s[0], np.array([0, 1, -100, 2, 3]))
    assert flat.result() == pytest.approx(sk.f1_score([0, 1, 2, 3], s[0].argmax(-1)[[0, 1, 3, 4]], average="macro"))


def test_mean_accuracy_weighs_batches_by_counted_labels_and_skips_all_ignored():
    from lamina.train.epoch_metric import MeanMetric

    mean = MeanMetric(accuracy, "accuracy")
    eye = np.eye(3)[None]
    mean.update(eye.repeat(2, 0), np.array([[0, 1, 2], [0, -100, -100]]))   # 4 labels, all right
    mean.update(eye, np.array([[1, 2, -100]]))                             # 2 labels, both wrong
    mean.update(eye, np.full((1, 3), -100))                                # nothing counted
    assert mean.result() == pytest.approx(4 / 6)


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_top_k_accuracy_refuses_k_below_one(k):
    with pytest.raises(ValueError, match="top_k_accuracy: k"):
        top_k_accuracy(np.eye(3), np.arange(3), k)
