"""HistogramObserver against torch.ao.quantization's: the running histogram and its range after
each of several batches (growing the range and not), and the scale and zero point its search
chooses, over random data of several shapes and several settings; its pieces (histc, linspace)
against torch's; the search on a case worked by hand; state, config and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao import quantization as tq

import lamina
from lamina.nn.histogram_observer import HistogramObserver, histc, linspace32, quantization_error
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.observers import FakeQuantize

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def data(kind: str, rng, step: int) -> np.ndarray:
    n = int(rng.integers(50, 800))
    if kind == "normal":
        x = rng.standard_normal(n) * (1 + step) + 0.5 * step
    elif kind == "heavy_tails":
        x = rng.standard_t(2.0, n) * 0.1 * (1 + step)
    elif kind == "outlier":
        x = np.concatenate([rng.standard_normal(n), [25.0 * (step + 1)]])
    else:
        x = rng.exponential(size=n) * (step + 1)
    return x.astype(np.float32)


SETTINGS = [({}, {}), ({"reduce_range": True}, {"reduce_range": True}),
            ({"dtype": "int8", "qscheme": "per_tensor_symmetric"},
             {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}),
            ({"quant_min": 0, "quant_max": 15, "bins": 256}, {"quant_min": 0, "quant_max": 15, "bins": 256}),
            ({"dtype": "int8", "bins": 500}, {"dtype": torch.qint8, "bins": 500})]


@pytest.mark.parametrize("kind", ["normal", "heavy_tails", "outlier", "exponential"])
@pytest.mark.parametrize("ours_kw, theirs_kw", SETTINGS)
def test_histogram_and_qparams_equal_torch_batch_after_batch(kind, ours_kw, theirs_kw):
    rng = np.random.default_rng(len(kind) + 7 * len(ours_kw))
    ours, theirs = HistogramObserver(**ours_kw), tq.HistogramObserver(**theirs_kw)
    np.testing.assert_array_equal(np.asarray(ours.calculate_qparams()[0]), 1.0)
    for step in range(3):
        x = data(kind, rng, step)
        ours(lamina.tensor(x))
        theirs(torch.tensor(x))
        np.testing.assert_array_equal(ours.histogram, theirs.histogram.numpy())
        assert (float(ours.min_val), float(ours.max_val)) == (theirs.min_val.item(), theirs.max_val.item())
        scale, zero_point = ours.calculate_qparams()
        expected_scale, expected_zero_point = theirs.calculate_qparams()
        assert float(scale) == expected_scale.item() and int(zero_point) == expected_zero_point.item()


def test_a_batch_inside_the_range_adds_its_counts_and_constants_are_counted_as_torch():
    ours, theirs = HistogramObserver(bins=16), tq.HistogramObserver(bins=16)
    for x in ([2.0, 2.0, 2.0], [2.0], [-1.0, 3.5, 0.25], [0.0, 1.0, 3.0]):       # constant, then wider, then inside
        x = np.asarray(x, np.float32)
        ours(x)
        theirs(torch.tensor(x))
        np.testing.assert_array_equal(ours.histogram, theirs.histogram.numpy())
    assert ours.histogram.sum() == 10
    (scale, zero_point), (expected_scale, expected_zero_point) = ours.calculate_qparams(), theirs.calculate_qparams()
    assert (float(scale), int(zero_point)) == (expected_scale.item(), expected_zero_point.item())


def test_infinities_are_left_out():
    observer = HistogramObserver(bins=8)
    observer(np.array([np.inf, -np.inf], np.float32))
    assert float(observer.min_val) == np.inf                           # nothing finite: nothing observed
    observer(np.array([1.0, np.inf, 3.0], np.float32))
    assert (float(observer.min_val), float(observer.max_val), observer.histogram.sum()) == (1.0, 3.0, 2.0)


def test_histc_and_linspace_equal_torchs_bit_for_bit():
    rng = np.random.default_rng(4)
    for bins in (7, 2048):
        x = (rng.standard_normal(3000) * 5).astype(np.float32)
        low, high = np.float32(x.min() + 1), np.float32(x.max())                   # values outside are dropped
        np.testing.assert_array_equal(histc(x, bins, low, high),
                                      torch.histc(torch.tensor(x), bins, float(low), float(high)).numpy())
        start, end = np.float32(rng.normal()), np.float32(rng.normal() + 4)
        np.testing.assert_array_equal(linspace32(start, end, bins * 16 + 1),
                                      torch.linspace(float(start), float(end), bins * 16 + 1).numpy())


@pytest.mark.parametrize("dtype, torch_dtype", [("uint8", torch.quint8), ("int8", torch.qint8)])
def test_quantization_error_of_each_trimming_equals_torchs(dtype, torch_dtype):
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(size=400), rng.uniform(-6, 9, 20)]).astype(np.float32)
    ours, theirs = HistogramObserver(bins=300, dtype=dtype), tq.HistogramObserver(bins=300, dtype=torch_dtype)
    ours(x)
    theirs(torch.tensor(x))
    for start, end in [(0, 299), (3, 299), (0, 250), (40, 180), (150, 151), (299, 299)]:
        expected = theirs._compute_quantization_error(start, end)
        actual = quantization_error(ours.histogram, float(ours.min_val), float(ours.max_val), start, end, ours.levels)
        assert actual == pytest.approx(expected, rel=1e-5)


def test_quantization_error_of_a_uniform_histogram_is_the_uniform_rounding_error():
    # N values spread evenly over [0, 256) quantized to 256 levels of width 1: N / 12
    histogram = np.full(512, 4.0, np.float32)
    assert quantization_error(histogram, 0.0, 256.0, 0, 511, 256) == pytest.approx(2048 / 12, rel=1e-5)
    # half the bins as the range: levels of width 1/2 inside, the rest clipped to the end levels
    inside = 1024 / 12 / 4
    clipped = 2 * 4 / 0.5 * sum(((k + 1) * 0.5 + 0.25) ** 3 - (k * 0.5 + 0.25) ** 3 for k in range(128)) / 3
    assert quantization_error(histogram, 0.0, 256.0, 128, 383, 256) == pytest.approx(inside + clipped, rel=1e-4)


def test_a_uniform_range_is_kept_whole():
    observer = HistogramObserver()
    observer(np.random.default_rng(0).uniform(-1, 1, 5000).astype(np.float32))
    np.testing.assert_allclose(float(observer.calculate_qparams()[0]), 2 / 255, rtol=0.02)


def test_fake_quantize_with_a_histogram_observer_equals_torchs():
    ours = FakeQuantize(HistogramObserver(bins=128))
    theirs = tq.FakeQuantize(observer=tq.HistogramObserver, bins=128, quant_min=0, quant_max=255)
    rng = np.random.default_rng(5)
    for step in range(3):
        x = np.concatenate([np.linspace(0, 1 + step, 50), rng.normal(size=20)]).astype(np.float32)
        np.testing.assert_array_equal(ours(lamina.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy())
        np.testing.assert_array_equal(ours.scale.reshape(-1), theirs.scale.numpy())
    assert float(ours.scale) * (255 - int(ours.zero_point)) < 3       # the search trimmed the top (3 unreachable)


def test_state_and_config_round_trip():
    observer = HistogramObserver(bins=64, dtype="int8", reduce_range=True)
    observer(np.linspace(-2, 5, 300, dtype=np.float32))
    rebuilt = layer_from_config(layer_to_config(observer))
    assert (rebuilt.bins, rebuilt.quant_min, rebuilt.quant_max) == (64, -64, 63)
    rebuilt.load_state_dict(observer.state_dict())
    np.testing.assert_array_equal(rebuilt.calculate_qparams()[0], observer.calculate_qparams()[0])
    observer.reset_min_max_vals()
    assert observer.histogram.sum() == 0 and float(observer.calculate_qparams()[0]) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"bins": 0}, "bins must be a positive int"), ({"bins": 2.5}, "bins must be a positive int"),
    ({"qscheme": "per_channel_affine"}, "qscheme must be one of"),
    ({"qscheme": "per_tensor_symmetric", "reduce_range": True}, "symmetric uint8"),
    ({"quant_min": 0, "quant_max": 300}, "inside the uint8 range"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=f"HistogramObserver: .*{message}"):
        HistogramObserver(**kwargs)


def test_histc_on_a_range_whose_bin_product_overflows_float32_counts_as_torch_in_float64():
    x = np.array([-1e35, 1e35, 0.5e35, -0.25e35, 3e34], np.float32)
    expected = torch.histc(torch.tensor(x, dtype=torch.float64), 2048, float(x.min()), float(x.max())).numpy()
    np.testing.assert_array_equal(histc(x, 2048, x.min(), x.max()), expected)
    whole = np.array([-3e38, 3e38, 1.0], np.float32)                             # max - min itself overflows
    np.testing.assert_array_equal(histc(whole, 8, whole.min(), whole.max()), [1, 0, 0, 0, 1, 0, 0, 1])


@pytest.mark.parametrize("values", [[-1e35, 1e35], [-1e30, 1e30, 0.5e30], [2e36, -3e35, 7e35]])
def test_a_huge_finite_range_is_observed_as_torch(values):
    # torch's float32 histc overflows here; fed float64 its histogram is the right one
    x = np.array(values, np.float32)
    ours, theirs = HistogramObserver(), tq.HistogramObserver()
    ours(lamina.tensor(x))
    theirs(torch.tensor(x, dtype=torch.float64))
    np.testing.assert_array_equal(ours.histogram, theirs.histogram.numpy())
    assert ours.histogram.sum() == x.size


def test_the_range_chosen_for_a_huge_finite_range_is_torchs():
    x = np.array([-1e35, 1e35], np.float32)
    ours, theirs = HistogramObserver(), tq.HistogramObserver()
    ours(lamina.tensor(x))
    theirs(torch.tensor(x))
    (scale, zero_point), (expected_scale, expected_zero_point) = ours.calculate_qparams(), theirs.calculate_qparams()
    assert (float(scale), int(zero_point)) == (expected_scale.item(), expected_zero_point.item())    # 3.92e32, 255


def test_an_input_holding_nan_is_refused_and_changes_nothing():
    observer = HistogramObserver(bins=8, name="h")
    with pytest.raises(ValueError, match=r"HistogramObserver 'h': the input holds NaN.*1 of 3 values"):
        observer(np.array([1.0, np.nan, 2.0], np.float32))
    assert float(observer.min_val) == np.inf and observer.histogram.sum() == 0
    observer(np.array([1.0, 3.0], np.float32))
    with pytest.raises(ValueError, match="holds NaN"):
        observer(np.array([np.nan, 0.0], np.float32))
    assert (float(observer.min_val), float(observer.max_val), observer.histogram.sum()) == (1.0, 3.0, 2.0)
    with pytest.raises(RuntimeError, match="not finite"):                             # torch refuses it too
        tq.HistogramObserver()(torch.tensor([1.0, float("nan")]))
