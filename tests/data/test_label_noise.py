"""Synthetic label noise: the transition matrices by hand, and injected noise that hits the
requested rate with the empirical transition matrix of the requested pattern."""

import numpy as np
import pytest

from lamina.data import inject_label_noise, noise_transition_matrix


def test_transition_matrices_by_hand():
    np.testing.assert_allclose(noise_transition_matrix(3, 0.4), [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(noise_transition_matrix(3, 0.4, "pairflip"),
                               [[0.6, 0.4, 0.0], [0.0, 0.6, 0.4], [0.4, 0.0, 0.6]])
    np.testing.assert_allclose(noise_transition_matrix(4, 0.3, "asymmetric", mapping={1: 3, 2: 0}),
                               [[1, 0, 0, 0], [0, 0.7, 0, 0.3], [0.3, 0, 0.7, 0], [0, 0, 0, 1]])


def _empirical(clean, noisy, classes):
    counts = np.zeros((classes, classes))
    np.add.at(counts, (clean, noisy), 1)
    return counts / counts.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "asymmetric"])
def test_injected_noise_hits_the_rate_and_the_pattern(kind):
    clean = np.repeat(np.arange(5), 400)
    noisy = inject_label_noise(clean, 0.4, kind, num_classes=5, seed=1)
    assert np.mean(noisy != clean) == pytest.approx(0.4, abs=1e-9)
    empirical = _empirical(clean, noisy, 5)
    expected = noise_transition_matrix(5, 0.4, kind)
    np.testing.assert_allclose(np.diag(empirical), np.diag(expected), atol=1e-9)
    assert np.abs(empirical - expected).max() < 0.05, empirical
    again = inject_label_noise(clean, 0.4, kind, num_classes=5, seed=1)
    np.testing.assert_array_equal(noisy, again)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="rate must be"):
        inject_label_noise(np.array([0, 1]), 1.5)
    with pytest.raises(ValueError, match="kind must be"):
        noise_transition_matrix(3, 0.2, "uniform")
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        inject_label_noise(np.array([0, 2]), 0.2, num_classes=2)
    with pytest.raises(ValueError, match="mapping"):
        noise_transition_matrix(3, 0.2, "asymmetric", mapping={0: 0})
