"""lamina.linalg decompositions (eigh, svd, qr) and what is built on them (pinv, norms): values
and gradients against torch.linalg, gradient checks, second derivatives, and the errors.

Eigenvectors and singular vectors are defined up to sign, so they are compared after a sign
fix (each vector times the sign of its first entry) or through sign-free quantities."""

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
from lamina.functional import diag_embed, sign

RTOL = {np.float32: 5e-4, np.float64: 1e-8}


def distinct_spectrum(*shape, seed=0):
    """Symmetric matrices Q diag(1, 2, ..., n) Q^T plus a small random part: well-separated
    eigenvalues (the random part stays within the lower triangle's reach)."""
    n = shape[-1]
    q, _ = np.linalg.qr(randn(*shape, seed=seed))
    return q @ np.diag(np.arange(1.0, n + 1)) @ q.swapaxes(-1, -2) + 0.1 * randn(*shape, seed=seed + 1)


def distinct_singular(*shape, seed=0):
    """Matrices U diag(k, k-1, ..., 1) V^T: well-separated singular values."""
    m, n = shape[-2:]
    k = min(m, n)
    u, _ = np.linalg.qr(randn(*shape[:-2], m, k, seed=seed))
    v, _ = np.linalg.qr(randn(*shape[:-2], n, k, seed=seed + 1))
    return u @ np.diag(np.arange(k, 0, -1.0) + 0.5) @ v.swapaxes(-1, -2)


def symmetrized(fn):
    return lambda a: fn((a + a.swapaxes(-1, -2)) / 2)


WEIGHTS = np.array([0.3, -1.2, 0.7, 2.0])


def eigh_ours(a, uplo="L"):
    w, v = linalg.eigh(a, UPLO=uplo)
    return w, v * sign(v[..., :1, :]), v @ diag_embed(lamina.tensor(WEIGHTS, dtype=v.dtype)) @ v.swapaxes(-1, -2)


def eigh_theirs(a, uplo="L"):
    w, v = torch.linalg.eigh(a, UPLO=uplo)
    return w, v * torch.sign(v[..., :1, :]), v @ torch.diag_embed(torch.tensor(WEIGHTS, dtype=v.dtype)) @ v.mT


def svd_ours(a):
    u, s, vh = linalg.svd(a)
    fix = sign(u[..., :1, :])
    return u * fix, s, vh * fix.swapaxes(-1, -2)


def svd_theirs(a):
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    fix = torch.sign(u[..., :1, :])
    return u * fix, s, vh * fix.mT


def qr_ours(a, mode="reduced"):
    q, r = linalg.qr(a, mode=mode)
    fix = sign(lamina.functional.diagonal(r)[..., None, :])
    return q * fix, r * fix.swapaxes(-1, -2)


def qr_theirs(a, mode="reduced"):
    q, r = torch.linalg.qr(a, mode=mode)
    fix = torch.sign(torch.diagonal(r, 0, -2, -1)[..., None, :])
    return q * fix, r * fix.mT


CASES = {
    "eigh": (eigh_ours, eigh_theirs, [distinct_spectrum(2, 3, 4, 4)]),
    "eigh_upper": (lambda a: eigh_ours(a, "U"), lambda a: eigh_theirs(a, "U"), [distinct_spectrum(2, 4, 4)]),
    "eigvalsh": (linalg.eigvalsh, torch.linalg.eigvalsh, [distinct_spectrum(2, 3, 4, 4)]),
    "svd_tall": (svd_ours, svd_theirs, [distinct_singular(2, 3, 5, 3)]),
    "svd_wide": (svd_ours, svd_theirs, [distinct_singular(2, 3, 5)]),
    "svd_square": (svd_ours, svd_theirs, [distinct_singular(4, 4)]),
    "svdvals": (linalg.svdvals, torch.linalg.svdvals, [distinct_singular(2, 5, 3)]),
    "qr_tall": (qr_ours, qr_theirs, [randn(2, 3, 5, 3)]),
    "qr_square": (qr_ours, qr_theirs, [randn(4, 4)]),
    "qr_wide": (qr_ours, qr_theirs, [randn(2, 3, 5)]),
    "qr_complete_wide": (lambda a: qr_ours(a, "complete"), lambda a: qr_theirs(a, "complete"), [randn(3, 4)]),
    # torch has no gradient in mode 'r'; lamina's is the reduced mode's
    "qr_r": (lambda a: linalg.qr(a, mode="r")[1].abs(), lambda a: torch.linalg.qr(a)[1].abs(), [randn(4, 3)]),
    "pinv_tall": (linalg.pinv, torch.linalg.pinv, [distinct_singular(2, 5, 3)]),
    "pinv_wide": (linalg.pinv, torch.linalg.pinv, [distinct_singular(3, 4)]),
    "norm_fro": (linalg.matrix_norm, torch.linalg.matrix_norm, [randn(2, 3, 4)]),
    "norm_nuc": (lambda a: linalg.matrix_norm(a, "nuc"), lambda a: torch.linalg.matrix_norm(a, "nuc"),
                 [distinct_singular(2, 3, 4)]),
    "norm_2": (lambda a: linalg.matrix_norm(a, 2, keepdim=True),
               lambda a: torch.linalg.matrix_norm(a, 2, keepdim=True), [distinct_singular(2, 4, 3)]),
    "norm_minus_2": (lambda a: linalg.matrix_norm(a, -2), lambda a: torch.linalg.matrix_norm(a, -2),
                     [distinct_singular(2, 4, 3)]),
    "norm_1": (lambda a: linalg.matrix_norm(a, 1), lambda a: torch.linalg.matrix_norm(a, 1), [randn(2, 3, 4)]),
    "norm_inf": (lambda a: linalg.matrix_norm(a, float("inf")),
                 lambda a: torch.linalg.matrix_norm(a, float("inf")), [randn(2, 3, 4)]),
}

# gradient checks: one tensor out, and a symmetric input for the ops that read one triangle
CHECKED = {
    "eigh": symmetrized(lambda a: eigh_ours(a)[0] + eigh_ours(a)[1].sum(-2) + eigh_ours(a)[2].sum(-1)),
    "eigvalsh": symmetrized(linalg.eigvalsh),
    "svd_tall": lambda a: sum(t.sum() for t in svd_ours(a)),
    "svd_wide": lambda a: sum(t.sum() for t in svd_ours(a)),
    "svdvals": linalg.svdvals,
    "qr_tall": lambda a: sum(t.sum() for t in qr_ours(a)),
    "qr_wide": lambda a: sum(t.sum() for t in qr_ours(a)),
    "pinv_tall": linalg.pinv,
    "pinv_wide": linalg.pinv,
    "norm_nuc": CASES["norm_nuc"][0],
    "norm_2": CASES["norm_2"][0],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, rtol=RTOL[dtype])


@pytest.mark.parametrize("name", list(CHECKED))
def test_gradcheck(name):
    assert check_gradients(CHECKED[name], *CASES[name][2], atol=1e-6, rtol=1e-5)


DOUBLE = {
    "eigh_values": (lambda a: linalg.eigh(a)[0], lambda a: torch.linalg.eigh(a)[0], [distinct_spectrum(2, 3, 3)]),
    "eigh_projector": (lambda a: eigh_ours(a)[2], lambda a: eigh_theirs(a)[2], [distinct_spectrum(4, 4)]),
    "eigvalsh": (linalg.eigvalsh, torch.linalg.eigvalsh, [distinct_spectrum(2, 3, 3)]),
    "svd_vectors": (lambda a: svd_ours(a)[0] + svd_ours(a)[2].swapaxes(-1, -2)[..., :3, :],
                    lambda a: svd_theirs(a)[0] + svd_theirs(a)[2].mT[..., :3, :], [distinct_singular(2, 3, 3)]),
    "svd_tall": (lambda a: svd_ours(a)[0] * svd_ours(a)[1][..., None, :],
                 lambda a: svd_theirs(a)[0] * svd_theirs(a)[1][..., None, :], [distinct_singular(4, 3)]),
    "svd_wide": (lambda a: svd_ours(a)[2], lambda a: svd_theirs(a)[2], [distinct_singular(2, 4)]),
    "svdvals": (linalg.svdvals, torch.linalg.svdvals, [distinct_singular(2, 4, 3)]),
    "qr": (lambda a: qr_ours(a)[0] + qr_ours(a)[1].sum(), lambda a: qr_theirs(a)[0] + qr_theirs(a)[1].sum(),
           [randn(4, 3)]),
    "pinv": (linalg.pinv, torch.linalg.pinv, [distinct_singular(4, 3)]),
}


@pytest.mark.parametrize("name", list(DOUBLE))
def test_double_backward_matches_torch(name):
    ours, theirs, inputs = DOUBLE[name]
    compare_double_backward_with_torch(ours, theirs, *inputs, rtol=1e-7)


@pytest.mark.parametrize("name", ["eigh_projector", "svd_tall", "qr"])
def test_gradgradcheck(name):
    ours, _, inputs = DOUBLE[name]
    fn = symmetrized(ours) if name.startswith("eigh") else ours
    assert check_second_derivatives(fn, *inputs)


def test_eigenvalue_gradients_are_defined_at_repeated_eigenvalues():
    """eigvalsh and eigh's eigenvalues alone: the gradient V diag(g) V^T needs no gaps (here
    of the identity: sum of eigenvalues = trace, gradient I)."""
    a = lamina.tensor(np.eye(3), requires_grad=True, dtype=np.float64)
    linalg.eigvalsh(a).sum().backward()
    np.testing.assert_allclose(a.grad, np.eye(3), atol=1e-12)
    a.grad = None
    linalg.eigh(a)[0].sum().backward()
    np.testing.assert_allclose(a.grad, np.eye(3), atol=1e-12)


def test_reconstructions():
    a = distinct_singular(2, 5, 3)
    u, s, vh = linalg.svd(lamina.tensor(a))
    np.testing.assert_allclose((u * s[..., None, :] @ vh).numpy(), a, atol=1e-5)
    q, r = linalg.qr(lamina.tensor(a))
    np.testing.assert_allclose((q @ r).numpy(), a, atol=1e-5)
    w, v = linalg.eigh(lamina.tensor(distinct_spectrum(4, 4)))
    np.testing.assert_allclose((v * w[..., None, :] @ v.swapaxes(-1, -2)).numpy(),
                               np.tril(distinct_spectrum(4, 4)) + np.tril(distinct_spectrum(4, 4), -1).T, atol=1e-5)


def test_full_matrices_svd_values_and_singular_value_gradients():
    a = lamina.tensor(distinct_singular(5, 3), requires_grad=True, dtype=np.float64)
    u, s, vh = linalg.svd(a, full_matrices=True)
    assert u.shape == (5, 5) and vh.shape == (3, 3)
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(a.numpy(), compute_uv=False))
    (s.sum() + u[..., :3].abs().sum()).backward()
    assert a.grad.shape == (5, 3)
    with pytest.raises(RuntimeError, match=r"svd: no gradient through the extra singular vectors"):
        linalg.svd(a, full_matrices=True)[0].sum().backward()


def test_qr_complete_tall_has_no_gradient():
    a = lamina.tensor(randn(4, 3), requires_grad=True, dtype=np.float64)
    q, _ = linalg.qr(a, mode="complete")
    assert q.shape == (4, 4)
    with pytest.raises(RuntimeError, match=r"qr: no gradient for mode='complete' when rows > columns"):
        q.sum().backward()


def test_bad_arguments():
    with pytest.raises(lamina.ShapeError, match=r"eigh: expected square matrices"):
        linalg.eigh(lamina.tensor(randn(3, 4)))
    with pytest.raises(lamina.ShapeError, match=r"svd: expected a matrix or a batch of matrices"):
        linalg.svd(lamina.tensor(randn(3)))
    with pytest.raises(ValueError, match=r"UPLO must be 'L' or 'U'"):
        linalg.eigh(lamina.tensor(randn(3, 3)), UPLO="X")
    with pytest.raises(ValueError, match=r"qr: mode must be"):
        linalg.qr(lamina.tensor(randn(3, 3)), mode="economic")
    with pytest.raises(ValueError, match=r"matrix_norm: ord must be"):
        linalg.matrix_norm(lamina.tensor(randn(3, 3)), 3)


def test_procrustes_by_gradient_descent():
    """Nearest orthogonal matrix to M: minimise |Q - M|^2 over Q = U V^T from the SVD of a
    free parameter; the optimum is the polar factor U_M V_M^T."""
    m = distinct_singular(3, 3, seed=4) + 0.3 * randn(3, 3, seed=5)
    raw = lamina.tensor(np.eye(3) + 0.1 * randn(3, 3, seed=6), requires_grad=True, dtype=np.float64)
    optimizer = lamina.optim.Adam([raw], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        u, _, vh = linalg.svd(raw)
        loss = ((u @ vh - lamina.tensor(m, dtype=np.float64)) ** 2).sum()
        loss.backward()
        optimizer.step()
    u_m, _, vh_m = np.linalg.svd(m)
    u, _, vh = linalg.svd(raw)
    np.testing.assert_allclose((u @ vh).numpy(), u_m @ vh_m, atol=1e-3)


def test_frobenius_norm_gradient_at_zero_is_zero_as_torch():
    zeros = np.zeros((2, 2, 3))
    a, t = lamina.tensor(zeros, requires_grad=True, dtype=np.float64), torch.tensor(zeros, requires_grad=True)
    linalg.matrix_norm(a).sum().backward()
    torch.linalg.matrix_norm(t).sum().backward()
    np.testing.assert_array_equal(a.grad, t.grad.numpy())                 # NaN would not match


EMPTY = {
    "svd_empty_batch": (lambda a: linalg.svd(a)[1], lambda a: torch.linalg.svd(a)[1], np.zeros((0, 2, 2))),
    "svdvals_0x3": (linalg.svdvals, torch.linalg.svdvals, np.zeros((0, 3))),
    "qr_empty_batch": (lambda a: linalg.qr(a), lambda a: torch.linalg.qr(a), np.zeros((0, 3, 3))),
    "qr_0x0": (lambda a: linalg.qr(a), lambda a: torch.linalg.qr(a), np.zeros((0, 0))),
    "qr_3x0": (lambda a: linalg.qr(a), lambda a: torch.linalg.qr(a), np.zeros((3, 0))),
    "spectral_norm_0x3": (lambda a: linalg.matrix_norm(a, 2), lambda a: torch.linalg.matrix_norm(a, 2),
                          np.zeros((0, 3))),
    "spectral_norm_batch_3x0": (lambda a: linalg.matrix_norm(a, 2), lambda a: torch.linalg.matrix_norm(a, 2),
                                np.zeros((2, 3, 0))),
    "row_sum_norm_0x3": (lambda a: linalg.matrix_norm(a, float("inf")),
                         lambda a: torch.linalg.matrix_norm(a, float("inf")), np.zeros((0, 3))),
    "column_sum_norm_3x0": (lambda a: linalg.matrix_norm(a, 1), lambda a: torch.linalg.matrix_norm(a, 1),
                            np.zeros((3, 0))),
}


@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_matrices_and_batches_match_torch(name):
    ours, theirs, array = EMPTY[name]
    if "norm" not in name:
        compare_with_torch(ours, theirs, array, dtype=np.float64)
        return
    compare_with_torch(ours, theirs, array, dtype=np.float64, grad=False)   # torch's result is off its graph
    a = lamina.tensor(array, requires_grad=True)
    ours(a).sum().backward()
    assert a.grad.shape == array.shape


def test_smallest_singular_value_of_an_empty_matrix_is_an_error():
    with pytest.raises(ValueError, match="matrix_norm: ord -2 .* of an empty matrix"):
        linalg.matrix_norm(lamina.tensor(np.zeros((0, 3))), -2)
