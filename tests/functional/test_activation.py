"""Activations, functional and as Tensor methods: gradients, PyTorch agreement and stability."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import helpers
import lamina
import lamina.functional as F
from helpers import compare_scalar_with_torch, compare_with_torch, op_table_tests, randn

nonzero = functools.partial(helpers.nonzero, low=0.1, high=3.0)  # away from the kink of relu-likes



# name: (lamina function, torch function, inputs)
CASES = {
    "sigmoid": (F.sigmoid, torch.sigmoid, [randn(3, 4, scale=3)]),
    "sigmoid_method": (lambda z: z.sigmoid(), lambda z: z.sigmoid(), [randn(5, scale=3)]),
    "tanh": (F.tanh, torch.tanh, [randn(3, 4, scale=2)]),
    "tanh_method": (lambda z: z.tanh(), lambda z: z.tanh(), [randn(5, scale=2)]),
    "relu": (F.relu, torch.relu, [nonzero(3, 4)]),
    "relu_method": (lambda z: z.relu(), lambda z: z.relu(), [nonzero(5)]),
    "leaky_relu_default": (F.leaky_relu, TF.leaky_relu, [nonzero(3, 4)]),
    "leaky_relu_alpha": (lambda z: F.leaky_relu(z, alpha=0.2), lambda z: TF.leaky_relu(z, 0.2), [nonzero(3, 4)]),
    "leaky_relu_method": (lambda z: z.leaky_relu(0.3), lambda z: TF.leaky_relu(z, 0.3), [nonzero(5)]),
    "elu_default": (F.elu, TF.elu, [nonzero(3, 4)]),
    "elu_alpha": (lambda z: F.elu(z, alpha=0.5), lambda z: TF.elu(z, alpha=0.5), [nonzero(3, 4)]),
    "elu_method": (lambda z: z.elu(1.7), lambda z: TF.elu(z, alpha=1.7), [nonzero(5)]),
    "selu": (F.selu, TF.selu, [nonzero(3, 4)]),
    "selu_method": (lambda z: z.selu(), TF.selu, [nonzero(5)]),
    "softmax_last": (F.softmax, lambda z: TF.softmax(z, dim=-1), [randn(3, 4, scale=2)]),
    "softmax_axis0": (lambda z: F.softmax(z, axis=0), lambda z: TF.softmax(z, dim=0), [randn(3, 4, scale=2)]),
    "softmax_axis1_3d": (lambda z: z.softmax(axis=1), lambda z: TF.softmax(z, dim=1), [randn(2, 3, 4, scale=2)]),
    "softmax_1d": (lambda z: z.softmax(), lambda z: TF.softmax(z, dim=0), [randn(5, scale=2)]),
    "log_softmax_last": (F.log_softmax, lambda z: TF.log_softmax(z, dim=-1), [randn(3, 4, scale=2)]),
    "log_softmax_axis0": (lambda z: F.log_softmax(z, axis=0), lambda z: TF.log_softmax(z, dim=0),
                          [randn(3, 4, scale=2)]),
    "log_softmax_axis1_3d": (lambda z: z.log_softmax(axis=1), lambda z: TF.log_softmax(z, dim=1),
                             [randn(2, 3, 4, scale=2)]),
    "log_softmax_method": (lambda z: z.log_softmax(-1), lambda z: TF.log_softmax(z, dim=-1), [randn(2, 5)]),
}


test_matches_torch, test_gradcheck = op_table_tests(CASES)


def test_relu_gradient_at_zero_is_zero():
    z = lamina.tensor(np.array([-1.0, 0.0, 1.0]), requires_grad=True)
    z.relu().sum().backward()
    np.testing.assert_array_equal(z.grad, [0.0, 0.0, 1.0])


def test_softmax_rows_sum_to_one():
    a = F.softmax(lamina.tensor(randn(4, 6, scale=5)), axis=-1)
    np.testing.assert_allclose(a.numpy().sum(axis=-1), 1.0, rtol=1e-6)
    assert (a.numpy() > 0).all()


EXTREMES = np.array([-1e4, -3e3, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 3e3, 1e4])

STABILITY = {
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, alpha=0.1),
    "elu": F.elu,
    "selu": F.selu,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    "softmax_axis0": lambda z: F.softmax(z, axis=0),
    "log_softmax_axis0": lambda z: F.log_softmax(z, axis=0),
}


@pytest.mark.parametrize("name", list(STABILITY))
def test_finite_at_extreme_inputs_in_float32(name):
    fn = STABILITY[name]
    for data in (EXTREMES, EXTREMES.reshape(1, -1), np.stack([EXTREMES, -EXTREMES[::-1] * 0.5])):
        z = lamina.tensor(data, requires_grad=True, dtype=np.float32)
        with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
            out = fn(z)
            up = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
            out.backward(up)
        assert out.dtype == np.float32
        assert np.isfinite(out.numpy()).all(), f"{name} output {out.numpy()}"
        assert np.isfinite(z.grad).all(), f"{name} gradient {z.grad}"


def test_extreme_values_are_right():
    z = lamina.tensor(np.array([-1e4, 0.0, 1e4]), requires_grad=True)
    np.testing.assert_array_equal(F.sigmoid(z).numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(F.softmax(z).numpy(), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(F.log_softmax(z).numpy(), [-2e4, -1e4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(F.elu(z).numpy(), [-1.0, 0.0, 1e4])
    np.testing.assert_allclose(F.selu(z).numpy(), [-1.0507009873554805 * 1.6732632423543772, 0.0,
                                                   1.0507009873554805 * 1e4], rtol=1e-6)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softmax", "log_softmax", "elu", "selu"])
def test_matches_torch_at_extreme_inputs(name):
    theirs = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "softmax": lambda z: TF.softmax(z, dim=-1),
              "log_softmax": lambda z: TF.log_softmax(z, dim=-1), "elu": TF.elu, "selu": TF.selu}[name]
    data = np.stack([EXTREMES, np.random.default_rng(1).permutation(EXTREMES)])
    data[data == 0.0] = 0.5  # no kink at 0
    compare_with_torch(STABILITY[name], theirs, data, dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["elu", "selu", "relu", "leaky_relu", "sigmoid", "tanh"])
def test_zero_dimensional_input_matches_torch(name, dtype):
    theirs = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}.get(name) or getattr(TF, name)
    compare_scalar_with_torch(getattr(F, name), theirs, (-2.0, 0.0, 0.7), dtype)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((2, 0), 1), ((2, 0), 0), ((0, 3), -1), ((0,), 0)], ids=str)
def test_softmax_of_an_empty_input_is_empty_as_torch(name, shape, axis, create_graph):
    z = lamina.tensor(np.zeros(shape), dtype=np.float64, requires_grad=True)
    a = getattr(F, name)(z, axis=axis)
    assert a.shape == tuple(getattr(torch, name)(torch.zeros(shape, dtype=torch.float64), dim=axis).shape)
    (grad,) = lamina.autograd.grad(a.sum(), [z], create_graph=create_graph)
    assert grad.shape == shape
