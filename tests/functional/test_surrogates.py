"""Spike functions with surrogate gradients: the step forward, the surrogate's formula backward,
against PyTorch autograd Functions (values, gradients, second derivatives)."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    assert_close,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import functional as F
from spiking_checks import torch_spike

# name -> (the options used, g(u) written with NumPy)
CASES = {
    "fast_sigmoid": ({"slope": 7.0}, lambda u, slope: 1 / (slope * np.abs(u) + 1) ** 2),
    "atan": ({"alpha": 3.0}, lambda u, alpha: alpha / 2 / (1 + (math.pi / 2 * alpha * u) ** 2)),
    "sigmoid": ({"slope": 4.0}, lambda u, slope: slope * np.exp(-slope * u) / (1 + np.exp(-slope * u)) ** 2),
    "straight_through": ({}, lambda u: np.ones_like(u)),
    "triangular": ({"width": 0.8}, lambda u, width: np.maximum(0, 1 - np.abs(u) / width) / width),
}
WRAPPERS = {"fast_sigmoid": F.spike_fast_sigmoid, "atan": F.spike_atan, "sigmoid": F.spike_sigmoid,
            "straight_through": F.spike_straight_through, "triangular": F.spike_triangular}


def _inputs():
    u = randn(4, 5, seed=3)
    u[0, :3] = [0.0, -1e-9, 1e-9]          # at and around the step
    return u


@pytest.mark.parametrize("name", list(CASES))
def test_forward_is_the_step_and_backward_the_formula(name):
    options, formula = CASES[name]
    u = _inputs()
    x = lamina.tensor(u, requires_grad=True, dtype=np.float64)
    s = WRAPPERS[name](x, **options)
    assert s.dtype == np.float64
    np.testing.assert_array_equal(s.numpy(), (u > 0).astype(np.float64))
    up = randn(4, 5, seed=4)
    (s * lamina.tensor(up, dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(x.grad, up * formula(u, **options), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_a_torch_autograd_function(name, dtype):
    options, _ = CASES[name]
    compare_with_torch(lambda u: F.surrogate(name, **options)(u), torch_spike(name, **options), _inputs(),
                       dtype=dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_second_derivatives_are_those_of_the_surrogate(name):
    options, _ = CASES[name]
    u = randn(3, 4, seed=5)                # away from the kinks of |u| at 0 and of the triangle at +-width
    compare_double_backward_with_torch(WRAPPERS[name] if not options else (lambda v: WRAPPERS[name](v, **options)),
                                       torch_spike(name, **options), u)


@pytest.mark.parametrize("name", ["fast_sigmoid", "atan", "sigmoid", "triangular"])
def test_recorded_backward_passes_a_second_derivative_check(name):
    """The gradient r g(u), recorded with create_graph, differentiated again by finite differences."""
    options, _ = CASES[name]
    assert check_second_derivatives(lambda u: F.surrogate(name, **options)(u), randn(3, 4, seed=7))


def test_default_options_are_snntorch_ones():
    u = randn(6, seed=8)
    x = lamina.tensor(u, requires_grad=True, dtype=np.float64)
    F.spike_fast_sigmoid(x).sum().backward()
    assert_close(x.grad, 1 / (25 * np.abs(u) + 1) ** 2, 1e-12)
    x.grad = None
    F.spike_atan(x).sum().backward()
    assert_close(x.grad, 1 / (1 + (math.pi * u) ** 2), 1e-12)
    assert F.surrogate().get_config() == {"name": "atan", "alpha": 2.0}


def test_surrogate_objects_round_trip_and_compare():
    s = F.surrogate("fast_sigmoid", slope=10)
    assert F.surrogate(**s.get_config()) == s
    assert s != F.surrogate("fast_sigmoid") and "slope=10" in repr(s)
    assert set(F.SURROGATES) == set(CASES)


def test_bad_options_are_refused_clearly():
    with pytest.raises(ValueError, match=r"unknown surrogate 'relu'.*fast_sigmoid"):
        F.surrogate("relu")
    with pytest.raises(ValueError, match=r"surrogate\('atan'\): unknown option\(s\) \['slope'\]; it takes \['alpha'\]"):
        F.surrogate("atan", slope=3)
    with pytest.raises(ValueError, match="spike_fast_sigmoid: slope must be a positive finite number, got -1"):
        F.spike_fast_sigmoid(np.zeros(2), slope=-1)
    with pytest.raises(ValueError, match="spike_triangular: width"):
        F.surrogate("triangular", width=0)


def test_the_step_of_an_untracked_input_is_a_constant():
    s = F.spike_atan(torch.zeros(1).numpy() + 0.5)
    assert not s.requires_grad and s.numpy().tolist() == [1.0]
