"""logsumexp, prod, std, norm over every kind of axis argument; cumsum and cumprod; zeros in products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_with_torch, randn
from lamina.functional import reduce_more as R

DTYPES = [np.float32, np.float64]
AXES = [None, 0, -1, (0, 2), (-1, 1)]


def distinct(*shape, seed=0):
    """Values 0.2 apart in random order, no two of the same magnitude and none zero
    (no ties for the inf-norm, no kink of |x|)."""
    n = int(np.prod(shape))
    perm = np.random.default_rng(seed).permutation(n)
    return (perm.reshape(shape) - n / 2 + 0.3) * 0.2


def torch_dims(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return axis if isinstance(axis, tuple) else (axis,)


def torch_prod(x, dims, keepdim):
    """torch.prod takes one dim: reduce them one at a time."""
    dims = sorted(d % x.ndim for d in dims)
    for d in dims:
        x = x.prod(dim=d, keepdim=True)
    return x if keepdim else x.reshape([n for i, n in enumerate(x.shape) if i not in dims])


def torch_reduction(name, axis, keepdims):
    def run(x):
        dims = torch_dims(axis, x.ndim)
        if name == "logsumexp":
            return torch.logsumexp(x, dim=dims, keepdim=keepdims)
        if name == "prod":
            return torch_prod(x, dims, keepdims)
        if name == "std":
            return torch.std(x, dim=dims, correction=0, keepdim=keepdims)
        order = {"norm1": 1, "norm2": 2, "norm_inf": float("inf")}[name]
        return torch.linalg.vector_norm(x, order, dim=dims, keepdim=keepdims)

    return run


def lamina_reduction(name, axis, keepdims):
    if name.startswith("norm"):
        order = {"norm1": 1, "norm2": 2, "norm_inf": np.inf}[name]
        return lambda x: R.norm(x, ord=order, axis=axis, keepdims=keepdims)
    return lambda x: getattr(R, name)(x, axis=axis, keepdims=keepdims)


REDUCTIONS = ["logsumexp", "prod", "std", "norm1", "norm2", "norm_inf"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_matches_torch(name, axis, keepdims, dtype):
    x = distinct(2, 3, 4)
    out = compare_with_torch(lamina_reduction(name, axis, keepdims), torch_reduction(name, axis, keepdims),
                             x, dtype=dtype)
    assert out[0].shape == np.sum(x, axis=axis, keepdims=keepdims).shape
    assert out[0].dtype == dtype


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_gradcheck(name, axis, keepdims):
    assert check_gradients(lamina_reduction(name, axis, keepdims), distinct(2, 3, 4, seed=1))


# -- logsumexp --------------------------------------------------------------------------


def test_logsumexp_does_not_overflow_and_matches_torch():
    x = np.array([[1000.0, 999.0, -1000.0], [-800.0, -801.0, -805.0]])
    for dtype in DTYPES:
        out = compare_with_torch(lambda t: R.logsumexp(t, axis=1), lambda t: torch.logsumexp(t, dim=1),
                                 x, dtype=dtype)[0].numpy()
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, [1000 + np.log1p(np.exp(-1.0)), -800 + np.log1p(np.exp(-1.0) + np.exp(-5.0))],
                                   rtol=1e-6)


def test_logsumexp_gradient_is_the_softmax():
    x = lamina.tensor(randn(4, 5, scale=3.0), requires_grad=True, dtype=np.float64)
    R.logsumexp(x, axis=-1).sum().backward()
    np.testing.assert_allclose(x.grad, F.softmax(x, axis=-1).numpy(), rtol=1e-12)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_logsumexp_of_all_minus_infinity_is_minus_infinity():
    x = np.full((2, 3), -np.inf)
    x[1, 0] = 0.5
    out = R.logsumexp(lamina.tensor(x, dtype=np.float64), axis=1).numpy()
    expected = torch.logsumexp(torch.tensor(x), dim=1).numpy()
    np.testing.assert_array_equal(out, expected)
    assert out[0] == -np.inf and out[1] == 0.5


# -- prod -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zeros", [[(0, 1)], [(0, 1), (0, 3)], [(1, 2), (2, 2)]], ids=["one", "two_in_a_row", "col"])
@pytest.mark.parametrize("axis", [None, 0, 1], ids=str)
def test_prod_gradient_with_zeros_matches_torch(zeros, axis, dtype):
    x = distinct(3, 4, seed=2)
    for index in zeros:
        x[index] = 0.0
    dims = torch_dims(axis, 2)
    compare_with_torch(lambda t: R.prod(t, axis=axis), lambda t: torch_prod(t, dims, False), x, dtype=dtype)


def test_prod_gradient_with_one_zero_is_the_product_of_the_others():
    x = lamina.tensor(np.array([2.0, 0.0, 3.0, -1.5]), requires_grad=True, dtype=np.float64)
    R.prod(x).backward()
    np.testing.assert_array_equal(x.grad, [0.0, -9.0, 0.0, 0.0])
    assert check_gradients(lambda t: R.prod(t, axis=1), np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 1.0]]))


# -- std --------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 1, (0, 2)], ids=str)
def test_std_ddof_is_torch_correction(axis):
    dims = torch_dims(axis, 3)
    compare_with_torch(lambda t: R.std(t, axis=axis, ddof=1), lambda t: torch.std(t, dim=dims), distinct(2, 3, 4))
    compare_with_torch(lambda t: R.std(t, axis=axis, ddof=2, keepdims=True),
                       lambda t: torch.std(t, dim=dims, correction=2, keepdim=True), distinct(2, 3, 4))
    x = distinct(2, 3, 4)
    np.testing.assert_allclose(R.std(lamina.tensor(x, dtype=np.float64), axis=axis, ddof=1).numpy(),
                               np.std(x, axis=axis, ddof=1), rtol=1e-12)


def test_std_of_a_constant_slice_has_zero_gradient_as_torch():
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    out = compare_with_torch(lambda t: R.std(t, axis=1), lambda t: torch.std(t, dim=1, correction=0), x,
                             dtype=np.float64)
    assert out[0].numpy()[0] == 0.0
    t = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    R.std(t, axis=1).sum().backward()
    np.testing.assert_array_equal(t.grad[0], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("ddof", [3, 7])
def test_std_with_no_degrees_of_freedom_left_raises(ddof):
    with pytest.raises(ValueError, match=rf"std: ddof={ddof}.*n = 3"):
        R.std(lamina.tensor(np.ones((2, 3))), axis=1, ddof=ddof)


@pytest.mark.parametrize("ddof", [-1, 0.5, True])
def test_std_rejects_a_bad_ddof(ddof):
    with pytest.raises(ValueError, match="std: ddof"):
        R.std(lamina.tensor(np.ones(3)), ddof=ddof)


# -- norm -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, np.inf], ids=str)
def test_norm_of_a_zero_vector_has_zero_gradient_as_torch(order):
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, -4.0]])
    compare_with_torch(lambda t: R.norm(t, ord=order, axis=1),
                       lambda t: torch.linalg.vector_norm(t, float(order), dim=1), x, dtype=np.float64)
    t = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    R.norm(t, ord=order, axis=1).sum().backward()
    np.testing.assert_array_equal(t.grad[0], [0.0, 0.0, 0.0])
    expected = {1: [1.0, 0.0, -1.0], 2: [0.6, 0.0, -0.8], np.inf: [0.0, 0.0, -1.0]}[order]
    np.testing.assert_allclose(t.grad[1], expected, rtol=1e-12)


def test_inf_norm_splits_the_gradient_among_ties_as_torch():
    x = np.array([[3.0, -3.0, 1.0, 3.0], [0.5, -2.0, 1.0, 0.0]])
    compare_with_torch(lambda t: R.norm(t, ord=np.inf, axis=-1),
                       lambda t: torch.linalg.vector_norm(t, float("inf"), dim=-1), x, dtype=np.float64)
    t = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    R.norm(t, ord=np.inf, axis=-1).sum().backward()
    np.testing.assert_allclose(t.grad[0], [1 / 3, -1 / 3, 0.0, 1 / 3], rtol=1e-12)


def test_fro_is_the_2_norm_over_the_axes():
    x = distinct(3, 4)
    out = compare_with_torch(lambda t: R.norm(t, ord="fro"), lambda t: torch.linalg.matrix_norm(t, "fro"), x,
                             dtype=np.float64)[0]
    np.testing.assert_allclose(out.numpy(), np.linalg.norm(x, "fro"), rtol=1e-12)
    np.testing.assert_allclose(R.norm(lamina.tensor(x, dtype=np.float64), ord=2).numpy(), out.numpy(), rtol=1e-12)


@pytest.mark.parametrize("order", [3, 0, -1, "nuc", True, None])
def test_norm_rejects_other_orders(order):
    with pytest.raises(ValueError, match=r"norm: ord must be one of 1, 2, inf or 'fro'"):
        R.norm(lamina.tensor(np.ones(3)), ord=order)


# -- cumsum, cumprod --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_cumulative_ops_match_torch(name, axis, dtype):
    x = distinct(3, 4, 5)
    out = compare_with_torch(lambda t: getattr(R, name)(t, axis), lambda t: getattr(torch, name)(t, dim=axis), x,
                             dtype=dtype)
    assert out[0].shape == x.shape


@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_cumulative_gradcheck(name, axis):
    assert check_gradients(lambda t: getattr(R, name)(t, axis), distinct(3, 4, seed=3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zeros", [[2], [1, 4], [0], [5]], ids=str)
def test_cumprod_gradient_with_zeros_matches_torch(zeros, dtype):
    x = distinct(2, 6, seed=4)
    x[:, zeros] = 0.0
    compare_with_torch(lambda t: R.cumprod(t, -1), lambda t: torch.cumprod(t, dim=-1), x, dtype=dtype)
    assert check_gradients(lambda t: R.cumprod(t, 1), x)


def test_cumsum_values_match_numpy():
    x = distinct(3, 4)
    np.testing.assert_allclose(R.cumsum(lamina.tensor(x, dtype=np.float64), 1).numpy(), np.cumsum(x, axis=1),
                               rtol=1e-12)


# -- bad axes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["logsumexp", "prod", "std", "norm"])
@pytest.mark.parametrize("axis", [3, -4, (0, 0)], ids=str)
def test_bad_axis_raises_shape_error(name, axis):
    with pytest.raises(lamina.ShapeError, match=name):
        getattr(R, name)(lamina.tensor(np.ones((2, 3, 4))), axis=axis)


@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_cumulative_ops_take_one_int_axis(name):
    x = lamina.tensor(np.ones((2, 3)))
    with pytest.raises(lamina.ShapeError, match=rf"{name}: axis 2"):
        getattr(R, name)(x, 2)
    for axis in [None, (0, 1), 1.0]:
        with pytest.raises(ValueError, match=rf"{name}: axis must be one int"):
            getattr(R, name)(x, axis)


@pytest.mark.parametrize("name", ["logsumexp", "norm"])
def test_empty_reduction_raises(name):
    kwargs = {"ord": np.inf} if name == "norm" else {}
    with pytest.raises(ValueError, match=rf"{name}: cannot reduce an empty axis.*\(0, 3\)"):
        getattr(R, name)(lamina.tensor(np.ones((0, 3))), axis=0, **kwargs)


def test_the_ops_are_tensor_methods():
    x = lamina.tensor(np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]))
    np.testing.assert_allclose(x.logsumexp(axis=1).numpy(), np.log(np.exp(x.numpy()).sum(axis=1)))
    np.testing.assert_allclose(x.cumprod(axis=1).numpy(), np.cumprod(x.numpy(), axis=1))
    np.testing.assert_allclose(x.norm(ord=1).numpy(), np.abs(x.numpy()).sum())
    np.testing.assert_allclose(x.sin().square().numpy(), np.sin(x.numpy()) ** 2)
    np.testing.assert_allclose(x.std(axis=0, ddof=1).numpy(), x.numpy().std(axis=0, ddof=1))


@pytest.mark.parametrize("shape, axis", [((96, 1000), 1), ((70, 3, 257), 2), ((300, 130), 0), ((8, 4100), -1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cumsum_of_large_arrays_matches_torch(shape, axis, dtype):
    """Arrays large enough for the blocked scan (block lengths that divide the axis and ones
    that need padding, every axis position), forward and backward."""
    x = randn(*shape, seed=5)
    compare_with_torch(lambda t: F.cumsum(t, axis=axis), lambda t: torch.cumsum(t, dim=axis), x, dtype=dtype,
                       rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_cumsum_of_a_large_array_keeps_infs_and_nans_where_numpy_does():
    x = randn(64, 1000, seed=6)
    x[3, 10], x[7, 500], x[9, 20], x[9, 30] = np.inf, np.nan, np.inf, -np.inf
    with np.errstate(invalid="ignore"):                     # inf + -inf, as NumPy's own cumsum says
        got = F.cumsum(lamina.tensor(x, dtype=np.float64), axis=1).numpy()
        expected = np.cumsum(x, axis=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(got)
    np.testing.assert_array_equal(finite, np.isfinite(expected))
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12)


# -- cumprod's gradient on long axes ----------------------------------------------------


def lines_with_zeros(n: int, seed: int) -> np.ndarray:
    """Seven lines of n values near +1 or -1 (no running product under- or overflows) with
    zeros: none; one at a random place; several, two of them side by side; at the first
    place; at the last; at the first and the last; everywhere."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], (7, n)) * (1 + 0.01 * rng.standard_normal((7, n)))
    x[1, rng.integers(1, n - 1)] = 0
    several = rng.choice(np.arange(1, n - 2), 5, replace=False)
    x[2, several] = 0
    x[2, several[0] + 1] = 0
    x[3, 0] = 0
    x[4, -1] = 0
    x[5, [0, -1]] = 0
    x[6] = 0
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1500, 4096])
def test_cumprod_gradient_on_long_axes_with_zeros_matches_torch(n, dtype):
    x = lines_with_zeros(n, seed=n)
    for line in range(len(x)):                             # each line against its own scale
        compare_with_torch(lambda t: F.cumprod(t, axis=1), lambda t: torch.cumprod(t, dim=1), x[line:line + 1],
                           dtype=dtype, seed=line)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumprod_gradient_with_zeros_along_any_axis_matches_torch(axis, dtype):
    lines = lines_with_zeros(700, seed=9)
    x = np.moveaxis(np.stack([lines, -lines[::-1]]), -1, axis)
    compare_with_torch(lambda t: F.cumprod(t, axis=axis), lambda t: torch.cumprod(t, dim=axis), x, dtype=dtype)


def test_cumprod_gradient_where_float32_products_underflow():
    """Past x_i = x_(i+1) = 1e-30 the float32 running product is 0, so y_k / x_i would lose
    every later term, though x_(i+1) x_(i+2) = 1 with x_(i+2) = 1e30. The float32 gradient
    still matches torch's float64 one, where nothing underflows."""
    from helpers import assert_close

    rng = np.random.default_rng(10)
    x = 1 + 0.01 * rng.standard_normal((3, 1000))
    for line, place in enumerate([0, 400, 996]):
        x[line, place:place + 3] = [1e-30, 1e-30, 1e30]
    x[1, 700] = 0
    up = rng.standard_normal(x.shape)
    ours = lamina.tensor(x, requires_grad=True, dtype=np.float32)
    F.cumprod(ours, axis=1).backward(up.astype(np.float32))
    theirs = torch.tensor(x, requires_grad=True)
    torch.cumprod(theirs, dim=1).backward(torch.tensor(up))
    for line in range(3):
        assert_close(ours.grad[line], theirs.grad[line].numpy(), 1e-4, f"gradient of line {line}")


@pytest.mark.parametrize("shape", [(1, 200_000), (20, 30_001)])
def test_cumsum_of_long_axes_matches_numpy(shape):
    """Few very long rows (NumPy's cumsum) and many long rows (the blocked scan over thousands
    of blocks), forward and the backward's reversed running sum."""
    x = randn(*shape, seed=7)
    t = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = F.cumsum(t, axis=1)
    np.testing.assert_allclose(y.numpy(), np.cumsum(x, axis=1), rtol=1e-9, atol=1e-9)
    upstream = randn(*shape, seed=8)
    y.backward(upstream)
    np.testing.assert_allclose(t.grad, np.cumsum(upstream[:, ::-1], axis=1)[:, ::-1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("shape, axis", [((0, 3), 1), ((0, 3), 0), ((2, 0), 1), ((2, 0, 3), (0, 2))], ids=str)
def test_prod_of_an_input_with_an_empty_axis_matches_torch(shape, axis, create_graph):
    x = lamina.tensor(np.zeros(shape), dtype=np.float64, requires_grad=True)
    y = F.prod(x, axis=axis)
    tx = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    ty = torch.prod(tx, dim=axis) if isinstance(axis, int) else tx.prod(dim=2).prod(dim=0)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    (grad,) = lamina.autograd.grad(y.sum(), [x], create_graph=create_graph)
    assert grad.shape == shape
