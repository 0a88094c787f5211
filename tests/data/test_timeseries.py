"""Sliding windows (equal to an explicit loop, read-only views), splits by time without leakage,
the scaler fitted on the training span, and the synthetic series."""

import numpy as np
import pytest

from lamina.data import ArrayDataset, TimeSeriesDataset, ar_process, seasonal_series, sliding_windows
from lamina.errors import ShapeError


@pytest.mark.parametrize("shape", [(50,), (50, 3)])
@pytest.mark.parametrize("length, horizon, stride", [(8, 3, 1), (5, 5, 3), (20, 1, 7)])
def test_windows_equal_an_explicit_loop_and_are_views(shape, length, horizon, stride):
    series = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    x, y = sliding_windows(series, length, horizon, stride)
    starts = range(0, shape[0] - length - horizon + 1, stride)
    np.testing.assert_array_equal(x, np.stack([series[s:s + length] for s in starts]))
    np.testing.assert_array_equal(y, np.stack([series[s + length:s + length + horizon] for s in starts]))
    assert x.shape == (len(starts), length, *shape[1:]) and y.shape == (len(starts), horizon, *shape[1:])
    for windows in (x, y):
        assert np.shares_memory(windows, series)
        assert not windows.flags.writeable
    series[0], series[length] = -1.0, -2.0      # a change of the series shows through the views
    assert x[0, 0, ...].min() == -1.0 and y[0, 0, ...].min() == -2.0


def test_windows_refuse_short_series_and_bad_arguments():
    with pytest.raises(ShapeError, match=r"sliding_windows.*10 steps.*8 \+ 3"):
        sliding_windows(np.zeros(10), 8, 3)
    with pytest.raises(ShapeError, match="sliding_windows"):
        sliding_windows(np.zeros((4, 5, 6)), 2, 1)
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(np.zeros(10), 2, 1, stride=0)


def test_splits_do_not_leak():
    """Targets of each span lie inside it, in time order; every input precedes its targets;
    the training windows see nothing after the training span."""
    series = np.arange(200, dtype=np.float64)[:, None] * np.array([1.0, -2.0])
    data = TimeSeriesDataset(series, input_length=12, horizon=4, splits=(0.6, 0.2), scale=False)
    assert data.bounds == {"train": (0, 120), "val": (120, 160), "test": (160, 200)}
    for split, (start, end) in data.bounds.items():
        x, y = data.windows(split)
        steps = y[..., 0]                    # the value is the time index on channel 0
        assert steps.min() >= start and steps.max() < end
        np.testing.assert_array_equal(steps, data.target_steps(split))
        assert np.all(x[..., 0].max(axis=1) < steps.min(axis=1))
        if split == "train":
            assert x[..., 0].max() < end
        # every target step of the span after the first input length is predicted (stride 1)
        assert steps[0, 0] == max(start, 12) and steps[-1, -1] == end - 1
    dataset = data.split("val")
    assert isinstance(dataset, ArrayDataset) and len(dataset) == 40 - 4 + 1


def test_scaler_is_fitted_on_the_training_span_only():
    rng = np.random.default_rng(0)
    series = np.concatenate([rng.normal(5.0, 2.0, (300, 2)), rng.normal(50.0, 9.0, (100, 2))])
    data = TimeSeriesDataset(series, 10, 5, splits=(0.75, 0.1))
    train = data.span("train")
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(data.scaler.state_dict()["mean"], series[:300].mean(axis=0), rtol=1e-6)
    assert data.span("test").mean() > 10          # the later level is not averaged in
    x, y = data.windows("test")
    np.testing.assert_allclose(data.inverse_transform(y), series[340:][np.arange(len(y))[:, None] + np.arange(5)],
                               rtol=1e-5)


def test_one_dimensional_series_get_one_channel():
    data = TimeSeriesDataset(np.sin(np.arange(100.0)), 10, 2)
    x, y = data.windows("train")
    assert x.shape[1:] == (10, 1) and y.shape[1:] == (2, 1) and x.dtype == np.float32
    with pytest.raises(ValueError, match="splits"):
        TimeSeriesDataset(np.zeros(100), 10, 2, splits=(0.8, 0.3))
    with pytest.raises(ValueError, match="split must be one of"):
        data.windows("validation")


def test_seasonal_series_has_its_periods_and_trend():
    series = seasonal_series(480, periods=(24, 8), amplitudes=(1.0, 0.5), trend=0.01, noise=0.0, seed=3)
    detrended = series - 0.01 * np.arange(480)
    np.testing.assert_allclose(detrended[24:], detrended[:-24], atol=1e-5)     # 8 divides 24
    spectrum = np.abs(np.fft.rfft(detrended))
    assert set(np.argsort(spectrum)[-2:]) == {480 // 24, 480 // 8}
    many = seasonal_series(100, channels=3, seed=0)
    assert many.shape == (100, 3) and not np.allclose(many[:, 0], many[:, 1])
    np.testing.assert_array_equal(seasonal_series(50, seed=1), seasonal_series(50, seed=1))


def test_ar_process_recovers_its_coefficients():
    phi = (0.6, -0.3)
    y = ar_process(5000, phi, noise=0.5, seed=0).astype(np.float64)
    design = np.stack([y[1:-1], y[:-2]], axis=1)
    estimate, *_ = np.linalg.lstsq(design, y[2:], rcond=None)
    np.testing.assert_allclose(estimate, phi, atol=0.03)
    assert abs(np.std(y[2:] - design @ estimate) - 0.5) < 0.02
    with pytest.raises(ValueError, match="non-stationary"):
        ar_process(10, (1.1,))
