"""TimesNet and iTransformer: FFT period discovery against NumPy's rfft, the exact 1-D <-> 2-D fold,
a TimesBlock against a float64 torch rewrite of the paper's code (values and gradients), the
permutation equivariance of iTransformer over the variates, float64 gradient checks of tiny
models, saving, and learning: TimesNet a multi-seasonal multivariate series better than the
seasonal naive forecast, iTransformer a series whose second channel follows the first better
than the best per-channel linear forecaster."""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from forecast_series import (
    check_tiny_model_gradients,
    forecast_mae,
    forecast_windows,
    saved_and_loaded_outputs,
    train_forecaster,
)

import lamina
from helpers import compare_with_torch, randn, run_readme_section
from lamina import nn
from lamina.data import seasonal_series
from lamina.models import ITransformer, TimesBlock, TimesNet, fft_periods, fold_periods, unfold_periods
from lamina.train import mae, seasonal_naive_forecast


# -- period discovery and the 2-D fold ---------------------------------------------------------------
def numpy_periods(x, k):
    amplitudes = np.abs(np.fft.rfft(x, axis=1)).mean(axis=-1)       # (batch, T // 2 + 1)
    score = amplitudes.mean(axis=0)
    score[0] = 0.0
    frequencies = np.argsort(-score)[:k]
    return np.array([math.ceil(x.shape[1] / f) for f in frequencies]), amplitudes[:, frequencies]


@pytest.mark.parametrize("length, k", [(20, 3), (23, 5), (9, 1)])
def test_fft_periods_equal_a_numpy_rfft_reference(length, k):
    x = randn(3, length, 4, seed=length)
    periods, amplitudes = fft_periods(lamina.tensor(x, dtype=np.float64), k)
    expected_periods, expected_amplitudes = numpy_periods(x, k)
    np.testing.assert_array_equal(periods, expected_periods)
    np.testing.assert_allclose(amplitudes.numpy(), expected_amplitudes, rtol=1e-12, atol=1e-12)


def test_fft_periods_find_the_seasons_of_a_series():
    t = np.arange(40)[None, :, None]
    x = np.broadcast_to(2.0 * np.sin(2 * np.pi * t / 8) + np.cos(2 * np.pi * t / 5) + 3.0, (2, 40, 3))
    periods, _ = fft_periods(lamina.tensor(x, dtype=np.float64), 2)
    assert periods.tolist() == [8, 5]       # the constant level (frequency 0) is no period


@pytest.mark.parametrize("period", range(1, 12))
def test_fold_and_unfold_round_trip_exactly(period):
    x = randn(2, 11, 3).astype(np.float32)
    image = fold_periods(x, period).numpy()
    rows = math.ceil(11 / period)
    assert image.shape == (2, rows, period, 3)
    flat = image.reshape(2, rows * period, 3)
    np.testing.assert_array_equal(flat[:, :11], x)                   # row r holds steps r p .. r p + p - 1
    np.testing.assert_array_equal(flat[:, 11:], 0.0)                 # the padding is zeros
    np.testing.assert_array_equal(unfold_periods(image, 11).numpy(), x)


# -- a TimesBlock against the paper's code -----------------------------------------------------------
def torch_inception(x, weights, biases):
    """Inception_Block_V1: the mean of 'same' convolutions of kernels 1, 3, 5, .. (NCHW)."""
    outputs = [tF.conv2d(x, w.permute(0, 3, 1, 2), b, padding=i) for i, (w, b) in enumerate(zip(weights, biases))]
    return torch.stack(outputs, dim=-1).mean(-1)


def torch_times_block(x, frequencies, inception_in, inception_out):
    """TimesBlock.forward of the authors' code on (B, T, N), with given frequencies and p = ceil(T / f)."""
    batch, length, channels = x.shape
    weight = torch.abs(torch.fft.rfft(x, dim=1)).mean(-1)[:, frequencies]
    results = []
    for f in frequencies:
        period = math.ceil(length / f)
        padded = (length + period - 1) // period * period
        out = torch.cat([x, x.new_zeros(batch, padded - length, channels)], dim=1)
        out = out.reshape(batch, padded // period, period, channels).permute(0, 3, 1, 2)
        out = torch_inception(tF.gelu(torch_inception(out, *inception_in)), *inception_out)
        results.append(out.permute(0, 2, 3, 1).reshape(batch, -1, channels)[:, :length])
    weight = torch.softmax(weight, dim=1)[:, None, None, :]
    return (torch.stack(results, dim=-1) * weight).sum(-1) + x


@pytest.mark.parametrize("frequencies", [(3, 1, 5), (2, 4)])
def test_times_block_matches_a_torch_rewrite(frequencies):
    block = TimesBlock(13, 3, 4, top_k=len(frequencies), num_kernels=2)
    block.to(dtype=np.float64)
    keys = [key for key, _ in block.named_parameters()]
    arrays = [randn(*p.shape, seed=i, scale=0.5) for i, (_, p) in enumerate(block.named_parameters())]

    def ours(x, *params):
        return nn.functional_call(block, dict(zip(keys, params)), x, list(frequencies))

    def theirs(x, *params):
        named = dict(zip(keys, params))
        stages = []
        for stage in ("inception_in", "inception_out"):
            weights = [named[f"{stage}.convs.{i}.weight"] for i in range(2)]
            biases = [named[f"{stage}.convs.{i}.bias"] for i in range(2)]
            stages.append((weights, biases))
        return torch_times_block(x, list(frequencies), *stages)

    compare_with_torch(ours, theirs, randn(2, 13, 3, seed=9), *arrays, dtype=np.float64)


def test_times_block_finds_its_own_periods():
    block = TimesBlock(16, 2, 3, top_k=2, num_kernels=1)
    x = randn(2, 16, 2, seed=3)
    frequencies = np.argsort(-np.abs(np.fft.rfft(x, axis=1)).mean(axis=(0, 2))[1:])[:2] + 1
    with lamina.no_grad():
        np.testing.assert_allclose(block(x).numpy(), block(x, frequencies).numpy(), rtol=1e-6)


# -- iTransformer ------------------------------------------------------------------------------------
def test_itransformer_is_equivariant_to_permuting_the_variates():
    model = ITransformer(10, 3, channels=4, d_model=8, num_heads=2, dim_feedforward=8, layers=2)
    model.eval()
    x = randn(2, 10, 4, seed=1).astype(np.float32)
    order = np.array([2, 0, 3, 1])
    with lamina.no_grad():
        y = model(x).numpy()
        np.testing.assert_allclose(model(x[:, :, order]).numpy(), y[:, :, order], rtol=1e-5, atol=1e-6)


# -- gradients, saving, errors -----------------------------------------------------------------------
TINY = {
    "timesnet": lambda: TimesNet(8, 3, channels=2, d_model=4, d_ff=3, blocks=2, top_k=2, num_kernels=2),
    "timesnet classifier": lambda: TimesNet(8, 0, channels=2, d_model=4, d_ff=3, blocks=1, top_k=2, num_kernels=2,
                                            num_classes=3),
    "itransformer": lambda: ITransformer(8, 3, channels=2, d_model=4, num_heads=2, dim_feedforward=4, layers=1),
}
# RevIN's statistics are constants to the gradient (as the papers' code): the check leaves it out
WITHOUT_REVIN = {
    **TINY,
    "timesnet": lambda: TimesNet(8, 3, channels=2, d_model=4, d_ff=3, blocks=1, top_k=2, num_kernels=2, revin=False),
    "itransformer": lambda: ITransformer(8, 3, channels=2, d_model=4, num_heads=2, dim_feedforward=4, layers=1,
                                         revin=False),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_float64_gradients_of_a_tiny_model(name):
    assert check_tiny_model_gradients(WITHOUT_REVIN[name](), randn(2, 8, 2, seed=12))


@pytest.mark.parametrize("name", sorted(TINY))
def test_saved_model_is_loaded_with_its_outputs(name, tmp_path):
    model = TINY[name]()
    y = saved_and_loaded_outputs(model, randn(3, 8, 2).astype(np.float32), tmp_path / "model.safetensors")
    assert y.shape == ((3, 3) if model.__class__ is TimesNet and model.num_classes else (3, 3, 2))


def test_input_errors():
    with pytest.raises(lamina.errors.ShapeError, match=r"TimesNet.*\(batch, 8, 2\)"):
        TINY["timesnet"]()(randn(2, 7, 2))
    with pytest.raises(lamina.errors.ShapeError, match=r"ITransformer.*\(batch, 8, 2\)"):
        TINY["itransformer"]()(randn(2, 8, 3))
    with pytest.raises(ValueError, match="top_k 5 exceeds"):
        TimesBlock(8, 2, 2, top_k=5)
    with pytest.raises(ValueError, match="horizon=0"):
        TimesNet(8, 3, num_classes=2)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ITransformer(8, 3, d_model=6, num_heads=4)


# -- learning ----------------------------------------------------------------------------------------
def test_timesnet_learns_a_multi_seasonal_series_better_than_the_seasonal_naive_forecast():
    start = time.perf_counter()
    series = seasonal_series(900, periods=(12, 8), amplitudes=(1.0, 0.6), noise=0.3, channels=3, seed=0)
    x, y, x_test, y_test = forecast_windows(series, 36, 12)
    baseline = mae(y_test, seasonal_naive_forecast(x_test, 12, 24))
    lamina.manual_seed(0)
    model = TimesNet(36, 12, channels=3, d_model=8, d_ff=8, blocks=1, top_k=2, num_kernels=2, dropout=0.0)
    score = forecast_mae(train_forecaster(model, x, y, 150, 1e-2), x_test, y_test)
    print(f"TimesNet: test MAE {score:.3f}, seasonal naive {baseline:.3f} ({time.perf_counter() - start:.1f} s)")
    assert score < 0.85 * baseline


def lagged_pair(length, lag, seed):
    """Channel 0 an AR(1) process, channel 1 channel 0 ``lag`` steps later plus a little noise."""
    rng = np.random.default_rng(seed)
    driver = np.zeros(length + lag)
    for t in range(1, length + lag):
        driver[t] = 0.8 * driver[t - 1] + rng.standard_normal()
    follower = driver[:length] + 0.1 * rng.standard_normal(length)
    return np.stack([driver[lag:], follower], axis=1).astype(np.float32)


def per_channel_linear_forecast(x, y, x_test):
    """The least-squares linear map from each channel's window to its horizon (with a bias)."""
    forecasts = []
    for c in range(x.shape[2]):
        inputs = np.concatenate([x[:, :, c], np.ones((len(x), 1))], axis=1)
        weights = np.linalg.lstsq(inputs, y[:, :, c], rcond=None)[0]
        forecasts.append(np.concatenate([x_test[:, :, c], np.ones((len(x_test), 1))], axis=1) @ weights)
    return np.stack(forecasts, axis=2)


def test_itransformer_uses_a_leading_channel_better_than_a_per_channel_linear_model():
    start = time.perf_counter()
    x, y, x_test, y_test = forecast_windows(lagged_pair(1500, 4, seed=0), 16, 4)
    linear = per_channel_linear_forecast(x, y, x_test)
    baseline = mae(y_test, linear), mae(y_test[..., 1], linear[..., 1])
    lamina.manual_seed(0)
    model = train_forecaster(ITransformer(16, 4, channels=2, d_model=32, num_heads=2, dim_feedforward=32, layers=1,
                                          dropout=0.0), x, y, 220, 3e-3)
    with lamina.no_grad():
        forecast = model(x_test).numpy()
    score, follower = mae(y_test, forecast), mae(y_test[..., 1], forecast[..., 1])
    print(f"iTransformer: test MAE {score:.3f} (follower channel {follower:.3f}), per-channel linear "
          f"{baseline[0]:.3f} ({baseline[1]:.3f}) ({time.perf_counter() - start:.1f} s)")
    # measured (OpenBLAS's own and Haswell kernels alike): 0.546 (follower 0.314) against 0.691 (0.697)
    assert follower < 0.6 * baseline[1] and score < 0.9 * baseline[0]


def test_readme_example_trains_timesnet_and_itransformer():
    printed, names = run_readme_section("TimesNet and iTransformer")
    assert printed.split() == ["(4,", "6,", "2)", "(4,", "6,", "2)"]
    assert isinstance(names["timesnet"], TimesNet) and isinstance(names["itransformer"], ITransformer)
