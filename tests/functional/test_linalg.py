"""lamina.linalg (structure ops, inverses, determinants, solves, Cholesky, matrix exponential):
values and gradients against torch.linalg in float32 and float64, float64 gradient checks,
second derivatives against torch, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import linalg
from lamina.functional import diag_embed, diagonal, trace, tril, triu

RTOL = {np.float32: 2e-4, np.float64: 1e-9}


def general(*shape, seed=0):
    """Square matrices with eigenvalues away from 0: randn / sqrt(n) + 2 I."""
    n = shape[-1]
    return randn(*shape, seed=seed) / np.sqrt(n) + 2 * np.eye(n)


def spd(*shape, seed=0):
    """Symmetric positive-definite matrices B B^T / n + I."""
    b = randn(*shape, seed=seed)
    return b @ b.swapaxes(-1, -2) / shape[-1] + np.eye(shape[-1])


def triangular(*shape, upper=False, seed=0):
    """A full matrix whose chosen triangle is well conditioned (the other triangle is noise
    the ops must ignore)."""
    a = randn(*shape, seed=seed) * 0.3
    n = shape[-1]
    return a + np.eye(n) * (2 + np.arange(n))


def singular(*shape, seed=0):
    """Matrices of rank n - 1 (a row of zeros): det 0 and a nonzero cofactor matrix."""
    a = general(*shape, seed=seed)
    a[..., -1, :] = 0.0
    return a


CASES = {
    # name: (lamina fn, torch fn, inputs)
    "tril": (lambda a: tril(a, -1), lambda a: torch.tril(a, -1), [randn(2, 3, 4, 5)]),
    "triu": (lambda a: triu(a, 1), lambda a: torch.triu(a, 1), [randn(2, 4, 3)]),
    "diagonal": (lambda a: diagonal(a, 1), lambda a: torch.diagonal(a, 1, -2, -1), [randn(2, 3, 4, 5)]),
    "diagonal_axes": (lambda a: diagonal(a, -1, 0, 2), lambda a: torch.diagonal(a, -1, 0, 2), [randn(4, 2, 3)]),
    "diagonal_torch_names": (lambda a: diagonal(a, offset=1, dim1=0, dim2=2),
                             lambda a: torch.linalg.diagonal(a, offset=1, dim1=0, dim2=2), [randn(4, 2, 3)]),
    "diag_embed": (lambda v: diag_embed(v, 1), lambda v: torch.diag_embed(v, 1), [randn(2, 3, 4)]),
    "trace": (trace, lambda a: torch.diagonal(a, 0, -2, -1).sum(-1), [randn(2, 3, 4, 4)]),
    "inv": (linalg.inv, torch.linalg.inv, [general(2, 3, 4, 4)]),
    "det": (linalg.det, torch.linalg.det, [general(2, 3, 4, 4)]),
    "slogdet": (linalg.slogdet, lambda a: tuple(torch.linalg.slogdet(a)), [general(2, 4, 4) - 2.5 * np.eye(4)]),
    "logdet": (linalg.logdet, torch.logdet, [spd(3, 4, 4)]),
    "solve_matrix": (linalg.solve, torch.linalg.solve, [general(2, 3, 4, 4), randn(2, 3, 4, 2, seed=1)]),
    "solve_broadcast": (linalg.solve, torch.linalg.solve, [general(3, 4, 4), randn(2, 1, 4, 2, seed=1)]),
    "solve_vectors": (linalg.solve, torch.linalg.solve, [general(2, 3, 4, 4), randn(2, 3, 4, seed=1)]),
    "solve_vector": (linalg.solve, torch.linalg.solve, [general(4, 4), randn(4, seed=1)]),
    "cholesky": (linalg.cholesky, torch.linalg.cholesky, [spd(2, 3, 4, 4)]),
    "cholesky_upper": (lambda a: linalg.cholesky(a, upper=True), lambda a: torch.linalg.cholesky(a, upper=True),
                       [spd(2, 4, 4)]),
    "solve_triangular_lower": (lambda a, b: linalg.solve_triangular(a, b, upper=False),
                               lambda a, b: torch.linalg.solve_triangular(a, b, upper=False),
                               [triangular(2, 1, 4, 4), randn(2, 3, 4, 2, seed=1)]),
    "solve_triangular_upper_right": (
        lambda a, b: linalg.solve_triangular(a, b, upper=True, left=False),
        lambda a, b: torch.linalg.solve_triangular(a, b, upper=True, left=False),
        [triangular(2, 4, 4), randn(2, 3, 4, seed=1)]),
    "solve_triangular_unit_broadcast": (
        lambda a, b: linalg.solve_triangular(a, b, upper=False, unitriangular=True),
        lambda a, b: torch.linalg.solve_triangular(a, b, upper=False, unitriangular=True),
        [triangular(4, 4), randn(3, 4, 2, seed=1)]),
    "cholesky_solve": (lambda b, l_factor: linalg.cholesky_solve(b, tril(l_factor)),
                       lambda b, l_factor: torch.cholesky_solve(b, torch.tril(l_factor)),
                       [randn(2, 4, 3, seed=1), triangular(2, 4, 4)]),
    "matrix_power": (lambda a: linalg.matrix_power(a, 5), lambda a: torch.linalg.matrix_power(a, 5),
                     [general(2, 3, 3) / 2]),
    "matrix_power_negative": (lambda a: linalg.matrix_power(a, -3), lambda a: torch.linalg.matrix_power(a, -3),
                              [general(2, 3, 3)]),
    "matrix_exp": (linalg.matrix_exp, torch.linalg.matrix_exp, [randn(2, 3, 4, 4) * 0.7]),
}

# ops whose forward reads one triangle: gradient checks perturb the input through a symmetrization
SYMMETRIC_INPUT = {"cholesky", "cholesky_upper"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, rtol=RTOL[dtype])


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    if name == "slogdet":
        ours = lambda a: linalg.slogdet(a)[1]  # noqa: E731 - the sign has no gradient
    if name in SYMMETRIC_INPUT:
        ours = (lambda f: lambda a: f((a + a.swapaxes(-1, -2)) / 2))(ours)
    assert check_gradients(ours, *inputs, atol=1e-6, rtol=1e-5)


DOUBLE = {
    "tril": (lambda a: tril(a) * tril(a), lambda a: torch.tril(a) * torch.tril(a), [randn(3, 3)]),
    "diagonal": (lambda a: diagonal(a) ** 3, lambda a: torch.diagonal(a, 0, -2, -1) ** 3, [randn(2, 3, 3)]),
    "trace": (lambda a: trace(a @ a), lambda a: torch.diagonal(a @ a, 0, -2, -1).sum(-1), [randn(2, 3, 3)]),
    "diag_embed": (lambda v: diag_embed(v * v), lambda v: torch.diag_embed(v * v), [randn(2, 3)]),
    "inv": (linalg.inv, torch.linalg.inv, [general(2, 3, 3)]),
    "det": (linalg.det, torch.linalg.det, [general(2, 3, 3)]),
    "slogdet": (lambda a: linalg.slogdet(a)[1], lambda a: torch.linalg.slogdet(a)[1], [general(2, 3, 3)]),
    "solve": (linalg.solve, torch.linalg.solve, [general(2, 3, 3), randn(2, 3, 2, seed=1)]),
    "cholesky": (linalg.cholesky, torch.linalg.cholesky, [spd(2, 3, 3)]),
    "cholesky_upper": (lambda a: linalg.cholesky(a, upper=True), lambda a: torch.linalg.cholesky(a, upper=True),
                       [spd(3, 3)]),
    "solve_triangular": (lambda a, b: linalg.solve_triangular(a, b, upper=True),
                         lambda a, b: torch.linalg.solve_triangular(a, b, upper=True),
                         [triangular(2, 3, 3), randn(2, 3, 2, seed=1)]),
    "solve_triangular_right_unit": (
        lambda a, b: linalg.solve_triangular(a, b, upper=False, left=False, unitriangular=True),
        lambda a, b: torch.linalg.solve_triangular(a, b, upper=False, left=False, unitriangular=True),
        [triangular(3, 3), randn(2, 3, seed=1)]),
    "matrix_exp": (linalg.matrix_exp, torch.linalg.matrix_exp, [randn(2, 3, 3) * 0.7]),
}


@pytest.mark.parametrize("name", list(DOUBLE))
def test_double_backward_matches_torch(name):
    ours, theirs, inputs = DOUBLE[name]
    compare_double_backward_with_torch(ours, theirs, *inputs, rtol=1e-8)


@pytest.mark.parametrize("name", ["inv", "det", "solve_triangular", "matrix_exp"])
def test_gradgradcheck(name):
    ours, _, inputs = DOUBLE[name]
    assert check_second_derivatives(ours, *inputs)


def test_third_derivative_of_logdet():
    """d^3 log det(x A) / dx^3 = 2 n / x^3 for A invertible, through three recorded backwards."""
    a = lamina.tensor(general(3, 3), dtype=np.float64)
    x = lamina.tensor(1.5, requires_grad=True, dtype=np.float64)
    y = linalg.slogdet(x * a)[1]
    (g1,) = lamina.autograd.grad(y, [x], create_graph=True)
    (g2,) = lamina.autograd.grad(g1, [x], create_graph=True)
    (g3,) = lamina.autograd.grad(g2, [x])
    np.testing.assert_allclose(g3, 2 * 3 / 1.5**3, rtol=1e-10)


def test_float32_stays_float32():
    a = lamina.tensor(spd(2, 3, 3).astype(np.float32), requires_grad=True)
    outs = [linalg.inv(a), linalg.det(a), linalg.cholesky(a), linalg.matrix_exp(a), linalg.slogdet(a)[1],
            linalg.solve_triangular(linalg.cholesky(a), a, upper=False)]
    sum(o.sum() for o in outs).backward()
    assert all(o.dtype == np.float32 for o in outs) and a.grad.dtype == np.float32


def test_det_gradient_at_singular_matrices_is_the_cofactor_matrix():
    """At rank n - 1 the gradient of det is the nonzero cofactor matrix (torch 2.13 returns 0
    there): checked by centred differences and, for the zero last row, against the cofactors."""
    a = singular(2, 4, 4, seed=2)  # SVD factors of either orientation (det(V) = 1 and -1)
    assert check_gradients(linalg.det, a, atol=1e-7, rtol=1e-6)
    x = lamina.tensor(a, requires_grad=True, dtype=np.float64)
    linalg.det(x).sum().backward()
    for k in range(2):
        for j in range(4):
            minor = np.delete(a[k, :-1], j, axis=1)
            np.testing.assert_allclose(x.grad[k, -1, j], (-1) ** (3 + j) * np.linalg.det(minor), atol=1e-12)
    np.testing.assert_allclose(x.grad[:, :-1], 0.0, atol=1e-12)


def test_trace_of_a_product_is_the_frobenius_inner_product():
    a, b = randn(2, 3, 4), randn(2, 4, 3, seed=1)
    np.testing.assert_allclose(trace(lamina.tensor(a) @ lamina.tensor(b)).numpy(), np.einsum("bij,bji->b", a, b))


# -- errors ----------------------------------------------------------------------------------
def test_non_square_matrices_are_rejected():
    for op in (linalg.inv, linalg.det, linalg.cholesky, linalg.matrix_exp, lambda a: linalg.slogdet(a)):
        with pytest.raises(lamina.ShapeError, match=r"expected square matrices \(\.\.\., n, n\), got shape \(2, 3, 4"):
            op(lamina.tensor(randn(2, 3, 4)))


def test_solve_names_mismatched_shapes():
    with pytest.raises(lamina.ShapeError, match=r"solve: A of shape \(3, 3\) needs B .* got B of shape \(4, 2\)"):
        linalg.solve(lamina.tensor(general(3, 3)), lamina.tensor(randn(4, 2)))
    with pytest.raises(lamina.ShapeError, match=r"solve_triangular: A of shape \(3, 3\) needs B with 3 columns"):
        linalg.solve_triangular(lamina.tensor(general(3, 3)), lamina.tensor(randn(3, 2)), upper=True, left=False)


def test_singular_matrices_name_the_batch_index():
    a = general(2, 3, 3, 3)
    a[1, 2] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match=r"inv: the matrix at batch index \(1, 2\) of the input of shape "
                                                   r"\(2, 3, 3, 3\) is singular; expected an invertible matrix"):
        linalg.inv(lamina.tensor(a))
    with pytest.raises(np.linalg.LinAlgError, match=r"solve: the matrix at batch index \(1, 2\)"):
        linalg.solve(lamina.tensor(a), lamina.tensor(randn(3, 2)))
    lower = np.tril(general(2, 3, 3))
    lower[1, 1, 1] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match=r"solve_triangular: the triangular matrix at batch index \(1,\)"):
        linalg.solve_triangular(lamina.tensor(lower), lamina.tensor(randn(2, 3, 1)), upper=False)


def test_cholesky_names_the_matrix_that_is_not_positive_definite():
    a = spd(3, 4, 4)
    a[2] -= 5 * np.eye(4)
    with pytest.raises(np.linalg.LinAlgError, match=r"cholesky: the matrix at batch index \(2,\) of the input of "
                                                   r"shape \(3, 4, 4\) is not positive definite"):
        linalg.cholesky(lamina.tensor(a))


def test_matrix_power_needs_an_integer():
    with pytest.raises(ValueError, match="integer exponent"):
        linalg.matrix_power(lamina.tensor(general(3, 3)), 1.5)
    np.testing.assert_array_equal(linalg.matrix_power(lamina.tensor(general(2, 3, 3)), 0).numpy(),
                                  np.broadcast_to(np.eye(3), (2, 3, 3)))


# -- an application ----------------------------------------------------------------------------
def test_maximum_likelihood_recovers_a_gaussian_covariance():
    """Fit the Cholesky factor L of a zero-mean Gaussian's covariance by Adam on the average
    negative log-likelihood log det L + |L^-1 x|^2 / 2; L L^T approaches the sample covariance."""
    rng = np.random.default_rng(0)
    true_factor = np.array([[1.5, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.4, 0.3, 0.9]])
    x = rng.standard_normal((500, 3)) @ true_factor.T
    sample_cov = x.T @ x / len(x)
    raw = lamina.tensor(np.eye(3), requires_grad=True, dtype=np.float64)
    optimizer = lamina.optim.Adam([raw], lr=0.05)
    data = lamina.tensor(x.T, dtype=np.float64)
    for _ in range(400):
        optimizer.zero_grad()
        factor = tril(raw)
        z = linalg.solve_triangular(factor, data, upper=False)
        nll = lamina.functional.sum(lamina.functional.log(lamina.functional.abs(diagonal(factor)))) + \
            (z * z).sum() / (2 * len(x))
        nll.backward()
        optimizer.step()
    fitted = tril(raw).numpy()
    np.testing.assert_allclose(fitted @ fitted.T, sample_cov, atol=2e-3)
    np.testing.assert_allclose(sample_cov, true_factor @ true_factor.T, atol=0.3)


# -- empty matrices and batches ------------------------------------------------------------------
EMPTY = {
    "solve_triangular_no_columns": (lambda a, b: linalg.solve_triangular(a, b, upper=True),
                                    lambda a, b: torch.linalg.solve_triangular(a, b, upper=True),
                                    [general(3, 3), np.zeros((3, 0))]),
    "solve_triangular_empty_batch": (lambda a, b: linalg.solve_triangular(a, b, upper=False),
                                     lambda a, b: torch.linalg.solve_triangular(a, b, upper=False),
                                     [np.zeros((0, 3, 3)), np.zeros((0, 3, 2))]),
    "cholesky_0x0": (linalg.cholesky, torch.linalg.cholesky, [np.zeros((0, 0))]),
    "cholesky_empty_batch": (linalg.cholesky, torch.linalg.cholesky, [np.zeros((0, 2, 2))]),
    "cholesky_solve_no_columns": (linalg.cholesky_solve, torch.cholesky_solve,
                                  [np.zeros((3, 0)), np.linalg.cholesky(spd(3, 3))]),
    "matrix_exp_0x0": (linalg.matrix_exp, torch.linalg.matrix_exp, [np.zeros((0, 0))]),
    "matrix_exp_empty_batch": (linalg.matrix_exp, torch.linalg.matrix_exp, [np.zeros((0, 2, 2))]),
}


@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_matrices_and_batches_match_torch(name):
    ours, theirs, arrays = EMPTY[name]
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)


def test_matrix_power_zero_is_on_the_graph_with_a_zero_gradient():
    compare_with_torch(lambda a: linalg.matrix_power(a, 0), lambda a: torch.linalg.matrix_power(a, 0),
                       general(2, 3, 3), dtype=np.float64)
