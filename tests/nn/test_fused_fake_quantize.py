"""FusedMovingAvgObsFakeQuantize and the default_fused_* factories against torch.ao.quantization's:
outputs, scale and zero point batch after batch, in training and in evaluation (the fused module
observes in both), the observer given as a class with its keywords or as an instance, the config
round trip and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao import quantization as tq

import lamina
from helpers import randn
from lamina.nn import observers
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.observers import (
    FusedMovingAvgObsFakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")

TORCH_DTYPES = {"uint8": torch.quint8, "int8": torch.qint8}
FACTORIES = ["default_fused_act_fake_quant", "default_fused_wt_fake_quant", "default_fused_per_channel_wt_fake_quant"]


def batches(count=4):
    return [(randn(5, 6, seed=70 + k) * (1 + k) + 0.3 * k).astype(np.float32) for k in range(count)]


def assert_same_step(ours, theirs, batch):
    # torch's fused kernel may round the scale one ulp apart from the unfused one
    np.testing.assert_allclose(ours(lamina.tensor(batch)).numpy(), theirs(torch.tensor(batch)).numpy(),
                               rtol=0, atol=1e-6 * np.abs(batch).max())
    np.testing.assert_allclose(np.reshape(ours.scale, -1), theirs.scale.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.reshape(ours.zero_point, -1), theirs.zero_point.numpy())


@pytest.mark.parametrize("name", FACTORIES)
def test_default_fused_fake_quantizations_equal_torchs_in_training_and_evaluation(name):
    ours, theirs = getattr(observers, name)(), getattr(tq, name)()
    assert (ours.quant_min, ours.quant_max, ours.per_channel) == (
        theirs.quant_min, theirs.quant_max, theirs.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine))
    for batch in batches(3):
        assert_same_step(ours, theirs, batch)
    ours.eval(), theirs.eval()
    before = np.array(ours.scale, copy=True)
    for batch in batches(5)[3:]:
        assert_same_step(ours, theirs, batch)
    assert not np.array_equal(before, ours.scale)        # it kept observing in evaluation


def test_observer_class_and_keywords_build_the_observer_as_torchs():
    ours = FusedMovingAvgObsFakeQuantize(MovingAveragePerChannelMinMaxObserver, -8, 7, averaging_constant=0.5,
                                         ch_axis=0, dtype="int8", qscheme="per_channel_affine")
    theirs = tq.FusedMovingAvgObsFakeQuantize(tq.MovingAveragePerChannelMinMaxObserver, -8, 7,
                                              averaging_constant=0.5, ch_axis=0, dtype=torch.qint8,
                                              qscheme=torch.per_channel_affine)
    assert ours.observer.averaging_constant == 0.5 and ours.observer.ch_axis == 0
    for batch in batches(3):
        assert_same_step(ours, theirs, batch)


def test_the_fused_rule_equals_torchs_on_ranges_of_every_kind():
    """Ranges across zero, on one side of it, all zero and tiny (the smallest-scale floor), for
    affine and symmetric schemes of both dtypes, ranges of one's own and reduce_range."""
    rng = np.random.default_rng(5)
    settings = [("uint8", "affine", 0, 255, False), ("int8", "symmetric", -128, 127, False),
                ("uint8", "symmetric", 0, 255, False), ("int8", "affine", -7, 12, False),
                ("int8", "symmetric", -8, 7, True), ("uint8", "affine", 0, 31, True)]
    for dtype, scheme, quant_min, quant_max, reduce_range in settings:
        for kind in range(6):
            x = (rng.standard_normal(8) * 10.0 ** rng.uniform(-7, 3)).astype(np.float32)
            x = [x, np.abs(x), -np.abs(x), np.zeros(8, np.float32), x + 3, x * 1e-6][kind]
            ours = FusedMovingAvgObsFakeQuantize(quant_min=quant_min, quant_max=quant_max, dtype=dtype,
                                                 qscheme=f"per_tensor_{scheme}", reduce_range=reduce_range)
            theirs = tq.FusedMovingAvgObsFakeQuantize(quant_min=quant_min, quant_max=quant_max,
                                                      dtype=TORCH_DTYPES[dtype],
                                                      qscheme=getattr(torch, f"per_tensor_{scheme}"),
                                                      reduce_range=reduce_range)
            ours(lamina.tensor(x)), theirs(torch.tensor(x))
            np.testing.assert_array_equal(np.reshape(ours.scale, -1), theirs.scale.numpy())
            np.testing.assert_array_equal(np.reshape(ours.zero_point, -1), theirs.zero_point.numpy())


def test_an_observer_instance_is_used_as_it_is_and_the_config_round_trips():
    observer = MovingAverageMinMaxObserver(0.2, quant_min=0, quant_max=15)
    fake_quant = FusedMovingAvgObsFakeQuantize(observer)
    assert fake_quant.observer is observer and fake_quant.observe_in_eval
    fake_quant(lamina.tensor(batches(1)[0]))
    copy = layer_from_config(layer_to_config(fake_quant))
    assert type(copy) is FusedMovingAvgObsFakeQuantize and copy.observer.averaging_constant == 0.2
    assert (copy.quant_min, copy.quant_max) == (0, 15)
    copy.load_state_dict(fake_quant.state_dict())
    np.testing.assert_array_equal(copy.scale, fake_quant.scale)


@pytest.mark.parametrize("make, message", [
    (lambda: FusedMovingAvgObsFakeQuantize(MinMaxObserver), "observer must be .* got MinMaxObserver"),
    (lambda: FusedMovingAvgObsFakeQuantize(MovingAverageMinMaxObserver(), averaging_constant=0.1),
     r"observer keywords \['averaging_constant'\] need an observer class"),
    (lambda: FusedMovingAvgObsFakeQuantize(quant_min=0, quant_max=1, qscheme="per_tensor_symmetric"),
     r"a symmetric quantization needs at least three integers, got \[0, 1\]"),
])
def test_other_observers_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=f"FusedMovingAvgObsFakeQuantize: {message}"):
        make()


def test_zero_points_on_a_tie_and_ranges_of_one_sign_equal_torchs():
    """[-a, a] over 0..255 lies halfway between two zero points: torch's rule takes 127."""
    for low, high, quant_min, quant_max in [(-1.0, 1.0, 0, 255), (-2.5, 2.5, 0, 255), (-0.75, 0.75, 0, 15),
                                            (0.2, 3.0, -128, 127), (-3.0, -0.1, 0, 255), (-1.0, 3.0, -7, 12)]:
        x = np.float32([low, high])
        dtype = "uint8" if quant_min >= 0 else "int8"
        ours = FusedMovingAvgObsFakeQuantize(quant_min=quant_min, quant_max=quant_max, dtype=dtype)
        theirs = tq.FusedMovingAvgObsFakeQuantize(quant_min=quant_min, quant_max=quant_max, dtype=TORCH_DTYPES[dtype])
        assert_same_step(ours, theirs, x)


def test_fake_quantizing_with_the_observer_off_takes_the_range_as_torch():
    ours, theirs = FusedMovingAvgObsFakeQuantize(), tq.FusedMovingAvgObsFakeQuantize()
    ours.disable_observer(), theirs.disable_observer()
    assert_same_step(ours, theirs, np.float32([0.0, 0.5, 1.0]))       # nothing observed: scale 0.1, as torch
    ours, theirs = FusedMovingAvgObsFakeQuantize(), tq.FusedMovingAvgObsFakeQuantize()
    assert_same_step(ours, theirs, np.float32([0.0, 0.5, 1.0]))
    ours.disable_fake_quant(), theirs.disable_fake_quant()
    ours(lamina.tensor(np.float32([-3.0, 4.0]))), theirs(torch.tensor([-3.0, 4.0]))
    np.testing.assert_array_equal(np.reshape(ours.scale, -1), theirs.scale.numpy())   # not updated, as torch
    per_channel = observers.default_fused_per_channel_wt_fake_quant()
    per_channel.disable_observer()
    with pytest.raises(RuntimeError, match="has observed nothing yet.*; enable its observer"):
        per_channel(lamina.tensor(np.ones((2, 3), np.float32)))


def test_a_reduced_range_of_one_integer_is_refused():
    with pytest.raises(ValueError, match=r"reduce_range halves \[quant_min, quant_max\] = \[0, 1\] to the single"):
        FusedMovingAvgObsFakeQuantize(quant_min=0, quant_max=1, reduce_range=True)


def test_the_gradient_passes_straight_through_inside_the_range_as_torchs():
    x = np.float32([-3.0, -0.4, 0.0, 0.7, 2.5, 9.0])
    ours, theirs = FusedMovingAvgObsFakeQuantize(), tq.FusedMovingAvgObsFakeQuantize()
    ours(lamina.tensor(x)), theirs(torch.tensor(x))               # a range from this input
    ours.disable_observer(), theirs.disable_observer()
    wide = x * 1.5                                               # some values now outside it
    a, t = lamina.tensor(wide, requires_grad=True), torch.tensor(wide, requires_grad=True)
    ours(a).backward(np.arange(1.0, 7.0, dtype=np.float32))
    theirs(t).backward(torch.arange(1.0, 7.0))
    np.testing.assert_array_equal(a.grad, t.grad.numpy())
    assert (a.grad == 0).any() and (a.grad != 0).any()
