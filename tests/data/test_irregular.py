"""Irregular time series: the sine generator (the formula, the observation counts, seeding)
and the union grid of sequences sampled at different times."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import irregular_sines, union_grid
from lamina.errors import ShapeError


def test_sines_follow_the_formula_and_observe_the_requested_points():
    data = irregular_sines(5, grid_size=20, num_observed=7, features=3, t_max=4.0, feature_prob=0.5,
                           noise_std=0.1, seed=3)
    assert data.values.shape == data.clean.shape == data.mask.shape == (5, 20, 3)
    assert data.values.dtype == np.float32 and data.times.dtype == np.float64
    np.testing.assert_allclose(data.times, np.linspace(0, 4, 20))
    expected = data.amplitude[:, None, None] * np.sin(data.frequency[:, None, None] * data.times[None, :, None]
                                                      + data.phase[:, None, :])
    np.testing.assert_allclose(data.clean, expected, rtol=1e-5, atol=1e-6)
    assert 0.05 < np.std(data.values - data.clean) < 0.15
    observed_times = data.mask.any(axis=2).sum(axis=1)
    np.testing.assert_array_equal(observed_times, 7)
    assert 0.5 < data.mask.sum() / (5 * 7 * 3) < 0.9          # about half the features kept, at least one
    assert np.all((data.frequency >= 1.0) & (data.frequency <= 2.0))


def test_sines_are_seeded():
    a, b = irregular_sines(4, seed=1), irregular_sines(4, seed=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.mask, irregular_sines(4, seed=2).mask)


def test_union_grid_lays_sequences_on_the_sorted_union_of_their_times():
    batch = union_grid([[0.5, 1.5], [0.0, 0.5, 2.0]], [[[1, 2], [3, 4]], [[5, 6], [7, 8], [9, 10]]],
                       masks=[[[1, 0], [1, 1]], [[1, 1], [0, 1], [1, 1]]])
    np.testing.assert_array_equal(batch.times, [0.0, 0.5, 1.5, 2.0])
    np.testing.assert_array_equal(batch.values, [[[0, 0], [1, 0], [3, 4], [0, 0]],
                                                 [[5, 6], [0, 8], [0, 0], [9, 10]]])
    np.testing.assert_array_equal(batch.mask, [[[0, 0], [1, 0], [1, 1], [0, 0]],
                                               [[1, 1], [0, 1], [0, 0], [1, 1]]])


def test_errors():
    with pytest.raises(ValueError, match="num_observed=9 exceeds grid_size=8"):
        irregular_sines(2, grid_size=8, num_observed=9)
    with pytest.raises(ValueError, match="frequency must have 0 <= low <= high"):
        irregular_sines(2, frequency=(2.0, 1.0))
    with pytest.raises(ValueError, match="times of sequence 1 must be finite and strictly increasing"):
        union_grid([[0.0], [1.0, 1.0]], [[[1.0]], [[1.0], [2.0]]])
    with pytest.raises(ShapeError, match=r"sequence 1 has times of shape \(2,\) and values of shape \(3, 1\)"):
        union_grid([[0.0], [1.0, 2.0]], [[[1.0]], [[1.0], [2.0], [3.0]]])
    with pytest.raises(ShapeError, match=r"mask 0 has shape \(1, 2\)"):
        union_grid([[0.0]], [[[1.0]]], masks=[[[1, 1]]])
