import numpy as np
import pytest

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
