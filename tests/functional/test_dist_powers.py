"""dist for every finite p against torch.dist: (sum |a - b|^p)^(1/p) for 0 < p < 1 and p < 0,
with zero differences (no gradient to them; a negative p then gives 0), broadcasting, float32
and float64 values and gradients, second derivatives, finite differences, and bad p."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, nonzero, randn
from lamina import functional as F

SMALL_POWERS = [-3.5, -2.0, -1.0, -0.5, 0.3, 0.5, 0.9]


def with_zeros(a, b):
    """``b`` equal to ``a`` at two places: two differences exactly 0."""
    b = np.array(b, dtype=np.float64)
    b[0, 1], b[2, 3] = a[0, 1], a[2, 3]
    return b


@pytest.mark.parametrize("p", SMALL_POWERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dist_of_small_and_negative_p_equals_torch_values_and_gradients(p, dtype):
    a = randn(3, 4, seed=1)
    compare_with_torch(lambda x, y: F.dist(x, y, p), lambda x, y: torch.dist(x, y, p), a, randn(3, 4, seed=2),
                       dtype=dtype)
    compare_with_torch(lambda x, y: F.dist(x, y, p), lambda x, y: torch.dist(x, y, p), randn(3, 1, seed=3),
                       randn(5, seed=4), dtype=dtype)                                   # broadcast


@pytest.mark.parametrize("p", SMALL_POWERS)
def test_zero_differences_get_no_gradient_as_in_torch(p):
    a = randn(3, 4, seed=5)
    b = with_zeros(a, randn(3, 4, seed=6))
    out = compare_with_torch(lambda x, y: F.dist(x, y, p), lambda x, y: torch.dist(x, y, p), a, b,
                             dtype=np.float64)[0]
    if p < 0:
        assert float(out.numpy()) == 0.0
    ours = lamina.tensor(a, dtype=np.float64, requires_grad=True)
    F.dist(ours, lamina.tensor(b, dtype=np.float64), p).backward()
    assert ours.grad[0, 1] == 0 and ours.grad[2, 3] == 0 and np.all(np.isfinite(ours.grad))
    assert (np.count_nonzero(ours.grad) == 0) == (p < 0)
    same = compare_with_torch(lambda x: F.dist(x, x * 1.0, p), lambda x: torch.dist(x, x * 1.0, p), a,
                              dtype=np.float64)[0]                                     # every difference 0
    assert float(same.numpy()) == 0.0


@pytest.mark.parametrize("p", SMALL_POWERS)
def test_dist_gradients_match_finite_differences_and_torchs_second_derivatives(p):
    a, b = nonzero(2, 3, seed=7), nonzero(2, 3, seed=8) * 0.3
    assert check_gradients(lambda x, y: F.dist(x, y, p), a, b)
    compare_double_backward_with_torch(lambda x, y: F.dist(x, y, p), lambda x, y: torch.dist(x, y, p), a, b,
                                       rtol=1e-8)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_float32_overflow_of_a_tiny_difference_gives_torchs_nan_gradient():
    a = np.array([1e-20, 1.0], np.float32)
    ours = lamina.tensor(a, requires_grad=True)
    theirs = torch.tensor(a, requires_grad=True)
    value, expected = F.dist(ours, np.zeros(2, np.float32), -2.0), torch.dist(theirs, torch.zeros(2), -2.0)
    value.backward()
    expected.backward()
    assert float(value.numpy()) == expected.item() == 0.0
    np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())                   # [nan, 0]


def test_empty_inputs_and_bad_p():
    empty = lamina.tensor(np.zeros((0, 3)))
    assert float(F.dist(empty, empty, 0.5).numpy()) == torch.dist(torch.zeros(0, 3), torch.zeros(0, 3), 0.5).item()
    with pytest.raises(ValueError, match=r"dist: p=-2.0 of empty inputs \(difference of shape \(0, 3\)\)"):
        F.dist(empty, empty, -2.0)
    with pytest.raises(ValueError, match=r"dist: p=-inf of empty inputs"):
        F.dist(empty, empty, -np.inf)
    with pytest.raises(ValueError, match="dist: p must be a real number .* got nan"):
        F.dist(empty, empty, float("nan"))
    with pytest.raises(ValueError, match="dist: p must be a real number .* got '2'"):
        F.dist(empty, empty, "2")


@pytest.mark.parametrize("p", [1.5, 2.5, 3, 4])
def test_all_zero_differences_give_a_zero_gradient_as_torch(p):
    a = lamina.tensor(np.ones(3), dtype=np.float64, requires_grad=True)
    F.dist(a, lamina.tensor(np.ones(3), dtype=np.float64), p).backward()
    at = torch.ones(3, dtype=torch.float64, requires_grad=True)
    torch.dist(at, torch.ones(3, dtype=torch.float64), p).backward()
    np.testing.assert_array_equal(a.grad, at.grad.numpy())


def test_renorm_of_a_zero_slice_passes_the_gradient_as_torch():
    x = lamina.tensor(np.zeros((2, 3)), dtype=np.float64, requires_grad=True)
    F.renorm(x, 3, 0, 1.0).sum().backward()
    xt = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    torch.renorm(xt, 3, 0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, xt.grad.numpy())


@pytest.mark.parametrize("p", [np.float32(3), np.int64(3), np.float64(-0.5)])
def test_numpy_number_powers_are_accepted(p):
    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 2.0])
    got = F.dist(lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64), p)
    np.testing.assert_allclose(got.item(), torch.dist(torch.tensor(a), torch.tensor(b), float(p)).item())


@pytest.mark.parametrize("p", [3.0, 0.5, 2.0, 1.0, float("inf"), -1.0])
@pytest.mark.parametrize("d", [1e150, -2.0, 0.0])
def test_dist_of_one_difference_is_its_size_without_overflow(p, d):
    """|d|^p of one huge difference overflows; torch, and lamina, give |d| itself."""
    a = lamina.tensor(np.array([[d]]), requires_grad=True, dtype=np.float64)
    y = F.dist(a, np.zeros((1, 1)), p)
    y.backward()
    expected = torch.dist(torch.tensor([[d]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), p)
    assert y.shape == () and y.item() == expected.item() == abs(d)
    assert a.grad[0, 0] == np.sign(d)
