"""Forecast errors against scikit-learn and their formulas; the naive baselines against loops."""

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, mean_squared_error

from lamina.errors import ShapeError
from lamina.train import mae, mape, mase, naive_forecast, rmse, seasonal_naive_forecast, smape


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    y = rng.uniform(1.0, 3.0, (20, 6, 2))
    return y, y + rng.normal(0.0, 0.4, y.shape)


def test_errors_equal_scikit_learn(pair):
    y, y_hat = pair
    flat, flat_hat = y.ravel(), y_hat.ravel()
    assert mae(y, y_hat) == pytest.approx(mean_absolute_error(flat, flat_hat), rel=1e-12)
    assert rmse(y, y_hat) == pytest.approx(np.sqrt(mean_squared_error(flat, flat_hat)), rel=1e-12)
    assert mape(y, y_hat) == pytest.approx(100 * mean_absolute_percentage_error(flat, flat_hat), rel=1e-12)


def test_smape_and_mase_equal_their_formulas(pair):
    y, y_hat = pair
    terms = [2 * abs(a - b) / (abs(a) + abs(b)) for a, b in zip(y.ravel(), y_hat.ravel())]
    assert smape(y, y_hat) == pytest.approx(100 * np.mean(terms), rel=1e-12)
    assert smape([0.0, 1.0], [0.0, 1.0]) == 0.0 and smape([1.0], [-1.0]) == pytest.approx(200.0)
    history = np.random.default_rng(1).normal(size=(40, 2)).cumsum(axis=0)
    for season in (1, 4):
        scale = [np.mean([abs(history[t, c] - history[t - season, c]) for t in range(season, 40)]) for c in (0, 1)]
        expected = np.mean(np.abs(y - y_hat) / np.array(scale))
        assert mase(y, y_hat, history, season) == pytest.approx(expected, rel=1e-12)
    one = history[:, 0]
    assert mase(y[..., 0], y_hat[..., 0], one) == pytest.approx(mae(y[..., 0], y_hat[..., 0]) /
                                                               np.mean(np.abs(np.diff(one))), rel=1e-12)


def test_metric_errors():
    with pytest.raises(ShapeError, match="mae.*shape"):
        mae(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="mape.*0"):
        mape([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="scale 0"):
        mase([1.0], [2.0], np.ones(10))
    with pytest.raises(ShapeError, match="channels"):
        mase(np.zeros((3, 2)), np.zeros((3, 2)), np.random.rand(10, 3))


def test_baselines_equal_loops():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10, 2))
    season, horizon = 4, 9
    seasonal = seasonal_naive_forecast(x, horizon, season)
    for h in range(1, horizon + 1):
        k = (h - 1) // season + 1                 # seasons back: ceil(h / m)
        np.testing.assert_array_equal(seasonal[:, h - 1], x[:, 10 - 1 + h - k * season])
    np.testing.assert_array_equal(naive_forecast(x, 3), np.repeat(x[:, -1:], 3, axis=1))
    np.testing.assert_array_equal(seasonal_naive_forecast(x, 5, 1), naive_forecast(x, 5))
    series = np.arange(12.0)
    np.testing.assert_array_equal(seasonal_naive_forecast(series, 6, 4, axis=0), [8, 9, 10, 11, 8, 9])
    with pytest.raises(ValueError, match="season"):
        seasonal_naive_forecast(x, 3, 11)


def test_seasonal_naive_is_exact_on_a_periodic_series():
    t = np.arange(60)
    series = np.sin(2 * np.pi * t / 12)
    history, future = series[:48], series[48:]
    np.testing.assert_allclose(seasonal_naive_forecast(history, 12, 12, axis=0), future, atol=1e-12)
