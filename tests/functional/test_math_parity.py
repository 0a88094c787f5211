"""PyTorch-named math, reductions, statistics and scans (math_parity, stats_parity,
scan_parity): values and gradients against torch, gradient checks, second derivatives, and
torch's rules for ties, NaN and empty inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import (
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    nonzero,
    op_table_tests,
    positive,
    randn,
)
from lamina.errors import ShapeError


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def distinct(*shape, seed=0):
    """Values spaced at least 0.1 apart (no ties, so no kinks for the order statistics)."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(n).reshape(shape) * 0.1 - 0.05 * n


def ties(*shape, seed=0, levels=4):
    return np.random.default_rng(seed).integers(0, levels, shape).astype(np.float64)


def joined(fn):
    """A two-output op as one output, first + 2 second (the gradient check takes one)."""
    def one(*xs):
        first, second = fn(*xs)
        return first + 2.0 * second
    return one


X = randn(3, 4)
POINTS = np.array([0.0, 0.3, 1.1, 1.5])
COUNTS = np.array([1, 3, 2, 1, 2])

# name: (lamina function, torch function, inputs)
CASES = {
    "sinh": (F.sinh, torch.sinh, [X]),
    "cosh": (F.cosh, torch.cosh, [X]),
    "asinh": (F.asinh, torch.asinh, [randn(3, 4, scale=2.0)]),
    "acosh": (F.acosh, torch.acosh, [uniform(1.2, 3.0, 3, 4)]),
    "atanh": (F.atanh, torch.atanh, [uniform(-0.8, 0.8, 3, 4)]),
    "asin": (F.asin, torch.asin, [uniform(-0.8, 0.8, 3, 4)]),
    "acos": (F.acos, torch.acos, [uniform(-0.8, 0.8, 3, 4)]),
    "atan": (F.atan, torch.atan, [randn(3, 4, scale=2.0)]),
    "exp2": (F.exp2, torch.exp2, [X]),
    "sinc": (F.sinc, torch.sinc, [nonzero(3, 4, low=0.1)]),
    "frac": (F.frac, torch.frac, [uniform(-2.9, -2.1, 2, 3)]),
    "fmod": (F.fmod, torch.fmod, [uniform(0.1, 0.9, 3, 4) + np.arange(4), np.array([0.7, -1.3, 1.9, -2.3])]),
    "remainder": (F.remainder, torch.remainder,
                  [uniform(0.1, 0.9, 3, 4) - np.arange(4), np.array([1.3, -1.3, 2.0, -2.1])]),
    "copysign": (F.copysign, torch.copysign, [nonzero(3, 4), nonzero(3, 4, seed=1)]),
    "hypot": (F.hypot, torch.hypot, [X, nonzero(3, 4, seed=1)]),
    "hypot_broadcast": (F.hypot, torch.hypot, [randn(2, 1, 4), nonzero(3, 1, seed=1)]),
    "logaddexp": (F.logaddexp, torch.logaddexp, [X, randn(1, 4, seed=1)]),
    "logaddexp2": (F.logaddexp2, torch.logaddexp2, [X, randn(3, 4, seed=1)]),
    "lerp": (F.lerp, torch.lerp, [X, randn(3, 4, seed=1), uniform(0, 1, 3, 4, seed=2)]),
    "lerp_number": (lambda a, b: F.lerp(a, b, 0.3), lambda a, b: torch.lerp(a, b, 0.3), [X, randn(3, 4, seed=1)]),
    "addcmul": (lambda x, a, b: F.addcmul(x, a, b, value=0.5), lambda x, a, b: torch.addcmul(x, a, b, value=0.5),
                [X, randn(3, 4, seed=1), randn(4, seed=2)]),
    "addcdiv": (lambda x, a, b: F.addcdiv(x, a, b, value=-2.0), lambda x, a, b: torch.addcdiv(x, a, b, value=-2.0),
                [X, randn(3, 4, seed=1), nonzero(3, 4, seed=2)]),
    "clamp_tensors": (lambda x, lo, hi: F.clamp(x, lo, hi), lambda x, lo, hi: torch.clamp(x, lo, hi),
                      [distinct(3, 4), distinct(1, 4, seed=1) - 0.33, distinct(3, 1, seed=2) + 0.37]),
    "clamp_min_tensor": (lambda x, lo: F.clamp(x, min=lo), lambda x, lo: torch.clamp(x, min=lo),
                         [distinct(3, 4), distinct(3, 4, seed=1) + 0.03]),
    "clamp_numbers": (lambda x: F.clamp(x, -0.52, 0.47), lambda x: torch.clamp(x, -0.52, 0.47), [distinct(3, 4)]),
    "amax": (lambda x: F.amax(x, axis=1), lambda x: torch.amax(x, dim=1), [X]),
    "amin_axes": (lambda x: F.amin(x, axis=(0, 2), keepdims=True), lambda x: torch.amin(x, dim=(0, 2), keepdim=True),
                  [randn(2, 3, 4)]),
    "aminmax": (joined(lambda x: F.aminmax(x, axis=0)), joined(lambda x: torch.aminmax(x, dim=0)), [X]),
    "nansum": (lambda x: F.nansum(x, axis=0), lambda x: torch.nansum(x, dim=0), [X]),
    "nanmean": (lambda x: F.nanmean(x, axis=1, keepdims=True), lambda x: torch.nanmean(x, dim=1, keepdim=True), [X]),
    "median_all": (F.median, torch.median, [distinct(3, 4)]),
    "median_axis": (lambda x: F.median(x, axis=1)[0], lambda x: torch.median(x, dim=1)[0], [distinct(3, 4)]),
    "nanmedian_axis": (lambda x: F.nanmedian(x, axis=0, keepdims=True)[0],
                       lambda x: torch.nanmedian(x, dim=0, keepdim=True)[0], [distinct(4, 3)]),
    "kthvalue": (lambda x: F.kthvalue(x, 3, axis=0)[0], lambda x: torch.kthvalue(x, 3, dim=0)[0], [distinct(5, 3)]),
    "mode": (lambda x: F.mode(x, axis=1)[0], lambda x: torch.mode(x, dim=1)[0], [distinct(3, 4)]),
    "quantile": (lambda x: F.quantile(x, 0.3, axis=1), lambda x: torch.quantile(x, 0.3, dim=1), [distinct(3, 5)]),
    "quantile_vector_q": (lambda x: F.quantile(x, np.array([0.1, 0.5, 0.85]), axis=0, keepdims=True),
                          lambda x: torch.quantile(x, torch.tensor([0.1, 0.5, 0.85], dtype=x.dtype), dim=0,
                                                   keepdim=True), [distinct(5, 3)]),
    "quantile_all": (lambda x: F.quantile(x, 0.62), lambda x: torch.quantile(x, 0.62), [distinct(3, 4)]),
    "nanquantile": (lambda x: F.nanquantile(x, 0.4, axis=1), lambda x: torch.nanquantile(x, 0.4, dim=1),
                    [distinct(3, 5)]),
    "std_mean": (joined(lambda x: F.std_mean(x, axis=1)), joined(lambda x: torch.std_mean(x, dim=1)), [X]),
    "var_mean": (joined(lambda x: F.var_mean(x, axis=0, correction=0)),
                 joined(lambda x: torch.var_mean(x, dim=0, correction=0)), [X]),
    "cov": (F.cov, torch.cov, [randn(3, 6)]),
    "cov_1d": (F.cov, torch.cov, [randn(6)]),
    "cov_fweights": (lambda x: F.cov(x, fweights=COUNTS), lambda x: torch.cov(x, fweights=torch.tensor(COUNTS)),
                     [randn(2, 5)]),
    "cov_aweights": (lambda x, w: F.cov(x, correction=2, fweights=COUNTS, aweights=w),
                     lambda x, w: torch.cov(x, correction=2, fweights=torch.tensor(COUNTS), aweights=w),
                     [randn(2, 5), positive(5, seed=3)]),
    "cov_correction0": (lambda x, w: F.cov(x, correction=0, aweights=w),
                        lambda x, w: torch.cov(x, correction=0, aweights=w), [randn(2, 5), positive(5, seed=3)]),
    "corrcoef": (F.corrcoef, torch.corrcoef, [randn(3, 6)]),
    "renorm": (lambda x: F.renorm(x, 2, 0, 1.5), lambda x: torch.renorm(x, 2, 0, 1.5), [randn(4, 3, scale=1.5)]),
    "renorm_p3": (lambda x: F.renorm(x, 3, 1, 1.0), lambda x: torch.renorm(x, 3, 1, 1.0), [randn(4, 3, scale=1.5)]),
    "dist": (F.dist, torch.dist, [X, randn(4, seed=1)]),
    "dist_p3": (lambda a, b: F.dist(a, b, 3), lambda a, b: torch.dist(a, b, 3), [X, randn(3, 4, seed=1)]),
    "dist_minus_inf": (lambda a, b: F.dist(a, b, -np.inf), lambda a, b: torch.dist(a, b, -np.inf),
                       [X, randn(3, 4, seed=1)]),
    "diff": (lambda x: F.diff(x, n=2, axis=0), lambda x: torch.diff(x, n=2, dim=0), [randn(5, 3)]),
    "diff_ends": (lambda x, p: F.diff(x, prepend=p, append=2.0),
                  lambda x, p: torch.diff(x, prepend=p, append=torch.full((3, 1), 2.0, dtype=x.dtype)),
                  [randn(3, 4), randn(3, 2, seed=1)]),
    "trapezoid": (lambda y: F.trapezoid(y, dx=0.5), lambda y: torch.trapezoid(y, dx=0.5), [randn(3, 4)]),
    "trapezoid_points": (lambda y: F.trapezoid(y, POINTS, axis=0), lambda y: torch.trapezoid(y, torch.tensor(
        POINTS, dtype=y.dtype), dim=0), [randn(4, 3)]),
    "cumulative_trapezoid": (lambda y, x: F.cumulative_trapezoid(y, x), torch.cumulative_trapezoid,
                             [randn(3, 4), np.sort(randn(3, 4, seed=1), axis=1)]),
    "logcumsumexp": (lambda x: F.logcumsumexp(x, axis=1), lambda x: torch.logcumsumexp(x, dim=1), [randn(3, 5)]),
    "cummax": (lambda x: F.cummax(x, axis=0)[0], lambda x: torch.cummax(x, dim=0)[0], [distinct(4, 3)]),
    "cummin": (lambda x: F.cummin(x, axis=1)[0], lambda x: torch.cummin(x, dim=1)[0], [distinct(3, 4)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


# -- second derivatives: every new primitive and some composites -----------------------------
SECOND = {
    "sinh": (F.sinh, torch.sinh, [X]),
    "cosh": (F.cosh, torch.cosh, [X]),
    "asinh": (F.asinh, torch.asinh, [X]),
    "acosh": (F.acosh, torch.acosh, [uniform(1.2, 3.0, 3, 4)]),
    "atanh": (F.atanh, torch.atanh, [uniform(-0.8, 0.8, 3, 4)]),
    "asin": (F.asin, torch.asin, [uniform(-0.8, 0.8, 3, 4)]),
    "acos": (F.acos, torch.acos, [uniform(-0.8, 0.8, 3, 4)]),
    "atan": (F.atan, torch.atan, [X]),
    "exp2": (F.exp2, torch.exp2, [X]),
    "hypot": (F.hypot, torch.hypot, [X, nonzero(3, 4, seed=1)]),
    "logaddexp": (F.logaddexp, torch.logaddexp, [X, randn(1, 4, seed=1)]),
    "logaddexp2": (F.logaddexp2, torch.logaddexp2, [X, randn(3, 4, seed=1)]),
    "fmod_squared": (lambda a, b: F.fmod(a, b) ** 2, lambda a, b: torch.fmod(a, b) ** 2,
                     [uniform(0.1, 0.9, 3, 4) + np.arange(4), np.array([0.7, -1.3, 1.9, -2.3])]),
    "remainder_squared": (lambda a, b: F.remainder(a, b) ** 2, lambda a, b: torch.remainder(a, b) ** 2,
                          [uniform(0.1, 0.9, 3, 4) - np.arange(4), np.array([1.3, -1.3, 2.0, -2.1])]),
    "copysign_squared": (lambda a, b: F.copysign(a, b) ** 2, lambda a, b: torch.copysign(a, b) ** 2,
                         [nonzero(3, 4), nonzero(3, 4, seed=1)]),
    "logcumsumexp": (lambda x: F.logcumsumexp(x, axis=0), lambda x: torch.logcumsumexp(x, dim=0), [randn(4, 3)]),
    "sinc": (F.sinc, torch.sinc, [nonzero(3, 4, low=0.1)]),
    "quantile_squared": (lambda x: F.quantile(x, 0.3, axis=1) ** 2, lambda x: torch.quantile(x, 0.3, dim=1) ** 2,
                         [distinct(3, 5)]),
    "cov": (F.cov, torch.cov, [randn(3, 5)]),
    "corrcoef": (F.corrcoef, torch.corrcoef, [randn(3, 5)]),
    "renorm": (lambda x: F.renorm(x, 2, 0, 1.5), lambda x: torch.renorm(x, 2, 0, 1.5), [randn(4, 3, scale=1.5)]),
    "amax_squared": (lambda x: F.amax(x, axis=1) ** 2, lambda x: torch.amax(x, dim=1) ** 2, [X]),
}


@pytest.mark.parametrize("name", list(SECOND))
def test_second_derivatives_match_torch(name):
    ours, theirs, inputs = SECOND[name]
    compare_double_backward_with_torch(ours, theirs, *inputs)


@pytest.mark.parametrize("name", ["hypot", "logaddexp", "logcumsumexp", "corrcoef"])
def test_second_derivatives_by_differences(name):
    ours, _, inputs = SECOND[name]
    assert check_second_derivatives(ours, *inputs)


# -- ties, NaN and empty inputs ----------------------------------------------------------------
def _both(x):
    return lamina.tensor(x, dtype=x.dtype), torch.tensor(x)


@pytest.mark.parametrize("n", [1, 4, 5, 6, 17, 40])
def test_median_takes_the_lower_middle_and_torchs_index_among_ties(n):
    x = ties(7, n, seed=n)
    ours, theirs = _both(x)
    values, indices = F.median(ours, axis=1)
    expected = torch.median(theirs, dim=1)
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(indices, expected.indices.numpy())


def test_median_and_nanmedian_with_nan():
    x = ties(6, 7, seed=3)
    x[np.random.default_rng(4).random(x.shape) < 0.3] = np.nan
    x[5] = np.nan
    ours, theirs = _both(x)
    for name in ("median", "nanmedian"):
        values, indices = getattr(F, name)(ours, axis=1)
        expected = getattr(torch, name)(theirs, dim=1)
        np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
        np.testing.assert_array_equal(indices, expected.indices.numpy())
        np.testing.assert_array_equal(getattr(F, name)(ours).numpy(), getattr(torch, name)(theirs).numpy())


@pytest.mark.parametrize("op", ["median", "nanmedian", "amax", "amin"])
def test_whole_reductions_split_the_gradient_among_ties_as_torch(op):
    x = np.array([[2.0, 1.0, 2.0], [3.0, 2.0, 3.0], [np.nan, 0.0, 2.0]]) if op == "nanmedian" else ties(3, 5, seed=1)
    compare_with_torch(getattr(F, op), getattr(torch, op), x, dtype=np.float64)


@pytest.mark.parametrize("p", [-np.inf, np.inf])
def test_dist_extreme_norms_split_the_gradient_among_ties_as_torch(p):
    compare_with_torch(lambda a, b: F.dist(a, b, p), lambda a, b: torch.dist(a, b, p), ties(3, 5, seed=1) + 0.5,
                       ties(5, seed=2), dtype=np.float64)


def test_amax_splits_the_gradient_among_ties_along_an_axis():
    compare_with_torch(lambda x: F.amax(x, axis=0), lambda x: torch.amax(x, dim=0), ties(5, 4, seed=2),
                       dtype=np.float64)


@pytest.mark.parametrize("n", [3, 9, 16, 17, 50])
def test_kthvalue_and_mode_report_torchs_indices_among_ties(n):
    x = ties(8, n, seed=n, levels=3)
    ours, theirs = _both(x)
    for k in (1, (n + 1) // 2, n):
        values, indices = F.kthvalue(ours, k, axis=1)
        expected = torch.kthvalue(theirs, k, dim=1)
        np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
        np.testing.assert_array_equal(indices, expected.indices.numpy())
    values, indices = F.mode(ours.T, axis=0)
    expected = torch.mode(theirs.T, dim=0)
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(indices, expected.indices.numpy())


def test_kthvalue_counts_nan_as_largest():
    x = np.array([[3.0, np.nan, 1.0, 1.0], [np.nan, np.nan, 2.0, 0.0]])
    ours, theirs = _both(x)
    for k in (1, 2, 3, 4):
        values, indices = F.kthvalue(ours, k)
        expected = torch.kthvalue(theirs, k)
        np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
        np.testing.assert_array_equal(indices, expected.indices.numpy())


@pytest.mark.parametrize("op", ["cummax", "cummin"])
def test_running_extremes_take_ties_and_nan_as_torch(op):
    x = ties(4, 9, seed=5, levels=3)
    x[1, 3] = x[2, 6] = x[2, 8] = np.nan
    ours, theirs = _both(x)
    values, indices = getattr(F, op)(ours, axis=1)
    expected = getattr(torch, op)(theirs, dim=1)
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(indices, expected.indices.numpy())
    compare_with_torch(lambda t: getattr(F, op)(t, axis=0)[0], lambda t: getattr(torch, op)(t, dim=0)[0],
                       ties(6, 3, seed=6), dtype=np.float64)


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
def test_quantile_interpolations_and_nan(interpolation):
    x = distinct(4, 6)
    x[1, 2] = np.nan
    x[3] = np.nan
    x[2, :3] = np.nan
    q = np.array([0.0, 0.1, 0.25, 0.5, 0.7, 1.0])
    for name in ("quantile", "nanquantile"):
        ours = getattr(F, name)(lamina.tensor(x, dtype=np.float64), q, axis=1, interpolation=interpolation)
        theirs = getattr(torch, name)(torch.tensor(x), torch.tensor(q), dim=1, interpolation=interpolation)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, equal_nan=True)
    clean = distinct(3, 5)
    compare_with_torch(lambda t: F.quantile(t, q, axis=0, interpolation=interpolation),
                       lambda t: torch.quantile(t, torch.tensor(q, dtype=t.dtype), dim=0, interpolation=interpolation),
                       clean, dtype=np.float64)


def test_nan_sums_skip_nan_and_pass_it_no_gradient():
    x = randn(3, 4)
    x[0, 1] = x[2, :] = np.nan
    some_nan = x[:2]                 # torch's nanmean gives an all-NaN row NaN gradients (0 / 0); lamina 0
    for op, rows in (("nansum", x), ("nanmean", some_nan)):
        compare_with_torch(lambda t, op=op: getattr(F, op)(t, axis=1), lambda t, op=op: getattr(torch, op)(t, dim=1),
                           rows, dtype=np.float64)
        compare_with_torch(getattr(F, op), getattr(torch, op), x, dtype=np.float64)
    t = lamina.tensor(x, dtype=np.float64, requires_grad=True)
    mean = F.nanmean(t, axis=1)
    assert np.isnan(mean.numpy()[2])
    mean[:2].sum().backward()
    np.testing.assert_array_equal(t.grad[2], 0.0)
    t.grad = None
    mean = F.nanmean(t, axis=1)
    mean.sum().backward()            # the all-NaN row's NaN upstream stops at its NaN inputs
    np.testing.assert_array_equal(t.grad[2], 0.0)


def test_clamp_with_crossed_bounds_and_nan_as_torch():
    x = np.array([-2.0, 0.5, 3.0, np.nan, 1.0])
    low, high = np.array([0.0, 1.0, 0.0, 0.0, 2.0]), np.array([1.0, 0.0, 1.0, 1.0, 1.5])
    ours = F.clamp(lamina.tensor(x, dtype=np.float64), lamina.tensor(low, dtype=np.float64),
                   lamina.tensor(high, dtype=np.float64))
    np.testing.assert_array_equal(ours.numpy(), torch.clamp(torch.tensor(x), torch.tensor(low), torch.tensor(high)))
    finite = np.nan_to_num(x)
    compare_with_torch(F.clamp, torch.clamp, finite, low, high, dtype=np.float64)


@pytest.mark.parametrize("bounds", ["tensors", "numbers"])
def test_clamp_gives_nan_no_gradient_as_torch(bounds):
    x_np, low_np, high_np = np.array([np.nan, 0.5, 2.0, -1.0]), np.zeros(4), np.ones(4)
    x, tx = lamina.tensor(x_np, dtype=np.float64, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    if bounds == "tensors":
        low, high = (lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in (low_np, high_np))
        tlow, thigh = (torch.tensor(v, requires_grad=True) for v in (low_np, high_np))
    else:
        low, high, tlow, thigh = 0.0, 1.0, 0.0, 1.0
    y, ty = F.clamp(x, low, high), torch.clamp(tx, tlow, thigh)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())
    if bounds == "tensors":
        np.testing.assert_array_equal(low.grad, tlow.grad.numpy())
        np.testing.assert_array_equal(high.grad, thigh.grad.numpy())


def test_logcumsumexp_keeps_small_early_terms():
    x = np.array([[-1000.0, 0.0, -2000.0, 800.0], [5.0, -np.inf, 3.0, 1.0]])
    compare_with_torch(lambda t: F.logcumsumexp(t, axis=1), lambda t: torch.logcumsumexp(t, dim=1), x,
                       dtype=np.float64)


def test_predicates_and_counts_match_torch():
    a = ties(3, 4, seed=7) - 1.0
    b = a + np.array([0.0, 1e-7, 1e-3, 0.0])
    b[0, 0] = a[0, 0] = np.nan
    ta, tb = torch.tensor(a), torch.tensor(b)
    la, lb = lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64)
    np.testing.assert_array_equal(F.isclose(la, lb).numpy(), torch.isclose(ta, tb).numpy())
    np.testing.assert_array_equal(F.isclose(la, lb, equal_nan=True).numpy(), torch.isclose(ta, tb, equal_nan=True))
    assert F.allclose(la, la, equal_nan=True) and not F.allclose(la, lb)
    np.testing.assert_array_equal(F.count_nonzero(la, axis=1).numpy(), torch.count_nonzero(ta, dim=1).numpy())
    assert F.count_nonzero(la).numpy() == torch.count_nonzero(ta).item()
    np.testing.assert_array_equal(F.all(la, axis=0).numpy(), torch.all(ta, dim=0).numpy())
    np.testing.assert_array_equal(F.any(la == 1.0, axis=1).numpy(), torch.any(ta == 1.0, dim=1).numpy())
    values = np.array([0.5, 0.25, 2.0, 0.0])
    np.testing.assert_array_equal(F.heaviside(la, values).numpy(), torch.heaviside(ta, torch.tensor(values)))
    assert not F.heaviside(lamina.tensor(a, requires_grad=True, dtype=np.float64), 0.5).requires_grad


def test_empty_inputs_as_torch():
    empty = np.zeros((2, 0))
    ours, theirs = _both(empty)
    np.testing.assert_array_equal(F.nansum(ours, axis=1).numpy(), torch.nansum(theirs, dim=1).numpy())
    assert F.diff(ours, axis=1).shape == torch.diff(theirs, dim=1).shape
    assert F.cummax(ours, axis=1)[0].shape == (2, 0)
    assert F.logcumsumexp(ours, axis=1).shape == (2, 0)
    np.testing.assert_array_equal(F.trapezoid(ours).numpy(), torch.trapezoid(theirs).numpy())
    np.testing.assert_array_equal(F.amax(ours, axis=0).numpy(), torch.amax(theirs, dim=0).numpy())
    for fn in (lambda t: F.amax(t, axis=1), lambda t: F.median(t, axis=1), lambda t: F.quantile(t, 0.5, axis=1)):
        with pytest.raises(ShapeError, match=r"\(2, 0\)"):
            fn(ours)


def test_tensor_methods():
    x = lamina.tensor(distinct(3, 4), dtype=np.float64)
    np.testing.assert_array_equal(x.clamp(max=0.0).numpy(), np.minimum(x.numpy(), 0.0))
    np.testing.assert_array_equal(x.amax(axis=1).numpy(), x.numpy().max(axis=1))
    np.testing.assert_array_equal(x.cummax(1)[0].numpy(), np.maximum.accumulate(x.numpy(), axis=1))
    np.testing.assert_allclose(x.sinh().numpy(), np.sinh(x.numpy()))
    np.testing.assert_allclose(x.quantile(0.5, axis=0).numpy(), np.quantile(x.numpy(), 0.5, axis=0))


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, words", [
    (lambda: F.hypot(randn(2, 3), randn(4)), ShapeError, r"hypot.*\(2, 3\).*\(4,\)"),
    (lambda: F.logaddexp(randn(2, 3), randn(2)), ShapeError, r"logaddexp.*\(2, 3\)"),
    (lambda: F.clamp(randn(2)), ValueError, "clamp: at least one of min and max"),
    (lambda: F.clamp(lamina.tensor(randn(2, 3)), lamina.tensor(randn(4))), ShapeError, r"clamp.*\(2, 3\).*\(4,\)"),
    (lambda: F.kthvalue(randn(2, 3), 4), ValueError, r"kthvalue: k must be an int in \[1, 3\].*\(2, 3\)"),
    (lambda: F.quantile(randn(2, 3), 1.5), ValueError, r"quantile: q must lie in \[0, 1\]"),
    (lambda: F.quantile(randn(2, 3), 0.5, interpolation="cubic"), ValueError, "quantile: interpolation"),
    (lambda: F.nanquantile(randn(2, 3), np.ones((2, 2)) / 2), ShapeError, r"nanquantile: q must be .* \(2, 2\)"),
    (lambda: F.median(randn(2, 3), axis=2), ShapeError, "median: axis 2 is out of range"),
    (lambda: F.cov(randn(2, 3, 4)), ShapeError, r"cov: x must be 1-D or 2-D .* \(2, 3, 4\)"),
    (lambda: F.cov(randn(2, 3), fweights=np.array([1.0, 2.0, 3.0])), ValueError, "cov: fweights must be 1-D integers"),
    (lambda: F.cov(randn(2, 3), aweights=np.ones(4)), ShapeError, r"cov: aweights must be 1-D of length 3"),
    (lambda: F.diff(randn(2, 3), prepend=randn(3, 1)), ShapeError, r"diff: prepend of shape \(3, 1\).*\(2, 3\)"),
    (lambda: F.trapezoid(randn(2, 3), np.arange(4.0)), ShapeError, r"trapezoid: x of length 4.*\(2, 3\)"),
    (lambda: F.std_mean(randn(1, 3), axis=0), ValueError, r"std_mean: correction=1 leaves .* \(1, 3\)"),
    (lambda: F.renorm(randn(2, 3), 0, 0, 1.0), ValueError, "renorm: p must be a number > 0"),
    (lambda: F.dist(randn(2, 3), randn(3), float("nan")), ValueError, r"dist: p must be a real number .* got nan"),
])
def test_errors_name_the_function_and_shapes(call, error, words):
    with pytest.raises(error, match=words):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinc_gradient_near_zero_stays_finite_and_accurate(dtype):
    values = np.array([0.0, 1e-20, -1e-30, 1e-4, -3e-3, 0.5, 1.5], dtype=dtype)
    x = lamina.tensor(values, dtype=dtype, requires_grad=True)
    y = F.sinc(x)
    y.sum().backward()
    exact = torch.tensor(values.astype(np.float64), requires_grad=True)
    torch.sinc(exact).sum().backward()
    rtol = 1e-5 if dtype == np.float32 else 1e-8  # torch's own float64 gradient is off by 2e-9 at 1e-4
    np.testing.assert_allclose(y.numpy(), torch.sinc(exact).detach().numpy(), rtol=rtol)
    np.testing.assert_allclose(x.grad, exact.grad.numpy(), rtol=rtol, atol=1e-19)  # torch: 0 below ~1e-10


def test_clamp_with_equal_tensor_bounds_gives_no_gradient_below_them_as_torch():
    values = [np.array(v) for v in ([-1.0, 0.5, 2.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 1.0, 2.0],
                                    [0.0, 1.0, 1.0, 0.0, 0.0, 1.0])]
    ours = [lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    y, ty = F.clamp(*ours), torch.clamp(*theirs)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    y.sum().backward()
    ty.sum().backward()
    for o, t in zip(ours, theirs):
        np.testing.assert_array_equal(o.grad, t.grad.numpy())


def test_kthvalue_of_a_single_line_reports_torchs_index_among_ties():
    rng = np.random.default_rng(5)
    for _ in range(40):
        line = rng.integers(0, 3, int(rng.integers(2, 12))).astype(np.float64)
        for k in range(1, line.size + 1):
            values, indices = F.kthvalue(lamina.tensor(line, dtype=np.float64), k, axis=0)
            expected = torch.kthvalue(torch.tensor(line), k, dim=0)
            assert values.item() == expected.values.item()
            assert int(np.asarray(indices)) == expected.indices.item(), (line, k)
    assert int(np.asarray(F.kthvalue(lamina.tensor([3.0, 1.0, 1.0, 1.0]), 2, 0)[1])) == 3


@pytest.mark.parametrize("name", ["cov", "corrcoef"])
@pytest.mark.parametrize("shape", [(5,), (1, 5), (2, 5)], ids=str)
def test_cov_and_corrcoef_of_one_variable_are_0d_as_torch(name, shape):
    x = randn(*shape)
    ours = getattr(F, name)(lamina.tensor(x, dtype=np.float64))
    theirs = getattr(torch, name)(torch.tensor(x))
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


def test_sinc_second_derivative_near_zero_is_finite():
    x = lamina.tensor(np.array([0.0, 1e-20, -1e-5, 3e-3, 0.4]), dtype=np.float64, requires_grad=True)
    (slope,) = lamina.autograd.grad(F.sinc(x).sum(), [x], create_graph=True)
    (curvature,) = lamina.autograd.grad(slope.sum(), [x])
    exact = torch.tensor([0.0, 1e-20, -1e-5, 3e-3, 0.4], dtype=torch.float64, requires_grad=True)
    (t_slope,) = torch.autograd.grad(torch.sinc(exact).sum(), exact, create_graph=True)
    (t_curvature,) = torch.autograd.grad(t_slope.sum(), exact)
    # torch's own second derivative is NaN at 0 and off near it: compare where it holds
    np.testing.assert_allclose(curvature[[3, 4]], t_curvature.numpy()[[3, 4]], rtol=1e-8)
    np.testing.assert_allclose(curvature[:3], -np.pi**2 / 3, rtol=1e-8)


@pytest.mark.parametrize("op", ["logaddexp", "logaddexp2"])
def test_logaddexp_gradient_with_an_infinite_operand_follows_torch(op):
    a, b = np.array([0.0, np.inf, -np.inf, 3.0]), np.array([np.inf, 0.0, 1.0, -2.0])
    ours = [lamina.tensor(v, requires_grad=True, dtype=np.float64) for v in (a, b)]
    theirs = [torch.tensor(v, requires_grad=True) for v in (a, b)]
    getattr(F, op)(*ours).sum().backward()
    getattr(torch, op)(*theirs).sum().backward()
    for x, t in zip(ours, theirs):
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-12)    # NaN would not match


@pytest.mark.parametrize("weight_dtype", [None, np.float32, np.float64])
def test_lerp_of_integers_computes_in_torchs_float_dtype_without_wrapping(weight_dtype):
    start, end = np.array([3, 1, 3, 250], np.uint8), np.array(1, np.uint8)
    # torch takes integer ends only with a 0-d float weight; a number weight counts as one in the default dtype
    ours_w = 0.5 if weight_dtype is None else lamina.tensor(np.array(0.5), dtype=weight_dtype)
    torch_w = torch.tensor(0.5, dtype=torch.float64 if weight_dtype is np.float64 else torch.float32)
    ours = F.lerp(lamina.tensor(start, dtype=np.uint8), lamina.tensor(end, dtype=np.uint8), ours_w)
    theirs = torch.lerp(torch.tensor(start), torch.tensor(end), torch_w)
    assert ours.dtype == np.dtype(str(theirs.dtype).removeprefix("torch."))
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("value", [1, 1.0, 2, 0.5, -1.7])
@pytest.mark.parametrize("dtype", [np.int64, np.int8])
def test_addcmul_of_integers_keeps_their_dtype_and_truncates_value_as_torch(value, dtype):
    x, a, b = np.array([1, -2, 3], dtype), np.array([4, 5, -6], dtype), np.array([2, 2, 3], dtype)
    ours = F.addcmul(*[lamina.tensor(v, dtype=dtype) for v in (x, a, b)], value=value)
    theirs = torch.addcmul(*[torch.tensor(v) for v in (x, a, b)], value=value)
    assert ours.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_addcmul_of_an_integer_product_with_a_float_input_keeps_a_fractional_value():
    x, a = np.array([1.0, 2.0], np.float32), np.array([3, 4])
    ours = F.addcmul(lamina.tensor(x), lamina.tensor(a), lamina.tensor(a), value=0.5)
    theirs = torch.addcmul(torch.tensor(x), torch.tensor(a), torch.tensor(a), value=0.5)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0)
