"""i0, i0e, i1, i1e: values and first and second derivatives against torch.special, gradient
checks, the limits at 0 and the scaled forms past I_0's overflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_double_backward_with_torch, compare_with_torch
from lamina import functional as F

NAMES = ["i0", "i0e", "i1", "i1e"]


def _points(seed=0, large=25.0):
    """Negative and positive values of several magnitudes, and exactly 0."""
    x = np.random.default_rng(seed).uniform(-6.0, 6.0, (3, 5))
    x[0, 0], x[1, 1], x[2, 2] = 0.0, large, -0.01
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_values_and_gradients_match_torch(name, dtype):
    compare_with_torch(getattr(F, name), getattr(torch.special, name), _points(), dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
def test_second_derivatives_match_torch(name):
    compare_double_backward_with_torch(getattr(F, name), getattr(torch.special, name), _points(1), rtol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_first_and_second_order(name):
    # centred differences of a sum holding I_0(25) ~ 5e9 lose every digit, and the scaled forms'
    # e^(-|x|) has a kink at 0, where their second derivative jumps
    x = _points(2, large=9.0)
    x[0, 0] = 0.3
    assert check_gradients(getattr(F, name), x)
    assert check_second_derivatives(getattr(F, name), x)


def test_derivatives_at_zero_are_the_limits():
    x = lamina.tensor(np.zeros(1), dtype=np.float64, requires_grad=True)
    slopes = {name: lamina.autograd.grad(getattr(F, name)(x).sum(), [x])[0] for name in NAMES}
    slopes = {name: float(np.asarray(getattr(g, "data", g))[0]) for name, g in slopes.items()}
    assert slopes["i0"] == 0.0 and slopes["i1"] == 0.5 and slopes["i1e"] == 0.5
    # i0e'(0) = i1e(0) - sign(0) i0e(0) = 0 (torch gives the same one-sided value)
    assert slopes["i0e"] == 0.0


def test_scaled_forms_stay_finite_where_the_functions_overflow():
    values = np.array([800.0, -800.0])
    x, t = lamina.tensor(values, dtype=np.float64), torch.tensor(values, dtype=torch.float64)
    assert np.isinf(F.i0(x).numpy()).all()
    np.testing.assert_allclose(F.i0e(x).numpy(), torch.special.i0e(t).numpy(), rtol=1e-12)
    np.testing.assert_allclose(F.i1e(x).numpy(), torch.special.i1e(t).numpy(), rtol=1e-12)


def test_integer_input_gives_the_default_float_dtype():
    y = F.i0(lamina.tensor(np.array([0, 1, 2])))
    assert y.dtype == lamina.get_default_dtype()
    np.testing.assert_allclose(y.numpy(), torch.special.i0(torch.tensor([0.0, 1.0, 2.0])).numpy(), rtol=1e-6)
