"""lamina.linalg's LU family (lu_factor, lu_factor_ex, lu, lu_unpack, lu_solve), the LDL^T
factorization (ldl_factor, ldl_factor_ex, ldl_solve) and householder_product: values, pivots and
gradients against torch in float64, gradient checks, second derivatives, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    assert_close,
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import linalg
from lamina.functional import concat, reshape

F64 = {"dtype": np.float64, "rtol": 1e-9}
SHAPES = [(4, 4), (2, 3, 5, 5), (3, 5), (2, 5, 3), (1, 4), (4, 1)]


def t64(a, grad: bool = False):
    return lamina.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, requires_grad=grad)


def symmetric(*shape, seed=0):
    a = randn(*shape, seed=seed)
    return a + a.swapaxes(-1, -2)


# -- lu_factor, lu, lu_unpack ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_lu_factor_values_pivots_and_gradient_match_torch(shape):
    a = randn(*shape, seed=len(shape) + shape[-1])
    lu, pivots = compare_with_torch(linalg.lu_factor, torch.linalg.lu_factor, a, **F64)
    assert pivots.dtype == np.int32 and pivots.shape == shape[:-2] + (min(shape[-2:]),)


@pytest.mark.parametrize("shape", SHAPES)
def test_lu_matches_torch(shape):
    a = randn(*shape, seed=shape[-2])
    p, lower, upper = compare_with_torch(linalg.lu, torch.linalg.lu, a, **F64)
    assert not p.requires_grad
    assert_close((p @ lower @ upper).numpy(), a, 1e-12, "P L U")


def test_lu_unpack_matches_torch_lu_unpack():
    a = randn(2, 4, 3, seed=5)
    lu, pivots = torch.linalg.lu_factor(torch.tensor(a))
    for data, perm in [(True, True), (False, True), (True, False)]:
        ours = linalg.lu_unpack(t64(lu), pivots.numpy(), unpack_data=data, unpack_pivots=perm)
        theirs = torch.lu_unpack(lu, pivots, unpack_data=data, unpack_pivots=perm)
        for x, y in zip(ours, theirs):
            assert_close(x.numpy(), y.numpy(), 1e-12, f"lu_unpack(unpack_data={data}, unpack_pivots={perm})")


def test_lu_factor_and_lu_in_float32_match_torch():
    a = randn(3, 6, 6, seed=6)
    compare_with_torch(linalg.lu_factor, torch.linalg.lu_factor, a, dtype=np.float32, rtol=1e-4)
    compare_with_torch(linalg.lu, torch.linalg.lu, a, dtype=np.float32, rtol=1e-4)
    assert linalg.lu_factor(lamina.tensor(a.astype(np.float32)))[0].dtype == np.float32


def lower_and_upper(x):
    _, lower, upper = linalg.lu(x)
    return concat([reshape(lower, -1), reshape(upper, -1)], axis=0)


def test_lu_gradients_pass_checks():
    assert check_gradients(lambda x: linalg.lu_factor(x)[0], randn(2, 4, 4, seed=7))
    assert check_gradients(lower_and_upper, randn(3, 5, seed=8))
    assert check_gradients(lower_and_upper, randn(5, 3, seed=9))


@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5), (5, 3)])
def test_lu_factor_second_derivatives_match_torch(shape):
    compare_double_backward_with_torch(lambda x: linalg.lu_factor(x)[0], lambda x: torch.linalg.lu_factor(x)[0],
                                       randn(*shape, seed=10))


def test_singular_matrices_lu_factor_ex_reports_them_and_lu_factor_raises():
    a = randn(3, 3, 3, seed=11)
    a[1, 2] = a[1, 0] + a[1, 1]                  # rank 2: U[3, 3] is zero up to rounding
    a[2] = 0.0                                   # U[1, 1] is exactly zero
    lu, pivots, info = linalg.lu_factor_ex(t64(a))
    t_lu, t_pivots, t_info = torch.linalg.lu_factor_ex(torch.tensor(a))
    assert_close(lu.numpy(), t_lu.numpy(), 1e-12)
    np.testing.assert_array_equal(pivots.numpy(), t_pivots.numpy())
    np.testing.assert_array_equal(info.numpy(), t_info.numpy())
    assert info.dtype == np.int32 and info.numpy()[2] == 1
    with pytest.raises(np.linalg.LinAlgError, match=r"lu_factor: U\[1,1\] of the matrix at batch index \(2,\) "
                                                      r"of the input of shape \(3, 3, 3\) is zero"):
        linalg.lu_factor(t64(a))
    with pytest.raises(linalg.LinAlgError, match=r"lu_factor_ex: U\[1,1\]"):
        linalg.lu_factor_ex(t64(a), check_errors=True)
    compare_with_torch(linalg.lu, torch.linalg.lu, a, **F64, grad=False)     # lu factors it anyway


def test_lu_of_empty_matrices_has_torch_shapes():
    for shape in [(2, 0, 3), (0, 4, 4), (3, 0)]:
        ours, theirs = linalg.lu(np.zeros(shape)), torch.linalg.lu(torch.zeros(shape, dtype=torch.float64))
        assert [tuple(x.shape) for x in ours] == [tuple(x.shape) for x in theirs]


def test_lu_factor_errors():
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_factor: expected a matrix .* got shape \(3,\)"):
        linalg.lu_factor(t64(np.ones(3)))
    with pytest.raises(NotImplementedError, match="lu: pivot=False"):
        linalg.lu(t64(np.eye(2)), pivot=False)
    with pytest.raises(NotImplementedError, match="lu_factor_ex: pivot=False"):
        linalg.lu_factor_ex(t64(np.eye(2)), pivot=False)
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_unpack: LU of shape \(3, 3\) needs pivots of shape "
                                                        r"\(3,\), got \(2,\)"):
        linalg.lu_unpack(t64(np.eye(3)), np.array([1, 2], dtype=np.int32))


# -- lu_solve -------------------------------------------------------------------------------------
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("lu_batch, b_batch", [((), ()), ((2,), (3, 1)), ((2, 1), (3,))])
def test_lu_solve_values_and_gradients_match_torch(left, adjoint, lu_batch, b_batch):
    n, k = 4, 3
    lu, pivots = torch.linalg.lu_factor(torch.tensor(randn(*lu_batch, n, n, seed=12)))
    b = randn(*b_batch, n, k, seed=13) if left else randn(*b_batch, k, n, seed=13)
    compare_with_torch(lambda f, y: linalg.lu_solve(f, pivots.numpy(), y, left=left, adjoint=adjoint),
                       lambda f, y: torch.linalg.lu_solve(f, pivots, y, left=left, adjoint=adjoint),
                       lu.numpy(), b, **F64)


def test_lu_solve_through_lu_factor_matches_torch_gradient_of_a():
    a, b = randn(2, 5, 5, seed=14), randn(2, 5, 2, seed=15)
    compare_with_torch(lambda x, y: linalg.lu_solve(*linalg.lu_factor(x), y),
                       lambda x, y: torch.linalg.lu_solve(*torch.linalg.lu_factor(x), y), a, b, **F64)
    assert_close(linalg.lu_solve(*linalg.lu_factor(t64(a)), t64(b)).numpy(), np.linalg.solve(a, b), 1e-10)


def test_lu_solve_gradients_pass_checks():
    lu, pivots = torch.linalg.lu_factor(torch.tensor(randn(2, 4, 4, seed=16)))
    p, b = pivots.numpy(), randn(2, 4, 2, seed=17)
    assert check_gradients(lambda f, y: linalg.lu_solve(f, p, y, adjoint=True), lu.numpy(), b)
    assert check_gradients(lambda f, y: linalg.lu_solve(f, p, y, left=False), lu.numpy(), b.swapaxes(-1, -2))
    assert check_second_derivatives(lambda f, y: linalg.lu_solve(f, p, y), lu.numpy(), b)


@pytest.mark.parametrize("left, adjoint", [(True, False), (False, True)])
def test_lu_solve_second_derivatives_match_torch(left, adjoint):
    lu, pivots = torch.linalg.lu_factor(torch.tensor(randn(2, 4, 4, seed=16)))
    b = randn(2, 4, 2, seed=17) if left else randn(2, 2, 4, seed=17)
    compare_double_backward_with_torch(
        lambda f, y: linalg.lu_solve(f, pivots.numpy(), y, left=left, adjoint=adjoint),
        lambda f, y: torch.linalg.lu_solve(f, pivots, y, left=left, adjoint=adjoint), lu.numpy(), b)


def test_lu_solve_in_float32_matches_torch():
    lu, pivots = torch.linalg.lu_factor(torch.tensor(randn(3, 5, 5, seed=18), dtype=torch.float32))
    compare_with_torch(lambda f, y: linalg.lu_solve(f, pivots.numpy(), y),
                       lambda f, y: torch.linalg.lu_solve(f, pivots, y),
                       lu.numpy(), randn(3, 5, 2, seed=19), dtype=np.float32, rtol=1e-4)


def test_lu_solve_errors():
    lu, pivots = linalg.lu_factor(t64(randn(3, 3, seed=20)))
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_solve: expected square matrices .* got shape \(3, 4\)"):
        linalg.lu_solve(t64(np.ones((3, 4))), pivots, t64(np.ones((3, 1))))
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_solve: LU of shape \(3, 3\) needs B of shape "
                                                        r"\(\.\.\., 3, k\) \(left=True\), got B of shape \(2, 1\)"):
        linalg.lu_solve(lu, pivots, t64(np.ones((2, 1))))
    with pytest.raises(lamina.errors.ShapeError, match=r"needs B of shape \(\.\.\., k, 3\) \(left=False\)"):
        linalg.lu_solve(lu, pivots, t64(np.ones((3, 1))), left=False)
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_solve: the batch axes of LU \(2,\) and B \(3,\) do not"):
        linalg.lu_solve(t64(np.ones((2, 3, 3))), np.ones((2, 3), np.int32), t64(np.ones((3, 3, 1))))
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_solve: LU of shape \(3, 3\) needs pivots of shape"):
        linalg.lu_solve(lu, np.ones((2, 3), np.int32), t64(np.ones((3, 1))))
    with pytest.raises(TypeError, match="lu_solve: pivots must be integers .* got dtype float64"):
        linalg.lu_solve(lu, np.ones(3), t64(np.ones((3, 1))))
    with pytest.raises(ValueError, match=r"lu_solve: pivots must lie in 1\.\.3 .* from 0 to 4"):
        linalg.lu_solve(lu, np.array([0, 4, 3], np.int32), t64(np.ones((3, 1))))
    singular = np.triu(np.ones((3, 3))) - np.diag([0.0, 1.0, 0.0])
    with pytest.raises(linalg.LinAlgError, match=r"lu_solve: .* has a zero on its diagonal"):
        linalg.lu_solve(t64(singular), np.array([1, 2, 3], np.int32), t64(np.ones((3, 1))))


# -- householder_product --------------------------------------------------------------------------
@pytest.mark.parametrize("shape, k", [((5, 3), 2), ((2, 4, 4), 4), ((2, 6, 3), 3), ((3, 1, 5, 2), 1)])
def test_householder_product_matches_torch(shape, k):
    a, tau = randn(*shape, seed=21), randn(*shape[:-2], k, seed=22)
    compare_with_torch(linalg.householder_product, torch.linalg.householder_product, a, tau, **F64)


def test_householder_product_of_geqrf_gives_q():
    a = randn(6, 4, seed=23)
    qr, tau = torch.geqrf(torch.tensor(a))
    q = linalg.householder_product(t64(qr.numpy()), t64(tau.numpy()))
    assert_close(q.numpy(), np.linalg.qr(a)[0] * np.sign(np.diag(qr.numpy()))[None] * np.sign(
        np.diag(np.linalg.qr(a)[1]))[None], 1e-10, "Q of geqrf")


def test_householder_product_gradients_float32_and_second_derivatives():
    a, tau = randn(2, 5, 3, seed=24), randn(2, 2, seed=25)
    assert check_gradients(linalg.householder_product, a, tau)
    compare_double_backward_with_torch(linalg.householder_product, torch.linalg.householder_product, a, tau)
    compare_with_torch(linalg.householder_product, torch.linalg.householder_product, a, tau, dtype=np.float32,
                       rtol=1e-4)


def test_householder_product_errors():
    with pytest.raises(lamina.errors.ShapeError, match=r"householder_product: tau must have shape \(2,\) \+ \(k,\) "
                                                        r"\(A's batch axes\), got \(3, 3\)"):
        linalg.householder_product(t64(np.ones((2, 5, 3))), t64(np.ones((3, 3))))
    with pytest.raises(lamina.errors.ShapeError, match=r"householder_product: expected m >= n >= k .* \(3, 5\)"):
        linalg.householder_product(t64(np.ones((3, 5))), t64(np.ones(2)))
    with pytest.raises(lamina.errors.ShapeError, match=r"expected m >= n >= k .* of shape \(4,\)"):
        linalg.householder_product(t64(np.ones((5, 3))), t64(np.ones(4)))


# -- ldl_factor, ldl_solve ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 6, 6)])
def test_ldl_factor_and_solve_match_torch(shape):
    a = symmetric(*shape, seed=26)
    ld, pivots = linalg.ldl_factor(t64(a))
    t_ld, t_pivots = torch.linalg.ldl_factor(torch.tensor(a))
    assert_close(ld.numpy(), t_ld.numpy(), 1e-12, "LD")
    np.testing.assert_array_equal(pivots.numpy(), t_pivots.numpy())
    for b in [randn(*shape[:-1], 3, seed=27), randn(shape[-1], 2, seed=28)]:       # the second one broadcast
        x = linalg.ldl_solve(ld, pivots, t64(b))
        assert_close(x.numpy(), torch.linalg.ldl_solve(t_ld, t_pivots, torch.tensor(b)).numpy(), 1e-10)
        assert_close(x.numpy(), np.linalg.solve(a, np.broadcast_to(b, x.shape)), 1e-9, "A^-1 B")


def test_ldl_with_two_by_two_blocks_matches_torch():
    a = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])     # zero diagonal: 2 x 2 pivots
    ld, pivots, info = linalg.ldl_factor_ex(t64(a))
    t_ld, t_pivots, t_info = torch.linalg.ldl_factor_ex(torch.tensor(a))
    assert (pivots.numpy() < 0).any()
    np.testing.assert_array_equal(pivots.numpy(), t_pivots.numpy())
    assert_close(ld.numpy(), t_ld.numpy(), 1e-12)
    assert int(info.numpy()) == int(t_info) == 0
    assert_close(linalg.ldl_solve(ld, pivots, t64(np.eye(3))).numpy(), np.linalg.inv(a), 1e-12)


def test_ldl_singular_input_and_no_gradient():
    zeros = np.zeros((2, 3, 3))
    ld, pivots, info = linalg.ldl_factor_ex(t64(zeros))
    np.testing.assert_array_equal(info.numpy(), [1, 1])
    with pytest.raises(linalg.LinAlgError, match=r"ldl_factor: D\[1,1\] of the matrix at batch index \(0,\)"):
        linalg.ldl_factor(t64(zeros))
    with pytest.raises(linalg.LinAlgError, match=r"ldl_factor_ex: D\[1,1\]"):
        linalg.ldl_factor_ex(t64(zeros), check_errors=True)
    a = t64(symmetric(3, 3, seed=29), grad=True)
    ld, pivots = linalg.ldl_factor(a)
    with pytest.raises(RuntimeError, match="ldl_factor: no gradient is defined"):
        ld.sum().backward()
    with pytest.raises(RuntimeError, match="ldl_solve: no gradient is defined"):
        linalg.ldl_solve(ld.detach(), pivots, t64(np.ones((3, 1)), grad=True)).sum().backward()


def test_ldl_errors():
    with pytest.raises(lamina.errors.ShapeError, match=r"ldl_factor: expected square matrices .* \(3, 4\)"):
        linalg.ldl_factor(t64(np.ones((3, 4))))
    ld, pivots = linalg.ldl_factor(t64(np.eye(3)))
    with pytest.raises(lamina.errors.ShapeError, match=r"ldl_solve: LD of shape \(3, 3\) needs B of shape "
                                                        r"\(\.\.\., 3, k\), got B of shape \(2, 1\)"):
        linalg.ldl_solve(ld, pivots, t64(np.ones((2, 1))))
    with pytest.raises(lamina.errors.ShapeError, match=r"ldl_solve: LD of shape \(3, 3\) needs integer pivots of "
                                                        r"shape \(3,\)"):
        linalg.ldl_solve(ld, np.ones(2, np.int32), t64(np.ones((3, 1))))
    with pytest.raises(ValueError, match=r"ldl_solve: pivots must be nonzero with \|pivot\| <= 3"):
        linalg.ldl_solve(ld, np.array([1, 0, 3], np.int32), t64(np.ones((3, 1))))


# -- the namespace ------------------------------------------------------------------------------
def test_linalg_namespace_covers_torch_linalg_but_complex_eig():
    ours = set(linalg.__all__)
    theirs = {name for name in dir(torch.linalg) if not name.startswith("_")}
    assert theirs - ours == {"common_notes", "eig", "eigvals"}
    assert all(hasattr(linalg, name) for name in ours)
    x, y = randn(2, 3, 4, seed=30), randn(4, seed=31)
    compare_with_torch(linalg.matmul, torch.linalg.matmul, x, y, **F64)


@pytest.mark.parametrize("pivot_batch", [(), (1,)])
def test_lu_unpack_broadcasts_pivots_over_the_batch_of_lu(pivot_batch):
    lu, pivots = torch.linalg.lu_factor(torch.tensor(randn(2, 4, 4, seed=21)))
    shared = pivots[0].reshape(pivot_batch + (4,))
    p, lower, upper = linalg.lu_unpack(t64(lu), shared.numpy())
    assert p.shape == lower.shape == upper.shape == (2, 4, 4)
    for i in range(2):      # torch.lu_unpack broadcasts L and U, but fills P for the first matrix only
        theirs = torch.lu_unpack(lu[i], pivots[0])
        for x, y in zip((p, lower, upper), theirs):
            assert_close(x.numpy()[i], y.numpy(), 1e-12, f"lu_unpack with pivots of shape {tuple(shared.shape)}")
    with pytest.raises(lamina.errors.ShapeError, match=r"lu_unpack: LU of shape \(2, 4, 4\) needs pivots of shape "
                                                        r"\(2, 4\), got \(3, 4\) \(or batch axes that broadcast"):
        linalg.lu_unpack(t64(lu), np.ones((3, 4), np.int32))


@pytest.mark.parametrize("shape", [(3, 3), (3, 4), (4, 3)])
def test_lu_gradient_at_a_singular_u_names_lu_with_or_without_create_graph(shape):
    a = np.zeros(shape)
    a[:, 0] = 1.0                                # rank 1: U[1, 1] is exactly zero
    for create_graph in (False, True):
        x = t64(a, grad=True)
        _, lower, upper = linalg.lu(x)
        with pytest.raises(np.linalg.LinAlgError, match=r"^lu \(gradient\): the triangular matrix .* has a zero on "
                                                        r"its diagonal"):
            lamina.autograd.grad((lower * 2.0).sum() + upper.sum(), [x], create_graph=create_graph)
