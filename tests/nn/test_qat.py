"""Quantization-aware training: the fake-quantization ops against PyTorch's (values bit for bit,
straight-through gradients, zero second derivatives, LSQ's learnable scale and zero point), the
observers and FakeQuantize module against torch.ao.quantization's on the same batches, and
prepare_qat / calibrate / convert on digits models at 4 bits.

The straight-through estimator is by definition not the derivative of the rounding (which is
0 almost everywhere), so these ops get no finite-difference check: their gradients are checked
against PyTorch's and against the clamp mask directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao import quantization as tq

import lamina
from helpers import compare_double_backward_with_torch, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.nn.qat import QATConv2D, QATDense, calibrate, convert, fuse_conv_bn, prepare_qat
from lamina.nn.quantize import QuantizedConv2D, QuantizedDense
from lamina.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RANGES = [(0, 255, 128), (0, 15, 3), (-8, 7, 0), (-128, 127, -7)]


# -- fake quantization ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("quant_min, quant_max, zero_point", RANGES)
def test_fake_quantize_per_tensor_equals_torch_bit_for_bit_with_its_gradient(dtype, quant_min, quant_max, zero_point):
    x = randn(6, 9, seed=1, scale=3.0).astype(dtype)
    scale = np.float32(0.02) if quant_max > 100 else np.float32(0.7)
    ours = lamina.tensor(x, dtype=dtype, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    y = F.fake_quantize_per_tensor(ours, scale, zero_point, quant_min, quant_max)
    expected = torch.fake_quantize_per_tensor_affine(theirs, float(scale), zero_point, quant_min, quant_max)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())
    up = randn(6, 9, seed=2).astype(dtype)
    (y * lamina.tensor(up, dtype=dtype)).sum().backward()
    (expected * torch.tensor(up)).sum().backward()
    np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())
    inside = (np.rint(x * (np.float32(1) / scale).astype(dtype)) + zero_point >= quant_min) & \
             (np.rint(x * (np.float32(1) / scale).astype(dtype)) + zero_point <= quant_max)
    assert 0 < inside.sum() < x.size                        # some values were clamped, some not
    np.testing.assert_array_equal(ours.grad, np.where(inside, up, 0))


def test_ties_round_half_to_even_and_the_clamp_edges_as_torch():
    scale = np.float32(0.25)
    x = np.arange(-24, 49, dtype=np.float32) * np.float32(0.125)      # every other value a tie at .5
    y = F.fake_quantize_per_tensor(lamina.tensor(x), scale, 2, 0, 15).numpy()
    expected = torch.fake_quantize_per_tensor_affine(torch.tensor(x), 0.25, 2, 0, 15).numpy()
    np.testing.assert_array_equal(y, expected)
    assert y[x == np.float32(0.125)] == 0.0 and y[x == np.float32(0.375)] == np.float32(0.5)   # 0.5 -> 0, 1.5 -> 2
    assert y.min() == -0.5 and y.max() == np.float32(13 * 0.25)       # (0 - 2) s and (15 - 2) s


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_fake_quantize_per_channel_equals_torch_bit_for_bit_with_its_gradient(dtype, axis):
    x = randn(5, 4, 3, seed=3, scale=2.0).astype(dtype)
    channels = x.shape[axis]
    rng = np.random.default_rng(4)
    scale = rng.uniform(0.1, 0.6, channels).astype(np.float32)
    zero_point = rng.integers(0, 6, channels)
    compare_with_torch(lambda t: F.fake_quantize_per_channel(t, scale, zero_point, axis, 0, 15),
                       lambda t: torch.fake_quantize_per_channel_affine(
                           t, torch.tensor(scale), torch.tensor(zero_point, dtype=torch.int32), axis % 3, 0, 15),
                       x, dtype=dtype, rtol=0.0)


def test_second_derivatives_are_zero_as_torch():
    x = randn(4, 5, seed=5, scale=2.0)
    compare_double_backward_with_torch(
        lambda t: F.fake_quantize_per_tensor(t, 0.3, 1, -4, 3) ** 2,
        lambda t: torch.fake_quantize_per_tensor_affine(t, 0.3, 1, -4, 3) ** 2, x)
    scale, zero_point = np.array([0.2, 0.5, 0.3, 0.4, 0.25], np.float32), np.array([0, 1, 2, 0, 1])
    compare_double_backward_with_torch(
        lambda t: F.fake_quantize_per_channel(t, scale, zero_point, 1, -4, 3) * t,
        lambda t: torch.fake_quantize_per_channel_affine(t, torch.tensor(scale), torch.tensor(zero_point,
                                                         dtype=torch.int32), 1, -4, 3) * t, x)


@pytest.mark.parametrize("zero_point", [2.3, 2.5, 3.7, -1.0])
def test_learnable_scale_and_zero_point_follow_torch_lsq(zero_point):
    x = randn(8, 6, seed=6, scale=2.0).astype(np.float32)
    compare_with_torch(lambda t, s, z: F.fake_quantize_learnable_per_tensor(t, s, z, 0, 15, 0.5),
                       lambda t, s, z: torch._fake_quantize_learnable_per_tensor_affine(t, s, z, 0, 15, 0.5),
                       x, np.array([0.3]), np.array([zero_point]), rtol=1e-5)


@pytest.mark.parametrize("scale", [0.13099317, 0.3, 0.0771])
def test_learnable_gradients_round_z_plus_x_over_s_once_as_torch(scale):
    # x / s near a half-way point: z + x / s is rounded once (torch's fused multiply-add), not x / s first
    s = np.float32(scale)
    x = ((np.arange(-12, 26) + 0.5) * s).astype(np.float32)
    xl, sl, zl = (lamina.tensor(a, requires_grad=True) for a in (x, np.array([s]), np.array([7.0], np.float32)))
    F.fake_quantize_learnable_per_tensor(xl, sl, zl, 0, 15).sum().backward()
    xt, st, zt = (torch.tensor(a, requires_grad=True) for a in (x, np.array([s]), np.array([7.0], np.float32)))
    torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, 0, 15, 1.0).sum().backward()
    np.testing.assert_array_equal(xl.grad, xt.grad.numpy())
    np.testing.assert_allclose(sl.grad, st.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(zl.grad, zt.grad.numpy(), rtol=1e-6)


def test_fake_quantize_errors_name_what_is_wrong():
    x = lamina.tensor(randn(3, 4).astype(np.float32))
    with pytest.raises(ValueError, match="fake_quantize_per_tensor: expected quant_min <= quant_max"):
        F.fake_quantize_per_tensor(x, 0.1, 0, 5, 2)
    with pytest.raises(ValueError, match="zero_point must lie in"):
        F.fake_quantize_per_tensor(x, 0.1, 20, 0, 15)
    with pytest.raises(ValueError, match="scale must be positive"):
        F.fake_quantize_per_tensor(x, -0.1, 0, 0, 15)
    with pytest.raises(ShapeError, match="expected 4 scales and zero points"):
        F.fake_quantize_per_channel(x, np.ones(3), np.zeros(3, int), 1, 0, 15)
    with pytest.raises(ValueError, match="axis must be an int"):
        F.fake_quantize_per_channel(x, np.ones(4), np.zeros(4, int), 2, 0, 15)
    with pytest.raises(ValueError, match="floating-point"):
        F.fake_quantize_per_tensor(lamina.tensor(np.ones(3, np.int64)), 0.1, 0, 0, 15)


# -- observers --------------------------------------------------------------------------------------

def batches(*shape, count=4):
    return [(randn(*shape, seed=10 + k) * (1 + k) + 0.3 * k).astype(np.float32) for k in range(count)]


def assert_same_qparams(ours, theirs):
    scale, zero_point = ours.calculate_qparams()
    expected_scale, expected_zero_point = theirs.calculate_qparams()
    np.testing.assert_array_equal(np.asarray(scale, np.float32).reshape(-1), expected_scale.numpy().reshape(-1))
    np.testing.assert_array_equal(np.asarray(zero_point).reshape(-1), expected_zero_point.numpy().reshape(-1))


OBSERVER_SETTINGS = [
    ("uint8", "affine", None, None), ("uint8", "affine", 0, 15), ("int8", "affine", None, None),
    ("int8", "symmetric", -8, 7), ("uint8", "symmetric", None, None), ("uint8", "symmetric", 0, 15),
    ("int8", "symmetric", None, None),
]
TORCH_DTYPES = {"uint8": torch.quint8, "int8": torch.qint8}


def settings(dtype, scheme, quant_min, quant_max, per_channel=False):
    kind = "per_channel" if per_channel else "per_tensor"
    ours = {"dtype": dtype, "qscheme": f"{kind}_{scheme}", "quant_min": quant_min, "quant_max": quant_max}
    theirs = {"dtype": TORCH_DTYPES[dtype], "qscheme": getattr(torch, f"{kind}_{scheme}"),
              "quant_min": quant_min, "quant_max": quant_max}
    return ours, theirs


@pytest.mark.parametrize("dtype, scheme, quant_min, quant_max", OBSERVER_SETTINGS)
def test_min_max_and_moving_average_observers_equal_torch(dtype, scheme, quant_min, quant_max):
    ours_kw, theirs_kw = settings(dtype, scheme, quant_min, quant_max)
    pairs = [(nn.MinMaxObserver(**ours_kw), tq.MinMaxObserver(**theirs_kw)),
             (nn.MovingAverageMinMaxObserver(0.3, **ours_kw), tq.MovingAverageMinMaxObserver(0.3, **theirs_kw))]
    for ours, theirs in pairs:
        assert_same_qparams(ours, theirs)                       # nothing observed: (1, 0)
        for batch in batches(16, 5):
            ours(batch)
            theirs(torch.tensor(batch))
            np.testing.assert_array_equal(ours.min_val, theirs.min_val.numpy())
            np.testing.assert_array_equal(ours.max_val, theirs.max_val.numpy())
            assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("ch_axis", [0, 1, 3])
@pytest.mark.parametrize("dtype, scheme, quant_min, quant_max",
                         [("int8", "symmetric", None, None), ("int8", "symmetric", -8, 7), ("uint8", "affine", 0, 15)])
def test_per_channel_observer_equals_torch(ch_axis, dtype, scheme, quant_min, quant_max):
    ours_kw, theirs_kw = settings(dtype, scheme, quant_min, quant_max, per_channel=True)
    ours, theirs = nn.PerChannelMinMaxObserver(ch_axis, **ours_kw), tq.PerChannelMinMaxObserver(ch_axis, **theirs_kw)
    for batch in batches(4, 3, 3, 6, count=3):
        ours(batch)
        theirs(torch.tensor(batch))
        assert_same_qparams(ours, theirs)


def test_fake_quantize_module_observes_in_training_and_equals_torch():
    ours = nn.FakeQuantize(nn.MovingAverageMinMaxObserver(0.1, quant_min=0, quant_max=15))
    theirs = tq.FakeQuantize(tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=15, averaging_constant=0.1)
    for batch in batches(10, 4):
        np.testing.assert_array_equal(ours(lamina.tensor(batch)).numpy(), theirs(torch.tensor(batch)).numpy())
        np.testing.assert_array_equal(ours.scale.reshape(-1), theirs.scale.numpy())
        np.testing.assert_array_equal(ours.zero_point.reshape(-1), theirs.zero_point.numpy())
    ours.eval()
    frozen = (ours.scale.copy(), ours.zero_point.copy())
    ours(lamina.tensor(batches(10, 4)[0] * 50))                 # evaluation: no observation
    np.testing.assert_array_equal(ours.scale, frozen[0])
    ours.disable_fake_quant()
    x = lamina.tensor(batches(3, 4)[1])
    np.testing.assert_array_equal(ours(x).numpy(), x.numpy())


def test_observer_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="MinMaxObserver: qscheme must be one of"):
        nn.MinMaxObserver(qscheme="per_channel_symmetric")
    with pytest.raises(ValueError, match=r"must be ints with quant_min <= 0 <= quant_max"):
        nn.MinMaxObserver(quant_min=1, quant_max=15)
    with pytest.raises(ValueError, match="inside the uint8 range"):
        nn.MinMaxObserver(quant_min=0, quant_max=300)
    with pytest.raises(ValueError, match="averaging_constant"):
        nn.MovingAverageMinMaxObserver(0.0)
    observer = nn.PerChannelMinMaxObserver(1)
    observer(np.ones((2, 3), np.float32))
    with pytest.raises(ShapeError, match="has 4 channels along axis 1; earlier inputs had 3"):
        observer(np.ones((2, 4), np.float32))


# -- prepare_qat, calibrate, convert on digits ------------------------------------------------------

W4, A4 = (-8, 7), (0, 15)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return x_train, y_train, x_test, y_test


def trained(model, digits, epochs, lr=5e-3):
    lamina.manual_seed(0)
    x_train, y_train, _, _ = digits
    trainer = Trainer(model, lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True),
                      optim.Adam(model, lr=lr), metrics=(), verbose=0)
    trainer.fit((x_train, y_train), epochs=epochs, batch_size=32, seed=0)
    return model.eval()


def accuracy(model, digits) -> float:
    with lamina.no_grad():
        return float((model(digits[2]).numpy().argmax(axis=1) == digits[3]).mean())


def make_mlp():
    return nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(10))


def make_cnn():
    return nn.Sequential(nn.Conv2D(8, 3, padding="same", activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
                         nn.Dense(10))


@pytest.fixture(scope="module")
def models(digits):
    return {"mlp": trained(make_mlp(), digits, epochs=10), "cnn": trained(make_cnn(), digits, epochs=6)}


@pytest.fixture(scope="module")
def four_bit(models, digits):
    """Per model: the float model, post-training 4-bit quantization (prepare, calibrate, convert)
    and 4-bit QAT (3 epochs of fine-tuning) with its conversion."""
    found = {}
    calibration = [digits[0][i:i + 256] for i in range(0, len(digits[0]), 256)]
    for name, model in models.items():
        ptq = convert(calibrate(prepare_qat(model, W4, A4, activation_observer="min_max"), calibration))
        qat = trained(prepare_qat(model, W4, A4), digits, epochs=3, lr=2e-3)
        found[name] = (model, ptq, qat, convert(qat))
    return found


def test_prepare_qat_replaces_the_layers_of_a_copy_and_observes_in_training(models, digits):
    model = models["cnn"]
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    qat = prepare_qat(model, W4, A4)
    assert [type(m) for m in qat] == [QATConv2D, nn.MaxPool2D, nn.Flatten, QATDense] and qat.training
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())      # the original is untouched
    conv = qat[0]
    assert conv.input_fake_quant.scale == 1.0                                            # nothing observed yet
    with lamina.no_grad():
        qat(digits[0][:32])
    x_max = float(digits[0][:32].max())
    assert conv.input_fake_quant.scale == pytest.approx(x_max / 15)                      # min 0, max x_max
    np.testing.assert_allclose(conv.weight_fake_quant.scale, np.abs(conv.weight.data).reshape(8, -1).max(1) / 7.5,
                               rtol=1e-6)
    qat.eval()
    with lamina.no_grad():
        qat(digits[0][:32] * 3)
    assert conv.input_fake_quant.scale == pytest.approx(x_max / 15)                      # evaluation observes nothing


def test_qat_gradients_flow_straight_through_to_the_weights(models, digits):
    qat = prepare_qat(models["mlp"], W4, A4)
    out = qat(digits[0][:16])
    F.categorical_cross_entropy(out, digits[1][:16], from_logits=True).backward()
    dense = qat[1]
    assert dense.weight.grad is not None and np.abs(dense.weight.grad).sum() > 0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_four_bit_qat_keeps_the_accuracy_that_post_training_quantization_loses(name, four_bit, digits):
    model, ptq, qat, converted = four_bit[name]
    float_accuracy, ptq_accuracy = accuracy(model, digits), accuracy(ptq, digits)
    qat_accuracy, converted_accuracy = accuracy(qat, digits), accuracy(converted, digits)
    assert float_accuracy > 0.9
    assert ptq_accuracy <= float_accuracy - 0.01                # 4 bits after training loses visibly
    assert converted_accuracy >= float_accuracy - 0.02          # training with the rounding wins it back
    assert converted_accuracy >= ptq_accuracy + 0.015
    assert abs(converted_accuracy - qat_accuracy) <= 1 / len(digits[3])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_converted_model_computes_what_the_fake_quantized_model_computes(name, four_bit, digits):
    _, _, qat, converted = four_bit[name]
    kinds = [type(m) for m in converted]
    assert QuantizedDense in kinds and (name == "mlp" or QuantizedConv2D in kinds)
    x = digits[2]
    with lamina.no_grad():
        expected, out = qat(x).numpy(), converted(x).numpy()
    for layer in converted:
        if isinstance(layer, (QuantizedDense, QuantizedConv2D)):
            assert layer.weight.dtype == np.int8 and -8 <= layer.weight.min() and layer.weight.max() <= 7
            assert layer.input_quant_range == A4
    step = max(float(m.input_fake_quant.scale) * np.abs(m.weight.data).max() for m in qat
               if isinstance(m, (QATDense, QATConv2D)))
    assert np.abs(out - expected).max() <= step                  # within one step of an input's grid
    np.testing.assert_allclose(out, expected, atol=1e-4 * np.abs(expected).max())
    first_qat, first_int = next(m for m in qat if isinstance(m, (QATDense, QATConv2D))), \
        next(m for m in converted if isinstance(m, (QuantizedDense, QuantizedConv2D)))
    inputs = x if name == "cnn" else x.reshape(len(x), -1)
    with lamina.no_grad():
        np.testing.assert_allclose(first_int(inputs).numpy(), first_qat(inputs).numpy(), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_restores_weights_and_quantization_parameters(four_bit, models, digits):
    _, _, qat, converted = four_bit["cnn"]
    fresh = prepare_qat(models["cnn"], W4, A4)
    state = qat.state_dict()
    assert {"conv2d.input_fake_quant.scale", "conv2d.weight_fake_quant.scale", "dense.input_fake_quant.zero_point",
            "dense.input_fake_quant.observer.max_val"} <= set(state)
    fresh.load_state_dict(state)
    fresh.eval()
    with lamina.no_grad():
        np.testing.assert_array_equal(fresh(digits[2]).numpy(), qat(digits[2]).numpy())
        np.testing.assert_array_equal(convert(fresh)(digits[2]).numpy(), converted(digits[2]).numpy())


def test_fuse_conv_bn_folds_the_running_statistics_into_the_convolution():
    lamina.manual_seed(1)
    model = nn.Sequential(nn.Conv2D(4, 3, padding="same"), nn.BatchNorm(), nn.ReLU())
    x = randn(6, 5, 5, 2, seed=7).astype(np.float32)
    model(x)                                               # training: the running statistics move
    model[1].weight.data = np.linspace(0.5, 2, 4).astype(np.float32)
    model[1].bias.data = np.linspace(-1, 1, 4).astype(np.float32)
    model.eval()
    fused = fuse_conv_bn(model)
    assert isinstance(fused[1], nn.Identity) and isinstance(model[1], nn.BatchNorm)
    with lamina.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_bad_requests_give_named_errors(models):
    with pytest.raises(ValueError, match="prepare_qat: weight_quant_range must be a pair"):
        prepare_qat(models["mlp"], weight_quant_range=(-300, 7))
    with pytest.raises(ValueError, match="prepare_qat: activation_observer must be one of"):
        prepare_qat(models["mlp"], activation_observer="histogram")
    with pytest.raises(ValueError, match="prepare_qat: layers must be among"):
        prepare_qat(models["mlp"], layers=(nn.BatchNorm,))
    with pytest.raises(ValueError, match="never observed an input"):
        convert(prepare_qat(models["mlp"]))
    with pytest.raises(ValueError, match="convert: the model has no QATDense"):
        convert(models["mlp"])
    with pytest.raises(ValueError, match="calibrate: the model has no fake quantization"):
        calibrate(models["mlp"], [np.zeros((1, 8, 8, 1), np.float32)])
