"""GELU, SiLU, Softplus, Mish, hard sigmoid and hard swish: PyTorch agreement, gradients,
stability, and their layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import compare_scalar_with_torch, compare_with_torch, op_table_tests, randn
from lamina import nn


def _wide(seed: int = 0) -> np.ndarray:
    """Values over the whole useful range, the kinks at +-3 and the softplus threshold, 0."""
    rest = np.random.default_rng(seed).standard_normal(60) * 4
    return np.concatenate([rest, [-3.0, 3.0, 0.0, -30.0, 30.0, 19.0, 21.0, 2.5, -2.5]])


# name: (lamina function, torch function, inputs); the gradchecks use the same inputs
CASES = {
    "gelu": (F.gelu, TF.gelu, [randn(3, 4, scale=2)]),
    "gelu_tanh": (lambda z: F.gelu(z, approximate="tanh"), lambda z: TF.gelu(z, approximate="tanh"),
                  [randn(3, 4, scale=2)]),
    "silu": (F.silu, TF.silu, [randn(3, 4, scale=3)]),
    "softplus": (F.softplus, TF.softplus, [randn(3, 4, scale=3)]),
    "softplus_beta_threshold": (lambda z: F.softplus(z, beta=2.0, threshold=3.0),
                                lambda z: TF.softplus(z, beta=2.0, threshold=3.0), [randn(4, 5, scale=3)]),
    "mish": (F.mish, TF.mish, [randn(3, 4, scale=3)]),
    # TF.hardsigmoid's gradient uses a float32 1/6 even in float64 (see below): this is exact
    "hard_sigmoid": (F.hard_sigmoid, lambda z: TF.relu6(z + 3) / 6, [randn(3, 4, scale=2)]),
    "hard_swish": (F.hard_swish, TF.hardswish, [randn(3, 4, scale=2)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_whole_range_and_kinks_match_torch(name, dtype):
    ours, theirs, _ = CASES[name]
    compare_with_torch(ours, theirs, _wide(), dtype=dtype)


def test_hard_sigmoid_matches_torchs_own_to_its_float32_constant():
    compare_with_torch(F.hard_sigmoid, TF.hardsigmoid, _wide(), dtype=np.float32)
    compare_with_torch(F.hard_sigmoid, TF.hardsigmoid, _wide(), dtype=np.float64, rtol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_for_huge_inputs_in_float32(name):
    ours, theirs, _ = CASES[name]
    x = np.array([1e4, -1e4, 88.0, -88.0, 0.0], dtype=np.float32)
    z = lamina.tensor(x, requires_grad=True, dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        a = ours(z)
        a.sum().backward()
    assert a.dtype == np.float32 and z.grad.dtype == np.float32
    assert np.isfinite(a.numpy()).all() and np.isfinite(z.grad).all()
    expected = theirs(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6, atol=1e-6)


# float32: rounding z / sqrt 2 alone moves erfc by up to z^2 ulp relatively in the tail
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 2e-5)])
def test_gelu_is_z_times_the_normal_cdf_to_full_relative_precision(dtype, rtol):
    z = np.linspace(-12, 6, 19)
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    # relative to each value: the left tail (a ~ -1e-32 at z = -12) keeps its digits
    np.testing.assert_allclose(F.gelu(lamina.tensor(z, dtype=dtype)).numpy(), z * cdf, rtol=rtol, atol=0)


def test_bad_arguments_name_the_function():
    with pytest.raises(ValueError, match=r"gelu: approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(lamina.tensor(randn(3)), approximate="erf")
    with pytest.raises(ValueError, match=r"softplus: beta must be positive, got 0"):
        F.softplus(lamina.tensor(randn(3)), beta=0)
    with pytest.raises(ValueError, match=r"GELU: approximate"):
        nn.GELU(approximate="fast")
    with pytest.raises(ValueError, match=r"Softplus: beta must be positive"):
        nn.Softplus(beta=-1.0)


LAYERS = [
    (lambda: nn.GELU(), lambda: torch.nn.GELU()),
    (lambda: nn.GELU(approximate="tanh"), lambda: torch.nn.GELU(approximate="tanh")),
    (lambda: nn.SiLU(), lambda: torch.nn.SiLU()),
    (lambda: nn.Softplus(beta=1.5, threshold=4.0), lambda: torch.nn.Softplus(beta=1.5, threshold=4.0)),
    (lambda: nn.Mish(), lambda: torch.nn.Mish()),
    (lambda: nn.HardSigmoid(), lambda: torch.nn.Hardsigmoid()),
    (lambda: nn.HardSwish(), lambda: torch.nn.Hardswish()),
    (lambda: nn.Activation("swish"), lambda: torch.nn.SiLU()),
]


@pytest.mark.parametrize("layer, torch_layer", LAYERS)
def test_layers_match_torch_and_round_trip_their_config(layer, torch_layer):
    x = randn(2, 3, 3, 4, scale=3)
    ours = layer()
    y = ours(lamina.tensor(x, dtype=np.float64)).numpy()
    expected = torch_layer()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-7, atol=1e-12)
    assert ours.compute_output_shape((None, 3, 3, 4)) == (None, 3, 3, 4)
    again = nn.layer_from_config(nn.layer_to_config(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()


@pytest.mark.parametrize("name, torch_fn", [
    ("gelu", TF.gelu), ("gelu_tanh", lambda z: TF.gelu(z, approximate="tanh")), ("silu", TF.silu),
    ("swish", TF.silu), ("softplus", TF.softplus), ("mish", TF.mish), ("hard_sigmoid", TF.hardsigmoid),
    ("hard_swish", TF.hardswish),
])
def test_activation_names_in_dense_layers(name, torch_fn):
    lamina.manual_seed(0)
    layer = nn.Dense(5, activation=name)
    x = randn(4, 3).astype(np.float32)
    y = layer(x).numpy()
    v = x @ layer.weight.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(y, torch_fn(torch.tensor(v)).numpy(), rtol=1e-5, atol=1e-6)
    assert nn.layer_from_config(nn.layer_to_config(layer)).get_config()["activation"] == name


def test_model_with_the_new_activations_saves_and_loads(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential([nn.Conv2D(4, 3), nn.HardSwish(), nn.Flatten(), nn.Dense(8, activation="gelu"),
                           nn.Mish(), nn.Dense(3), nn.Softplus(beta=2.0)])
    x = randn(2, 6, 6, 1).astype(np.float32)
    before = model(x).numpy()
    path = tmp_path / "m.lamina"
    lamina.save(model, path)
    np.testing.assert_array_equal(lamina.load(path)(x).numpy(), before)


ZERO_D = {
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda z: F.gelu(z, approximate="tanh"), lambda z: TF.gelu(z, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "softplus": (F.softplus, TF.softplus),
    "mish": (F.mish, TF.mish),
    "hard_sigmoid": (F.hard_sigmoid, TF.hardsigmoid),
    "hard_swish": (F.hard_swish, TF.hardswish),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ZERO_D))
def test_zero_dimensional_input_matches_torch(name, dtype):
    ours, theirs = ZERO_D[name]
    compare_scalar_with_torch(ours, theirs, (-4.0, -0.7, 0.0, 0.7, 25.0), dtype, grad_rtol=1e-5,
                              grad_atol=1e-6 if dtype == np.float32 else 1e-12)
