"""The rest of torch.linalg (vector_norm, norm, matrix_rank, cond, multi_dot, vecdot, lstsq,
tensorinv, tensorsolve, vander, cross, the *_ex forms) and the torch arguments of solve (left),
pinv (atol, hermitian) and matrix_norm (dim): values and gradients against torch in float64,
gradient checks, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import linalg

F64 = {"dtype": np.float64, "rtol": 1e-9}
INF = math.inf


@pytest.mark.parametrize("order", [2, 1, INF, -INF, 0, 3, 0.5, -1.5])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (-1, True), ((0, 2), False), ((2, 0), True)])
def test_vector_norm(order, dim, keepdim):
    x = randn(3, 4, 5, seed=1)
    x[0, 0, 0] = 0.0 if order >= 1 else x[0, 0, 0]           # a zero entry where torch's gradient is finite
    compare_with_torch(lambda t: linalg.vector_norm(t, order, dim, keepdim),
                       lambda t: torch.linalg.vector_norm(t, order, dim, keepdim), x, **F64)


@pytest.mark.parametrize("order, dim", [(None, None), (None, 1), (3, 0), ("fro", (0, 1)), ("nuc", (1, 0)),
                                        (2, (0, 1)), (-INF, (0, 1)), (INF, None), (1, None)])
def test_norm_dispatches_as_torch(order, dim):
    a = randn(4, 3, seed=2)
    compare_with_torch(lambda t: linalg.norm(t, order, dim), lambda t: torch.linalg.norm(t, order, dim), a, **F64)


def test_norm_of_a_vector_and_its_errors():
    v = randn(5, seed=3)
    compare_with_torch(lambda t: linalg.norm(t, 3), lambda t: torch.linalg.norm(t, 3), v, **F64)
    with pytest.raises(ValueError, match=r"norm: with ord=2 and dim=None the input must be 1-D or 2-D"):
        linalg.norm(lamina.tensor(randn(2, 2, 2)), 2)
    with pytest.raises(ValueError, match=r"vector_norm: ord -1 over no values \(input of shape \(0,\)"):
        linalg.vector_norm(lamina.tensor(np.zeros((0,))), -1)
    with pytest.raises(ValueError, match="vector_norm: dim 3 is out of range for an input of 2 axes"):
        linalg.vector_norm(lamina.tensor(np.zeros((2, 2))), dim=3)


@pytest.mark.parametrize("order", ["fro", "nuc", 2, -2, 1, -1, INF, -INF])
@pytest.mark.parametrize("dim, keepdim", [((0, 2), False), ((3, 1), True), ((-1, -3), True)])
def test_matrix_norm_over_any_two_axes(order, dim, keepdim):
    b = randn(2, 5, 3, 4, seed=4)
    compare_with_torch(lambda t: linalg.matrix_norm(t, order, dim=dim, keepdim=keepdim),
                       lambda t: torch.linalg.matrix_norm(t, order, dim=dim, keepdim=keepdim), b, **F64)


def test_matrix_norm_dim_errors():
    with pytest.raises(ValueError, match=r"matrix_norm: dim must name two different axes, got \(1, -2\)"):
        linalg.matrix_norm(lamina.tensor(np.zeros((2, 3, 3))), dim=(1, -2))
    with pytest.raises(ValueError, match=r"matrix_norm: dim \(0, 3\) is out of range for an input of 3 axes"):
        linalg.matrix_norm(lamina.tensor(np.zeros((2, 3, 3))), dim=(0, 3))


@pytest.mark.parametrize("kwargs", [{}, {"atol": 0.5}, {"rtol": 0.3}, {"atol": 0.1, "rtol": 0.4}])
def test_pinv_tolerances(kwargs):
    a = randn(2, 4, 3, seed=5)
    compare_with_torch(lambda t: linalg.pinv(t, **kwargs), lambda t: torch.linalg.pinv(t, **kwargs), a, **F64)


def test_pinv_hermitian_drops_small_eigenvalues_by_magnitude():
    v = np.linalg.qr(randn(4, 4, seed=6))[0]
    s = v @ np.diag([3.0, -2.0, 1e-18, 0.5]) @ v.T            # indefinite, numerically rank 3
    compare_with_torch(lambda t: linalg.pinv(t, hermitian=True), lambda t: torch.linalg.pinv(t, hermitian=True),
                       s, dtype=np.float64, rtol=1e-7, grad=False)
    ours = linalg.pinv(lamina.tensor(s, dtype=np.float64), hermitian=True).numpy()
    np.testing.assert_allclose(ours, np.linalg.pinv(s, hermitian=True), atol=1e-10)
    with pytest.raises(ValueError, match="pinv: atol must be >= 0, got -1"):
        linalg.pinv(lamina.tensor(s), atol=-1)


def test_solve_from_the_right():
    a = randn(3, 3, seed=7) + 3 * np.eye(3)
    b = randn(2, 4, 3, seed=8)
    compare_with_torch(lambda x, y: linalg.solve(x, y, left=False),
                       lambda x, y: torch.linalg.solve(x, y, left=False), a, b, **F64)
    with pytest.raises(lamina.errors.ShapeError, match=r"solve\(left=False\): A of shape \(3, 3\) needs B of shape"):
        linalg.solve(lamina.tensor(a), lamina.tensor(randn(3, 2)), left=False)


@pytest.mark.parametrize("kwargs", [{}, {"atol": 0.9}, {"rtol": 0.5}, {"hermitian": True}])
def test_matrix_rank(kwargs):
    u = np.linalg.qr(randn(5, 5, seed=9))[0]
    a = np.stack([u @ np.diag(d) @ u.T for d in ([3, 2, 1, 0.7, 0], [3, 1e-14, 1, 0, 0.2])])
    ours = linalg.matrix_rank(lamina.tensor(a, dtype=np.float64), **kwargs)
    theirs = torch.linalg.matrix_rank(torch.tensor(a), **kwargs)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(linalg.matrix_rank(lamina.tensor(np.zeros((2, 0, 3)))).numpy(), [0, 0])


@pytest.mark.parametrize("p", [None, 2, -2, "fro", "nuc", 1, -1, INF, -INF])
def test_cond(p):
    a = randn(2, 3, 3, seed=10) + 2 * np.eye(3)
    through_inverse = p not in (None, 2, -2)   # torch's own backward of these fails (its inv_ex output is reused)
    compare_with_torch(lambda t: linalg.cond(t, p), lambda t: torch.linalg.cond(t, p), a, grad=not through_inverse,
                       **F64)
    if through_inverse:
        assert check_gradients(lambda t: linalg.cond(t, p), a[0])


def test_cond_of_a_rectangular_matrix_in_the_two_norm():
    compare_with_torch(lambda t: linalg.cond(t), lambda t: torch.linalg.cond(t), randn(5, 3, seed=11), **F64)


@pytest.mark.parametrize("shapes", [[(2, 30), (30, 3), (3, 40)], [(5,), (5, 4), (4, 6), (6,)],
                                    [(10, 2), (2, 10), (10, 2), (2, 10)], [(3,), (3, 2)]])
def test_multi_dot(shapes):
    arrays = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    compare_with_torch(lambda *ts: linalg.multi_dot(ts), lambda *ts: torch.linalg.multi_dot(ts), *arrays, **F64)


def test_multi_dot_picks_the_cheap_order_and_names_bad_shapes():
    ops = []
    original = lamina.functional.linalg_more.matmul

    def counting(a, b):
        ops.append((a.shape, b.shape))
        return original(a, b)

    lamina.functional.linalg_more.matmul = counting
    try:
        linalg.multi_dot([lamina.tensor(randn(2, 30)), lamina.tensor(randn(30, 3)), lamina.tensor(randn(3, 40))])
    finally:
        lamina.functional.linalg_more.matmul = original
    assert ops == [((2, 30), (30, 3)), ((2, 3), (3, 40))]       # (AB)C: 180 + 240 against 3600 + 2400
    with pytest.raises(lamina.errors.ShapeError, match=r"multi_dot: tensor 0 of shape \(2, 3\) cannot multiply"):
        linalg.multi_dot([lamina.tensor(randn(2, 3)), lamina.tensor(randn(4, 2))])


def test_vecdot_broadcasts():
    compare_with_torch(lambda x, y: linalg.vecdot(x, y, dim=0), lambda x, y: torch.linalg.vecdot(x, y, dim=0),
                       randn(4, 3, seed=12), randn(4, 1, seed=13), **F64)


@pytest.mark.parametrize("a_shape, b_shape", [((6, 3), (6, 2)), ((2, 5, 3), (2, 5, 4)), ((4, 4), (4,)),
                                              ((3, 5), (3, 2))])
def test_lstsq(a_shape, b_shape):
    a, b = randn(*a_shape, seed=14), randn(*b_shape, seed=15)
    compare_with_torch(lambda x, y: linalg.lstsq(x, y).solution,
                       lambda x, y: torch.linalg.lstsq(x, y, driver="gelsd").solution, a, b, **F64)
    ours = linalg.lstsq(lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64))
    theirs = torch.linalg.lstsq(torch.tensor(a), torch.tensor(b), driver="gelsd")
    for name in ("residuals", "rank", "singular_values"):
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(theirs, name).numpy(), rtol=1e-9,
                                   err_msg=name)


def test_lstsq_residuals_carry_a_gradient():
    a, b = randn(6, 3, seed=16), randn(6, 2, seed=17)
    compare_with_torch(lambda x, y: linalg.lstsq(x, y).residuals,
                       lambda x, y: torch.linalg.lstsq(x, y, driver="gelsd").residuals, a, b, **F64)


def test_tensorinv_and_tensorsolve():
    a = (randn(24, 24, seed=18) + 5 * np.eye(24)).reshape(4, 6, 8, 3)
    compare_with_torch(lambda t: linalg.tensorinv(t, 2), lambda t: torch.linalg.tensorinv(t, 2), a, **F64)
    compare_with_torch(lambda x, y: linalg.tensorsolve(x, y), lambda x, y: torch.linalg.tensorsolve(x, y),
                       a, randn(4, 6, seed=19), **F64)
    with pytest.raises(lamina.errors.ShapeError, match=r"tensorinv: A of shape \(2, 3\) with ind=1 is not square"):
        linalg.tensorinv(lamina.tensor(np.zeros((2, 3))), 1)


def test_tensorsolve_moves_dims_last():
    a = np.moveaxis((randn(6, 6, seed=21) + 4 * np.eye(6)).reshape(6, 3, 2), -1, 0)     # (2, 6, 3)
    compare_with_torch(lambda x, y: linalg.tensorsolve(x, y, dims=(0,)),
                       lambda x, y: torch.linalg.tensorsolve(x, y, dims=(0,)), a, randn(6, seed=22), **F64)


@pytest.mark.parametrize("n", [None, 2, 4])
def test_vander_with_a_zero_entry(n):
    x = np.array([[0.0, 1.5, -2.0], [0.5, -1.0, 3.0]])
    compare_with_torch(lambda t: linalg.vander(t, N=n), lambda t: torch.linalg.vander(t, N=n), x, **F64)


def test_vander_of_one_or_no_columns():          # torch refuses N < 2; NumPy's vander gives these
    x = np.array([0.0, 2.0, -1.0])
    np.testing.assert_array_equal(linalg.vander(lamina.tensor(x), N=1).numpy(), np.vander(x, 1, increasing=True))
    assert linalg.vander(lamina.tensor(x), N=0).shape == (3, 0)


def test_vander_second_derivative():
    compare_double_backward_with_torch(lambda t: linalg.vander(t, N=4), lambda t: torch.linalg.vander(t, N=4),
                                       np.array([0.0, 1.5, -2.0]))


def test_cross_broadcasts():
    compare_with_torch(lambda x, y: linalg.cross(x, y), lambda x, y: torch.linalg.cross(x, y),
                       randn(4, 3, seed=23), randn(1, 3, seed=24), **F64)


def test_inv_ex_and_cholesky_ex_report_the_failing_matrices():
    good = np.eye(2) * 2.0
    batch = np.stack([good, np.zeros((2, 2)), good])
    inverse, info = linalg.inv_ex(lamina.tensor(batch, dtype=np.float64))
    _, torch_info = torch.linalg.inv_ex(torch.tensor(batch))
    np.testing.assert_array_equal(info.numpy() != 0, torch_info.numpy() != 0)
    np.testing.assert_allclose(inverse.numpy()[[0, 2]], np.stack([np.eye(2) / 2] * 2))
    assert np.isnan(inverse.numpy()[1]).all()
    factor, info = linalg.cholesky_ex(lamina.tensor(np.stack([good, -good]), dtype=np.float64))
    _, torch_info = torch.linalg.cholesky_ex(torch.tensor(np.stack([good, -good])))
    np.testing.assert_array_equal(info.numpy() != 0, torch_info.numpy() != 0)
    np.testing.assert_allclose(factor.numpy()[0], np.sqrt(good))
    with pytest.raises(np.linalg.LinAlgError):
        linalg.inv_ex(lamina.tensor(batch), check_errors=True)


def test_inv_ex_gradient_where_it_succeeds():
    a = randn(2, 3, 3, seed=25) + 3 * np.eye(3)
    compare_with_torch(lambda t: linalg.inv_ex(t)[0], lambda t: torch.linalg.inv_ex(t)[0], a, **F64)


def test_solve_ex():
    a, b = randn(3, 3, seed=26) + 3 * np.eye(3), randn(3, 2, seed=27)
    compare_with_torch(lambda x, y: linalg.solve_ex(x, y)[0], lambda x, y: torch.linalg.solve_ex(x, y)[0],
                       a, b, **F64)
    x, info = linalg.solve_ex(lamina.tensor(np.zeros((3, 3))), lamina.tensor(b))
    assert int(info.item()) != 0 and np.isnan(x.numpy()).all()


def test_gradient_checks_of_the_composites():
    a = randn(3, 3, seed=28) + 2 * np.eye(3)
    assert check_gradients(lambda t: linalg.cond(t, 1), a)
    assert check_gradients(lambda t: linalg.vector_norm(t, 3.0), randn(4, seed=29))
    assert check_gradients(lambda t: linalg.lstsq(t, lamina.tensor(randn(5, 2, seed=30), dtype=np.float64))[0],
                           randn(5, 3, seed=31))


def test_vector_norm_edges_as_torch():
    def both(values, order, **kw):
        ours = linalg.vector_norm(lamina.tensor(np.array(values), dtype=np.float64), order, **kw).numpy()
        theirs = torch.linalg.vector_norm(torch.tensor(values, dtype=torch.float64), order, **kw).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)

    both([np.inf, 1.0], INF)                     # an infinite extreme stays infinite (amax's own node)
    both([1.0, np.nan], 0)                       # NaN counts as non-zero
    both(np.ones((2, 3)).tolist(), 2, dim=())    # dim=() reduces every axis, as None
    ours = linalg.vector_norm(lamina.tensor(np.zeros((0, 3))), -1, dim=1)
    assert ours.shape == (0,)                    # the reduced axis is not empty: no error
    for order in (0.5, 1.5, 3, -0.5, -1, -2):   # zero entries: gradient 0, as torch
        compare_with_torch(lambda t, o=order: linalg.vector_norm(t, o),
                           lambda t, o=order: torch.linalg.vector_norm(t, o), np.array([0.0, 3.0, -2.0]), **F64)
    compare_with_torch(lambda t: linalg.vector_norm(t, 3), lambda t: torch.linalg.vector_norm(t, 3), np.zeros(2),
                       **F64)


def test_cond_of_singular_and_empty_matrices_as_torch():
    batch = np.stack([np.eye(2) * 2, [[1.0, 2.0], [2.0, 4.0]]])
    for p in ("fro", "nuc", 1, -1, INF, -INF):      # torch gives inf, or ~1e16 from rounding: lamina inf
        ours = linalg.cond(lamina.tensor(batch, dtype=np.float64), p).numpy()
        theirs = torch.linalg.cond(torch.tensor(batch), p).numpy()
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
        assert ours[1] == np.inf and theirs[1] > 1e15
    for p in (None, 1):
        np.testing.assert_array_equal(linalg.cond(lamina.tensor(np.zeros((0, 0))), p).numpy(), 0.0)


def test_tolerances_may_be_tensors_one_per_matrix():
    a = np.stack([np.diag([1.0, 0.4, 2.0])] * 2)
    atol = np.array([0.5, 3.0])
    np.testing.assert_array_equal(linalg.matrix_rank(lamina.tensor(a), atol=lamina.tensor(atol)).numpy(),
                                  torch.linalg.matrix_rank(torch.tensor(a), atol=torch.tensor(atol)).numpy())
    np.testing.assert_allclose(linalg.pinv(lamina.tensor(a, dtype=np.float64), atol=lamina.tensor(atol)).numpy(),
                               torch.linalg.pinv(torch.tensor(a), atol=torch.tensor(atol)).numpy())


def test_lstsq_residuals_of_a_vector_and_a_negative_rcond():
    a = np.ones((3, 2)) + np.eye(3, 2)
    ours = linalg.lstsq(lamina.tensor(a, dtype=np.float64), lamina.tensor(np.array([1.0, 2.0, 4.0]), dtype=np.float64))
    assert ours.residuals.shape == (1,)
    solution = linalg.lstsq(lamina.tensor(np.eye(3, 2)), lamina.tensor(np.ones((3, 1))), rcond=-1.0).solution
    np.testing.assert_allclose(solution.numpy().ravel(), [1.0, 1.0])
