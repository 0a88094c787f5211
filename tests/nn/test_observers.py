"""Observers against torch.ao.quantization's: the integer ranges (reduce_range, ranges of one's
own), scale and zero point after every batch of several, the moving-average per-channel
observer's running ranges, the fixed-parameter and pass-through observers, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao import quantization as tq

import lamina
from helpers import randn
from lamina.errors import ShapeError
from lamina.nn import observers
from lamina.nn.histogram_observer import default_histogram_fake_quant, default_histogram_observer
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.observers import (
    FakeQuantize,
    FixedQParamsObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    NoopObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TORCH_DTYPES = {"uint8": torch.quint8, "int8": torch.qint8}


def both(dtype, scheme, quant_min, quant_max, reduce_range, per_channel=False):
    """Keyword arguments for lamina's observer and torch's."""
    kind = "per_channel" if per_channel else "per_tensor"
    ours = {"dtype": dtype, "qscheme": f"{kind}_{scheme}", "quant_min": quant_min, "quant_max": quant_max,
            "reduce_range": reduce_range}
    theirs = {"dtype": TORCH_DTYPES[dtype], "qscheme": getattr(torch, f"{kind}_{scheme}"), "quant_min": quant_min,
              "quant_max": quant_max, "reduce_range": reduce_range}
    return ours, theirs


def batches(*shape, count=4):
    return [(randn(*shape, seed=30 + k) * (1 + 2 * k) + 0.4 * k - 0.3).astype(np.float32) for k in range(count)]


def assert_same_qparams(ours, theirs):
    scale, zero_point = ours.calculate_qparams()
    expected_scale, expected_zero_point = theirs.calculate_qparams()
    np.testing.assert_array_equal(np.asarray(scale, np.float32).reshape(-1), expected_scale.numpy().reshape(-1))
    np.testing.assert_array_equal(np.asarray(zero_point).reshape(-1), expected_zero_point.numpy().reshape(-1))


SETTINGS = [("uint8", "affine", None, None, True), ("uint8", "affine", 0, 15, True),
            ("int8", "affine", None, None, True), ("int8", "symmetric", None, None, True),
            ("int8", "symmetric", -8, 7, True), ("int8", "affine", -7, 12, True), ("uint8", "symmetric", 0, 31, False),
            ("int8", "affine", -3, 60, False)]


@pytest.mark.parametrize("dtype, scheme, quant_min, quant_max, reduce_range", SETTINGS)
def test_per_tensor_observers_with_reduce_range_equal_torch_batch_after_batch(dtype, scheme, quant_min, quant_max,
                                                                             reduce_range):
    ours_kw, theirs_kw = both(dtype, scheme, quant_min, quant_max, reduce_range)
    pairs = [(MinMaxObserver(**ours_kw), tq.MinMaxObserver(**theirs_kw)),
             (MovingAverageMinMaxObserver(0.25, **ours_kw), tq.MovingAverageMinMaxObserver(0.25, **theirs_kw))]
    for ours, theirs in pairs:
        assert (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max)
        for batch in batches(12, 5):
            ours(batch)
            theirs(torch.tensor(batch))
            np.testing.assert_array_equal(ours.min_val, theirs.min_val.numpy())
            np.testing.assert_array_equal(ours.max_val, theirs.max_val.numpy())
            assert_same_qparams(ours, theirs)


def test_reduce_range_takes_one_bit_less_as_torch():
    assert (MinMaxObserver(reduce_range=True).quant_min, MinMaxObserver(reduce_range=True).quant_max) == (0, 127)
    observer = MinMaxObserver("int8", reduce_range=True)
    assert (observer.quant_min, observer.quant_max) == (-64, 63)
    observer = PerChannelMinMaxObserver(0, "int8", quant_min=-7, quant_max=9, reduce_range=True)
    assert (observer.quant_min, observer.quant_max) == (-4, 4)            # -7 // 2, 9 // 2
    x = np.array([-1.0, 3.0], np.float32)
    full, reduced = MinMaxObserver(), MinMaxObserver(reduce_range=True)
    full(x)
    reduced(x)
    np.testing.assert_allclose(reduced.calculate_qparams()[0], 4 / 127, rtol=1e-6)
    np.testing.assert_allclose(full.calculate_qparams()[0], 4 / 255, rtol=1e-6)


@pytest.mark.parametrize("ch_axis", [0, 2, -1])
@pytest.mark.parametrize("dtype, scheme, quant_min, quant_max, reduce_range",
                         [("int8", "symmetric", None, None, False), ("int8", "symmetric", None, None, True),
                          ("uint8", "affine", None, None, True), ("uint8", "affine", 0, 15, False),
                          ("int8", "affine", -8, 7, True)])
def test_per_channel_observers_equal_torch_batch_after_batch(ch_axis, dtype, scheme, quant_min, quant_max,
                                                             reduce_range):
    ours_kw, theirs_kw = both(dtype, scheme, quant_min, quant_max, reduce_range, per_channel=True)
    pairs = [(PerChannelMinMaxObserver(ch_axis, **ours_kw), tq.PerChannelMinMaxObserver(ch_axis, **theirs_kw)),
             (MovingAveragePerChannelMinMaxObserver(0.3, ch_axis, **ours_kw),
              tq.MovingAveragePerChannelMinMaxObserver(0.3, ch_axis, **theirs_kw))]
    for ours, theirs in pairs:
        for batch in batches(3, 4, 5, count=3):
            ours(batch)
            theirs(torch.tensor(batch))
            np.testing.assert_array_equal(ours.min_val, theirs.min_val.numpy())
            np.testing.assert_array_equal(ours.max_val, theirs.max_val.numpy())
            assert_same_qparams(ours, theirs)


def test_moving_average_per_channel_observer_averages_each_channel():
    observer = MovingAveragePerChannelMinMaxObserver(0.5, ch_axis=1)
    observer(np.array([[0.0, -2.0], [4.0, 1.0]], np.float32))
    observer(np.array([[2.0, -4.0], [2.0, 3.0]], np.float32))
    np.testing.assert_array_equal(observer.min_val, [1.0, -3.0])      # 0 + (2 - 0) / 2, -2 + (-4 + 2) / 2
    np.testing.assert_array_equal(observer.max_val, [3.0, 2.0])
    rebuilt = layer_from_config(layer_to_config(observer))
    rebuilt.load_state_dict(observer.state_dict())
    assert rebuilt.averaging_constant == 0.5
    np.testing.assert_array_equal(rebuilt.calculate_qparams()[0], observer.calculate_qparams()[0])
    with pytest.raises(ShapeError, match="has 3 channels along axis 1; earlier inputs had 2"):
        observer(np.ones((2, 3), np.float32))


def test_reduce_range_survives_the_config():
    observer = MinMaxObserver("int8", quant_min=-8, quant_max=7, reduce_range=True)
    rebuilt = layer_from_config(layer_to_config(observer))
    assert (rebuilt.quant_min, rebuilt.quant_max, rebuilt.reduce_range) == (-4, 3, True)
    assert "reduce_range=True" in repr(rebuilt)


def test_fixed_qparams_observer_fake_quantizes_as_torch():
    ours = FakeQuantize(FixedQParamsObserver(1 / 256, 0))
    theirs = tq.FixedQParamsFakeQuantize(observer=tq.FixedQParamsObserver.with_args(scale=1 / 256, zero_point=0))
    for batch in batches(6, 7, count=2):
        x = 1 / (1 + np.exp(-3 * batch))
        np.testing.assert_array_equal(ours(lamina.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy())
    assert_same_qparams(ours.observer, theirs.activation_post_process)
    signed = FixedQParamsObserver(2 / 256, 0, "int8", "per_tensor_symmetric")
    assert (float(signed.calculate_qparams()[0]), int(signed.calculate_qparams()[1])) == (2 / 256, 0)
    assert layer_from_config(layer_to_config(signed)).calculate_qparams()[0] == np.float32(2 / 256)


@pytest.mark.parametrize("observer", [NoopObserver(), PlaceholderObserver(is_dynamic=True)])
def test_pass_through_observers_are_the_identity_without_qparams(observer):
    x = lamina.tensor(randn(3, 4))
    assert observer(x) is x
    with pytest.raises(RuntimeError, match="calculate_qparams is not defined"):
        observer.calculate_qparams()
    assert layer_to_config(layer_from_config(layer_to_config(observer))) == layer_to_config(observer)


@pytest.mark.parametrize("make, message", [
    (lambda: MinMaxObserver(qscheme="per_tensor_symmetric", reduce_range=True), "symmetric uint8"),
    (lambda: PerChannelMinMaxObserver(0, "uint8", "per_channel_symmetric", reduce_range=True), "symmetric uint8"),
    (lambda: MinMaxObserver(reduce_range="yes"), "reduce_range must be a bool"),
    (lambda: MinMaxObserver(eps=0.0), "eps must be a positive finite number"),
    (lambda: MinMaxObserver(eps=float("nan")), "eps must be a positive finite number"),
    (lambda: MinMaxObserver(quant_min=0), "give both quant_min and quant_max"),
    (lambda: MinMaxObserver("int8", quant_min=2, quant_max=9), "quant_min <= 0 <= quant_max"),
    (lambda: MinMaxObserver("int8", quant_min=0, quant_max=0), "quant_min < quant_max"),
    (lambda: MinMaxObserver("int8", quant_min=-1.0, quant_max=7), "must be ints"),
    (lambda: MinMaxObserver("int8", quant_min=0, quant_max=255), r"inside the int8 range \[-128, 127\]"),
    (lambda: MovingAveragePerChannelMinMaxObserver(1.5), "averaging_constant must be in"),
    (lambda: MovingAveragePerChannelMinMaxObserver(0.1, qscheme="per_tensor_affine"), "qscheme must be one of"),
    (lambda: PerChannelMinMaxObserver(1.0), "ch_axis must be an int"),
    (lambda: FixedQParamsObserver(0.0, 0), "scale must be a positive finite number"),
    (lambda: FixedQParamsObserver(0.1, 300), r"zero_point must be an int in \[quant_min, quant_max\] = \[0, 255\]"),
    (lambda: NoopObserver(np.float16), "dtype must be a str"),
])
def test_bad_arguments_are_refused_with_a_clear_message(make, message):
    with pytest.raises(ValueError, match=message):
        make()


DEFAULT_OBSERVERS = ["default_observer", "default_weight_observer", "default_per_channel_weight_observer",
                     "weight_observer_range_neg_127_to_127", "per_channel_weight_observer_range_neg_127_to_127"]


@pytest.mark.parametrize("name", DEFAULT_OBSERVERS + ["default_histogram_observer"])
def test_default_observers_equal_torchs(name):
    ours = default_histogram_observer() if name == "default_histogram_observer" else getattr(observers, name)()
    theirs = getattr(tq, name)()
    assert (ours.quant_min, ours.quant_max, ours.eps) == (theirs.quant_min, theirs.quant_max, theirs.eps.item())
    for batch in batches(6, 5, count=3):
        ours(batch)
        theirs(torch.tensor(batch))
        assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("name", ["default_fake_quant", "default_weight_fake_quant",
                                  "default_per_channel_weight_fake_quant", "default_histogram_fake_quant"])
def test_default_fake_quantizations_equal_torchs(name):
    ours = default_histogram_fake_quant() if name == "default_histogram_fake_quant" else getattr(observers, name)()
    theirs = getattr(tq, name)()
    assert (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max)
    for batch in batches(6, 5, count=3):
        np.testing.assert_array_equal(ours(lamina.tensor(batch)).numpy(), theirs(torch.tensor(batch)).numpy())
        np.testing.assert_array_equal(np.reshape(ours.scale, -1), theirs.scale.numpy())
        assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("name, x", [("default_fixed_qparams_range_0to1_observer", np.linspace(-0.1, 1.1, 40)),
                                     ("default_fixed_qparams_range_neg1to1_observer", np.linspace(-1.2, 1.2, 40))])
def test_default_fixed_qparams_observers_equal_torchs(name, x):
    ours = FakeQuantize(getattr(observers, name)())
    theirs = tq.FixedQParamsFakeQuantize(observer=getattr(tq, name))
    x = x.astype(np.float32)
    np.testing.assert_array_equal(ours(lamina.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy())
    assert_same_qparams(ours.observer, theirs.activation_post_process)


@pytest.mark.parametrize("make", [lambda: MovingAverageMinMaxObserver(averaging_constant=1.0),
                                  lambda: MovingAveragePerChannelMinMaxObserver(1.0, 0, "uint8", "per_channel_affine")])
def test_moving_average_range_collapsing_to_one_value_stays_ordered(make):
    # -5 + (5.26 - (-5)) rounds to one ulp below -5 in float32: the max would fall under the min
    observer = make()
    for x in ([-2.065694808959961, 5.260152339935303], [-5.0, -5.0]):
        x = np.array(x, np.float32)
        observer(lamina.tensor(x[None] if observer.per_channel else x))             # one channel
    assert np.all(np.asarray(observer.min_val) <= np.asarray(observer.max_val))
    reference = tq.MinMaxObserver()
    reference(torch.tensor([-5.0, -5.0]))
    scale, zero_point = observer.calculate_qparams()
    expected_scale, expected_zero_point = reference.calculate_qparams()
    assert (np.asarray(scale).reshape(-1)[0], np.asarray(zero_point).reshape(-1)[0]) == \
        (expected_scale.item(), expected_zero_point.item())


def test_moving_average_fake_quantize_after_a_constant_batch_is_not_the_zero_map():
    fake_quant = FakeQuantize(MovingAverageMinMaxObserver(averaging_constant=1.0))
    fake_quant(lamina.tensor(np.array([-2.065694808959961, 5.260152339935303], np.float32)))
    y = fake_quant(lamina.tensor(np.array([-5.0, -5.0], np.float32)))
    np.testing.assert_allclose(y.numpy(), [-5.0, -5.0], rtol=1e-6)


@pytest.mark.parametrize("dtype, scheme", [("int8", "symmetric"), ("uint8", "affine"), ("int8", "affine")])
def test_a_nan_channel_gives_a_nan_scale_for_that_channel_only_as_torch(dtype, scheme):
    x = np.array([[1.0, -2.0, 0.5], [np.nan, 3.0, 1.0], [0.25, -0.5, 4.0]], np.float32)
    ours_kw, theirs_kw = both(dtype, scheme, None, None, False, per_channel=True)
    ours, theirs = PerChannelMinMaxObserver(0, **ours_kw), tq.PerChannelMinMaxObserver(0, **theirs_kw)
    ours(lamina.tensor(x))
    theirs(torch.tensor(x))
    scale, zero_point = ours.calculate_qparams()
    expected_scale, expected_zero_point = theirs.calculate_qparams()
    assert scale.shape == (3,)
    np.testing.assert_array_equal(scale, expected_scale.numpy())                   # NaN in channel 1 alone
    np.testing.assert_array_equal(zero_point[[0, 2]], expected_zero_point.numpy()[[0, 2]])


def test_fake_quantize_over_a_nan_channel_names_the_channel():
    fake_quant = FakeQuantize(PerChannelMinMaxObserver(1))
    x = np.array([[1.0, -2.0, np.nan], [0.5, 3.0, 1.0]], np.float32)
    message = r"FakeQuantize: PerChannelMinMaxObserver saw NaN in channels \[2\] along axis 1"
    with pytest.raises(ValueError, match=message):
        fake_quant(lamina.tensor(x))
    with pytest.raises(ValueError, match=r"saw NaN in the range"):
        FakeQuantize(MinMaxObserver())(lamina.tensor(x))


@pytest.mark.parametrize("name", ["MinMaxObserver", "MovingAverageMinMaxObserver"])
def test_a_nan_input_gives_a_nan_scale_as_torch_not_the_defaults(name):
    ours, theirs = getattr(observers, name)(), getattr(tq, name)()
    for x in (np.array([np.nan, 1.0], np.float32), np.array([-1.0, 5.0], np.float32)):
        ours(lamina.tensor(x))
        theirs(torch.tensor(x))
    scale, zero_point = ours.calculate_qparams()
    assert np.isnan(scale) and np.isnan(theirs.calculate_qparams()[0].item())
    assert int(zero_point) == theirs.calculate_qparams()[1].item()


def test_a_range_with_min_above_max_is_refused():
    observer = MinMaxObserver(name="mm")
    observer.load_state_dict({"min_val": np.float32(2.0), "max_val": np.float32(1.0)})
    with pytest.raises(ValueError, match=r"MinMaxObserver 'mm': the observed range has min > max"):
        observer.calculate_qparams()


def _observer_before_its_fake_quantization():
    """The same observer reachable first on its own, then inside its fake quantization."""
    observer = PerChannelMinMaxObserver(1)
    return lamina.nn.Sequential(observer, FakeQuantize(observer))


@pytest.mark.parametrize("make", [lambda: PerChannelMinMaxObserver(1),
                                  lambda: MovingAveragePerChannelMinMaxObserver(0.5, 1, "uint8", "per_channel_affine"),
                                  lambda: FakeQuantize(PerChannelMinMaxObserver(1)),
                                  lambda: lamina.nn.Sequential(FakeQuantize(PerChannelMinMaxObserver(1)),
                                                               lamina.nn.Identity()),
                                  lambda: lamina.nn.ModuleList([lamina.nn.Sequential(PerChannelMinMaxObserver(1))]),
                                  _observer_before_its_fake_quantization])
def test_a_fresh_per_channel_observer_loads_a_state_of_any_channel_count(make):
    """Alone or anywhere inside a larger module: the model's own load fits the fresh buffers."""
    x = randn(4, 3, seed=5).astype(np.float32)
    trained, fresh = make(), make()
    (trained[0] if isinstance(trained, lamina.nn.ModuleList) else trained)(lamina.tensor(x))
    assert fresh.load_state_dict(trained.state_dict()) == ([], [])
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)
        assert fresh.state_dict()[key].dtype == value.dtype
    if isinstance(fresh, (lamina.nn.Sequential, lamina.nn.ModuleList)):
        return
    for a, b in zip(fresh.calculate_qparams(), trained.calculate_qparams()):
        np.testing.assert_array_equal(a, b)
    if isinstance(fresh, FakeQuantize):
        fresh.eval()
        np.testing.assert_array_equal(fresh(lamina.tensor(x)).numpy(), trained.eval()(lamina.tensor(x)).numpy())


def test_a_refused_per_channel_state_leaves_the_observer_fresh():
    trained = FakeQuantize(PerChannelMinMaxObserver(0))
    trained(lamina.tensor(randn(3, 2, seed=1).astype(np.float32)))
    state = dict(trained.state_dict())
    del state["zero_point"]
    fresh = FakeQuantize(PerChannelMinMaxObserver(0))
    with pytest.raises(KeyError, match="missing keys"):
        fresh.load_state_dict(state)
    assert fresh.scale.shape == () and fresh.observer.min_val.shape == (0,)
    inside = lamina.nn.Sequential(FakeQuantize(PerChannelMinMaxObserver(0)))
    with pytest.raises(KeyError, match="missing keys"):
        inside.load_state_dict({f"0.{key}": value for key, value in state.items()})
    assert inside[0].scale.shape == () and inside[0].observer.min_val.shape == (0,)
    observed = PerChannelMinMaxObserver(0)
    observed(lamina.tensor(randn(2, 2, seed=2).astype(np.float32)))
    with pytest.raises(ShapeError, match=r"'min_val' has shape \(3,\) in the state dict but \(2,\)"):
        observed.load_state_dict(trained.observer.state_dict())
