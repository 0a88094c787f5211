"""The activations' fast forms on arrays large enough to take them: the same values as the
plain NumPy expressions (bit for bit, or within the few ulp given in ULPS, special values
included) and PyTorch's gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import compare_with_torch
from lamina import nn
from lamina.functional._util import SCALAR_ROW, with_scalar
from lamina.functional.activation import select

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 88.0, -88.0, 1e4, -1e4]
SIZES = [SCALAR_ROW - 1, SCALAR_ROW, 3 * SCALAR_ROW + 7]


ULPS = {"elu": 4, "selu": 5}
"""Activations whose fast form differs from the plain expression by rounding: at most this
many units in the last place (e^z - 1 from tanh, see functional.activation.expm1_nonpositive)."""


def assert_same_values(actual, expected, ulps: int = 0) -> None:
    """Equal bit for bit, or with ``ulps``, equal special values and finite values within
    that many units in the last place of the expected one."""
    if ulps == 0:
        np.testing.assert_array_equal(actual, expected)
        return
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    np.testing.assert_array_equal(np.signbit(actual[expected == 0]), np.signbit(expected[expected == 0]))
    error = np.abs(actual[finite].astype(np.float64) - expected[finite])
    worst = (error / np.spacing(np.abs(expected[finite])).astype(np.float64)).max()
    assert worst <= ulps, f"{worst} ulp from the plain expression, at most {ulps} allowed"


def _values(size: int, dtype, seed: int = 0) -> np.ndarray:
    x = (np.random.default_rng(seed).standard_normal(size) * 4).astype(dtype)
    x[: len(SPECIALS)] = SPECIALS
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("ufunc", [np.maximum, np.minimum])
def test_with_scalar_equals_the_ufunc(ufunc, size, dtype):
    x = _values(size, dtype)
    expected = ufunc(x, 0.5)
    np.testing.assert_array_equal(with_scalar(ufunc, x, 0.5), expected)
    in_place = x.copy()
    assert with_scalar(ufunc, in_place, 0.5, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)
    strided = np.stack([x, x], axis=1)[:, 0]                 # not contiguous: the plain call
    np.testing.assert_array_equal(with_scalar(ufunc, strided, 0.5), expected)


def test_with_scalar_keeps_shape_and_dtype():
    x = _values(4 * 5 * 6 * 11, np.float32).reshape(4, 5, 6, 11)
    y = with_scalar(np.maximum, x, 0)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_expm1_nonpositive_within_3_ulp_of_expm1(dtype):
    rng = np.random.default_rng(6)
    z = np.concatenate([rng.standard_normal(20000) * scale for scale in (1e-30, 1e-6, 1e-2, 1, 10, 100)])
    z = -np.abs(np.concatenate([z, SPECIALS])).astype(dtype)
    z[0] = np.nan
    assert_same_values(F.activation.expm1_nonpositive(z), np.expm1(z), ulps=3)
    out = z.copy()
    assert F.activation.expm1_nonpositive(out, out=out) is out
    np.testing.assert_array_equal(out, F.activation.expm1_nonpositive(z))


@pytest.mark.parametrize("b", [0.01, -2.5, "per_channel", "array"])
def test_select_equals_where(b):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 9, 6)).astype(np.float32)
    mask = z > 0
    if b == "per_channel":
        b = rng.standard_normal(6).astype(np.float32)
    elif b == "array":
        b = rng.standard_normal(z.shape).astype(np.float32)
    for a in (1, 1.0507):
        expected = np.where(mask, np.float32(a), b).astype(np.float32)
        np.testing.assert_array_equal(select(mask, a, b, np.float32), expected)


# name: (lamina function, reference NumPy expression, torch function)
ACTIVATIONS = {
    "relu": (F.relu, lambda z: np.maximum(z, 0), torch.relu),
    "sigmoid": (F.sigmoid, lambda z: 1 / (1 + np.exp(-z)), torch.sigmoid),   # e^-z = inf -> exactly 0
    "leaky_relu": (lambda z: F.leaky_relu(z, 0.1), lambda z: np.where(z > 0, z, 0.1 * z),
                   lambda z: TF.leaky_relu(z, 0.1)),
    "leaky_relu_steep": (lambda z: F.leaky_relu(z, 3.0), lambda z: np.where(z > 0, z, 3.0 * z),
                         lambda z: TF.leaky_relu(z, 3.0)),
    "leaky_relu_negative": (lambda z: F.leaky_relu(z, -0.5), lambda z: np.where(z > 0, z, -0.5 * z),
                            lambda z: TF.leaky_relu(z, -0.5)),
    "elu": (lambda z: F.elu(z, 0.7), lambda z: np.where(z > 0, z, 0.7 * np.expm1(np.minimum(z, 0))),
            lambda z: TF.elu(z, 0.7)),
    "selu": (F.selu, lambda z: np.where(z > 0, F.activation.SELU_SCALE * z, F.activation.SELU_SCALE
                                        * F.activation.SELU_ALPHA * np.expm1(np.minimum(z, 0))), TF.selu),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fast_forms_equal_the_plain_expressions(name):
    ours, reference, _ = ACTIVATIONS[name]
    for dtype in (np.float32, np.float64):
        z = _values(3 * SCALAR_ROW + 7, dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = reference(z).astype(dtype)
        assert_same_values(ours(lamina.tensor(z, dtype=dtype)).numpy(), expected, ULPS.get(name, 0))


def test_sigmoid_keeps_its_relative_precision_far_into_either_tail():
    z = np.concatenate([np.linspace(-87, 87, 20001), [-88.5, -100.0, -1e4]]).astype(np.float32)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-z.astype(np.float64)))
    ours = F.sigmoid(lamina.tensor(z)).numpy().astype(np.float64)
    normal = exact > np.finfo(np.float32).tiny
    assert (np.abs(ours - exact)[normal] / exact[normal]).max() < 4 * np.finfo(np.float32).eps
    assert (ours[~normal] <= np.finfo(np.float32).tiny).all()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fast_forms_match_torch_gradients(name):
    ours, _, theirs = ACTIVATIONS[name]
    z = np.random.default_rng(2).standard_normal((16, 9, 9, 5)) * 3
    z[np.abs(z) < 1e-3] = 0.5                               # away from the kinks
    compare_with_torch(ours, theirs, z, dtype=np.float64)
    compare_with_torch(ours, theirs, z, dtype=np.float32)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_fast_form_matches_torch(shared):
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 12, 12, 6)) * 2
    layer = nn.PReLU(shared=shared)
    layer.build(x.shape)
    layer.built = True
    alpha = rng.uniform(-0.5, 1.5, layer.alpha.shape)
    layer.alpha.data = alpha.copy()
    theirs = torch.nn.PReLU(num_parameters=alpha.size).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(alpha))
    xl = lamina.tensor(x, requires_grad=True)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    up = rng.standard_normal(x.shape)
    yl, yt = layer(xl), theirs(xt)
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-12)
    np.testing.assert_array_equal(yl.numpy(), np.where(x > 0, x, alpha * x))
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12)
    np.testing.assert_allclose(layer.alpha.grad, theirs.weight.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fast_forms_in_blocks_on_threads(two_threads, name):
    """Arrays large enough to be shared by two threads (lamina.parallel.elementwise_chain): the
    same values as the plain expressions, and PyTorch's gradients."""
    ours, reference, theirs = ACTIVATIONS[name]
    shape = (24, 48, 48, 10)
    assert np.prod(shape) >= lamina.parallel.ELEMENTWISE_MIN
    z = (np.random.default_rng(4).standard_normal(shape) * 4).astype(np.float32)
    z.reshape(-1)[: len(SPECIALS)] = SPECIALS
    with np.errstate(over="ignore", invalid="ignore"):
        expected = reference(z).astype(np.float32)
    assert_same_values(ours(lamina.tensor(z)).numpy(), expected, ULPS.get(name, 0))
    finite = np.where(np.isfinite(z) & (np.abs(z) > 1e-3), z, 0.5).astype(np.float64)
    compare_with_torch(ours, theirs, finite, dtype=np.float64)


def test_prelu_in_blocks_on_threads_matches_torch(two_threads):
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((24, 48, 48, 10))
    layer = nn.PReLU()
    layer(lamina.tensor(x[:1]))
    layer.alpha.data = rng.uniform(-0.5, 1.5, 10)
    theirs = torch.nn.PReLU(num_parameters=10).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(layer.alpha.data))
    xl = lamina.tensor(x, requires_grad=True)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    yl, yt = layer(xl), theirs(xt)
    np.testing.assert_array_equal(yl.numpy(), np.where(x > 0, x, layer.alpha.data * x))
    up = rng.standard_normal(x.shape)
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12)
    np.testing.assert_allclose(layer.alpha.grad, theirs.weight.grad.numpy(), rtol=1e-9)


def test_chain_into_writes_a_c_ordered_array_whatever_the_input_layout():
    from lamina.functional.activation import chain_into

    x = np.random.default_rng(6).standard_normal((300, 400)).astype(np.float32)
    for source in (x, x.T, np.broadcast_to(x[0], (500, 400))):
        out = chain_into(lambda s, o: np.negative(s, out=o), [source])
        assert out.flags.c_contiguous and out.dtype == np.float32
        np.testing.assert_array_equal(out, -source)
    z = lamina.tensor(np.random.default_rng(7).standard_normal((6, 5)).astype(np.float32), requires_grad=True)
    F.relu(z).backward(np.broadcast_to(np.float32(2.0), (6, 5)))
    np.testing.assert_array_equal(z.grad, 2.0 * (z.numpy() > 0))
