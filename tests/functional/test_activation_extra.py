"""hardtanh, softsign, log_sigmoid, celu, softmin, tanhshrink, hardshrink, softshrink and
threshold: PyTorch agreement (values and gradients, the kinks included), gradient checks,
stability, errors, and their layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import compare_with_torch, op_table_tests, randn
from lamina import nn
from lamina.functional import activation_extra as E
from lamina.nn import activation_extra as layers

KINKS = {"hardtanh": (-1.0, 1.0), "hardtanh_0_6": (0.0, 6.0), "hardshrink": (-0.5, 0.5),
         "softshrink": (-0.5, 0.5), "softshrink_2": (-2.0, 2.0), "threshold": (0.25,)}


def _away_from(kinks, *shape, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    """Random values at least 0.05 from every kink, so that centred differences never
    straddle one."""
    x = randn(*shape, seed=seed, scale=scale)
    for kink in kinks:
        near = np.abs(x - kink) < 0.05
        x[near] = kink + np.where(x[near] >= kink, 0.05, -0.05)
    return x


def _inputs(name: str, seed: int = 0) -> list:
    return [_away_from(KINKS.get(name, ()), 3, 7, seed=seed, scale=3.0 if name == "hardtanh_0_6" else 2.0)]


# name: (lamina function, torch function, inputs); the gradchecks use the same inputs
CASES = {
    "hardtanh": (E.hardtanh, TF.hardtanh, _inputs("hardtanh")),
    "hardtanh_0_6": (lambda z: E.hardtanh(z, 0.0, 6.0), lambda z: TF.hardtanh(z, 0.0, 6.0), _inputs("hardtanh_0_6")),
    "softsign": (E.softsign, TF.softsign, _inputs("softsign")),
    "log_sigmoid": (E.log_sigmoid, TF.logsigmoid, _inputs("log_sigmoid")),
    "celu": (E.celu, TF.celu, _inputs("celu")),
    # an alpha exact in float32: PyTorch rounds alpha to float32 in the gradient (0.7 moves it by 1e-8)
    "celu_alpha": (lambda z: E.celu(z, 0.5), lambda z: TF.celu(z, 0.5), _inputs("celu_alpha")),
    "softmin": (E.softmin, lambda z: TF.softmin(z, dim=-1), _inputs("softmin")),
    "softmin_axis0": (lambda z: E.softmin(z, axis=0), lambda z: TF.softmin(z, dim=0), _inputs("softmin_axis0")),
    "tanhshrink": (E.tanhshrink, TF.tanhshrink, _inputs("tanhshrink")),
    "hardshrink": (E.hardshrink, TF.hardshrink, _inputs("hardshrink")),
    "softshrink": (E.softshrink, TF.softshrink, _inputs("softshrink")),
    "softshrink_2": (lambda z: E.softshrink(z, 2.0), lambda z: TF.softshrink(z, 2.0), _inputs("softshrink_2")),
    "threshold": (lambda z: E.threshold(z, 0.25, -3.0), lambda z: TF.threshold(z, 0.25, -3.0),
                  _inputs("threshold")),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_slopes_at_the_kinks_match_torch(name, dtype):
    """Exactly at each kink (and at 0) the value and the slope are PyTorch's."""
    ours, theirs, _ = CASES[name]
    kinks = list(KINKS.get(name, ())) + [0.0]
    x = np.concatenate([randn(20, seed=3, scale=3), kinks, [-k for k in kinks]])
    compare_with_torch(ours, theirs, x, dtype=dtype)


def test_gradients_at_the_kinks_are_zero_as_torchs():
    x = lamina.tensor(np.array([-1.0, 1.0, -0.5, 0.5, 0.25]), requires_grad=True, dtype=np.float64)
    total = (E.hardtanh(x[:2]).sum() + E.hardshrink(x[2:4]).sum() + E.softshrink(x[2:4]).sum()
             + E.threshold(x[4:], 0.25, 0.0).sum())
    total.backward()
    np.testing.assert_array_equal(x.grad, np.zeros(5))


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_for_huge_inputs_in_float32(name):
    ours, theirs, _ = CASES[name]
    x = np.array([[1e4, -1e4, 88.0, -88.0, 0.0]], dtype=np.float32)
    z = lamina.tensor(x, requires_grad=True, dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        a = ours(z)
        a.sum().backward()
    assert a.dtype == np.float32 and z.grad.dtype == np.float32
    assert np.isfinite(a.numpy()).all() and np.isfinite(z.grad).all()
    expected = theirs(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_log_sigmoid_keeps_its_digits_far_in_both_tails():
    z = np.array([-800.0, -40.0, 40.0, 800.0])
    expected = np.array([-800.0, -40.0 - np.log1p(np.exp(-40.0)), -np.exp(-40.0), -0.0])
    np.testing.assert_allclose(E.log_sigmoid(lamina.tensor(z, dtype=np.float64)).numpy(), expected, rtol=1e-15)


def test_softmin_is_softmax_of_the_negation():
    x = randn(4, 5, seed=2)
    np.testing.assert_allclose(E.softmin(lamina.tensor(x, dtype=np.float64), axis=0).numpy(),
                               torch.softmax(-torch.tensor(x), dim=0).numpy(), rtol=1e-12)
    assert np.allclose(E.softmin(lamina.tensor(x, dtype=np.float64)).numpy().sum(axis=-1), 1.0)


@pytest.mark.parametrize("call, message", [
    (lambda z: E.hardtanh(z, 1.0, 1.0), r"hardtanh: min_val must be less than max_val, got min_val=1.0, max_val=1.0"),
    (lambda z: E.celu(z, 0.0), r"celu: alpha must be positive, got 0.0"),
    (lambda z: E.hardshrink(z, -0.1), r"hardshrink: lambd must be non-negative, got -0.1"),
    (lambda z: E.softshrink(z, -1), r"softshrink: lambd must be non-negative, got -1.0"),
    (lambda z: E.threshold(z, "0", 1.0), r"threshold: threshold must be a number, got '0'"),
])
def test_bad_arguments_name_the_function(call, message):
    with pytest.raises(ValueError, match=message):
        call(lamina.tensor(randn(3)))


@pytest.mark.parametrize("make, message", [
    (lambda: layers.Hardtanh(2.0, -2.0), r"Hardtanh: min_val must be less than max_val"),
    (lambda: layers.CELU(alpha=-1.0), r"CELU: alpha must be positive, got -1.0"),
    (lambda: layers.Softshrink(lambd=-0.5), r"Softshrink: lambd must be non-negative"),
    (lambda: layers.Hardshrink(lambd=-0.5), r"Hardshrink: lambd must be non-negative"),
])
def test_bad_layer_arguments_name_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


LAYERS = [
    (lambda: layers.Hardtanh(), lambda: torch.nn.Hardtanh()),
    (lambda: layers.Hardtanh(-2.0, 0.5), lambda: torch.nn.Hardtanh(-2.0, 0.5)),
    (lambda: layers.Softsign(), lambda: torch.nn.Softsign()),
    (lambda: layers.LogSigmoid(), lambda: torch.nn.LogSigmoid()),
    (lambda: layers.CELU(alpha=2.0), lambda: torch.nn.CELU(alpha=2.0)),
    (lambda: layers.Softmin(axis=1), lambda: torch.nn.Softmin(dim=1)),
    (lambda: layers.Tanhshrink(), lambda: torch.nn.Tanhshrink()),
    (lambda: layers.Hardshrink(lambd=1.0), lambda: torch.nn.Hardshrink(lambd=1.0)),
    (lambda: layers.Softshrink(), lambda: torch.nn.Softshrink()),
    (lambda: layers.Threshold(0.5, -1.0), lambda: torch.nn.Threshold(0.5, -1.0)),
]


@pytest.mark.parametrize("layer, torch_layer", LAYERS)
def test_layers_match_torch_and_round_trip_their_config(layer, torch_layer):
    x = randn(2, 3, 3, 4, scale=3)
    ours = layer()
    z = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = ours(z)
    xt = torch.tensor(x, requires_grad=True)
    expected = torch_layer()(xt)
    np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    upstream = randn(*y.shape, seed=5)
    y.backward(upstream)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(z.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert ours.compute_output_shape((None, 3, 3, 4)) == (None, 3, 3, 4)
    assert ours.num_parameters() == 0
    again = nn.layer_from_config(nn.layer_to_config(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()


def test_layer_names_and_streaming():
    assert [nn.default_name(cls) for cls in (layers.Hardtanh, layers.LogSigmoid, layers.CELU, layers.Softshrink)] \
        == ["hardtanh", "log_sigmoid", "celu", "softshrink"]
    assert layers.Softmin().streamable and not layers.Softmin(axis=1).streamable


def test_model_with_the_new_activations_saves_and_loads(tmp_path):
    model = nn.Sequential([nn.Dense(8), layers.CELU(0.5), nn.Dense(8), layers.Softshrink(0.1), nn.Dense(3),
                           layers.Hardtanh(-2.0, 2.0), layers.Softmin()])
    x = randn(4, 5).astype(np.float32)
    before = model(x).numpy()
    path = tmp_path / "m.lamina"
    lamina.save(model, path)
    np.testing.assert_array_equal(lamina.load(path)(x).numpy(), before)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8])
@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 6.0), (-1.5, 2.7)])
def test_hardtanh_of_integers_keeps_their_dtype_with_truncated_bounds_as_torch(dtype, bounds):
    if np.dtype(dtype).kind == "u" and bounds[0] < 0:
        with pytest.raises(ValueError, match="hardtanh: an input of unsigned dtype uint8 needs min_val >= 0"):
            E.hardtanh(lamina.tensor(np.array([1, 2], dtype), dtype=dtype), *bounds)
        return
    z = np.array([-3, -1, 0, 2, 9, 100], dtype) if np.dtype(dtype).kind == "i" else np.array([0, 2, 9, 200], dtype)
    ours = E.hardtanh(lamina.tensor(z, dtype=dtype), *bounds)
    theirs = TF.hardtanh(torch.tensor(z), *bounds)
    assert ours.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_relu6_of_integers_keeps_their_dtype_and_booleans_are_refused():
    ours = lamina.functional.relu6(lamina.tensor(np.array([-3, 0, 4, 9])))
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), TF.relu6(torch.tensor([-3, 0, 4, 9])).numpy())
    with pytest.raises(TypeError, match="hardtanh: boolean inputs are not supported"):
        E.hardtanh(lamina.tensor(np.array([True, False]), dtype=bool))
