"""vector_quantize and finite_scalar_quantize: nearest codes against brute force, the
straight-through gradient, the codebook and commitment gradients against a PyTorch
re-implementation (float64), gradient checks, FSQ's grid, bounds and indices, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


def _torch_vq(z, codebook, beta):
    distances = ((z[..., None, :] - codebook) ** 2).sum(-1)
    codes = codebook[distances.argmin(-1)]
    loss = ((z.detach() - codes) ** 2).mean() + beta * ((z - codes.detach()) ** 2).mean()
    return z + (codes - z).detach(), loss


def test_nearest_codes_match_brute_force_in_chunks():
    z, codebook = randn(3, 5, 7, 4, seed=1), randn(9, 4, seed=2)
    expected = ((z[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    for chunk in (1, 7, 1000):
        found = F.nearest_codes(z, codebook, chunk_rows=chunk)
        assert found.shape == (3, 5, 7)
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_quantize_matches_torch(dtype):
    z, codebook = randn(2, 3, 3, 4, seed=3), randn(6, 4, seed=4)

    def ours(z, e):
        out = F.vector_quantize(z, e, commitment_cost=0.3)
        return out.quantized, out.loss

    compare_with_torch(ours, lambda z, e: _torch_vq(z, e, 0.3), z, codebook, dtype=dtype)


def test_straight_through_gradient_is_identity():
    z = lamina.tensor(randn(4, 3, seed=5), requires_grad=True, dtype=np.float64)
    codebook = lamina.tensor(randn(5, 3, seed=6), requires_grad=True, dtype=np.float64)
    out = F.vector_quantize(z, codebook)
    upstream = randn(4, 3, seed=7)
    (out.quantized * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    np.testing.assert_array_equal(z.grad, upstream)
    assert codebook.grad is None or not np.any(codebook.grad)
    assert_close(out.quantized.numpy(), codebook.numpy()[out.indices], 1e-12)


def test_codebook_loss_gradcheck():
    # With beta = 0 and z constant the loss is ||z - e_k||^2 and its gradient in e the true one;
    # stop-gradients make the other gradients differ from finite differences by design.
    z = lamina.tensor(randn(3, 4, seed=8), dtype=np.float64)
    assert check_gradients(lambda e: F.vector_quantize(z, e, 0.0).loss, randn(5, 4, seed=9))


def test_perplexity_counts_codes_in_use():
    assert F.codebook_perplexity(np.arange(8).repeat(3), 8) == pytest.approx(8.0)
    assert F.codebook_perplexity(np.full(10, 2), 8) == pytest.approx(1.0)
    assert F.codebook_perplexity(np.array([0, 0, 1, 1, 1, 1]), 4) == pytest.approx(
        np.exp(-(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))))


# -- finite scalar quantisation -------------------------------------------------------------------
def _torch_fsq(z, levels, eps=1e-3):
    lv = torch.tensor(levels, dtype=z.dtype)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(z.dtype)
    shift = torch.atanh(offset / half_l)
    bounded = torch.tanh(z + shift) * half_l - offset
    rounded = bounded + (torch.round(bounded) - bounded).detach()
    return rounded / torch.floor(lv / 2)


@pytest.mark.parametrize("levels", [(3, 4, 5), (8, 5, 5, 5), (2, 7)])
def test_fsq_grid_and_bounds(levels):
    z = randn(4000, len(levels), seed=10, scale=4.0)
    codes = F.finite_scalar_quantize(lamina.tensor(z), levels).numpy()
    assert np.abs(codes).max() <= 1.0
    for axis, n in enumerate(levels):
        values = np.unique(codes[:, axis])
        assert len(values) == n
        np.testing.assert_allclose(values, (np.arange(n) - n // 2) / (n // 2), atol=1e-6)
    indices = F.fsq_codes_to_indices(codes, levels)
    assert indices.min() >= 0 and indices.max() < np.prod(levels)
    np.testing.assert_allclose(F.fsq_indices_to_codes(indices, levels), codes, atol=1e-6)
    every = np.arange(np.prod(levels))
    np.testing.assert_array_equal(F.fsq_codes_to_indices(F.fsq_indices_to_codes(every, levels), levels), every)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fsq_matches_torch_with_straight_through_gradient(dtype):
    levels = (3, 4, 5)
    z = randn(6, 3, 3, seed=11, scale=2.0)
    compare_with_torch(lambda z: F.finite_scalar_quantize(z, levels), lambda z: _torch_fsq(z, levels), z, dtype=dtype)


def test_fsq_gradient_is_that_of_the_bound():
    levels, eps = np.array([3.0, 4.0]), 1e-3
    z = lamina.tensor(randn(5, 2, seed=12), requires_grad=True, dtype=np.float64)
    F.finite_scalar_quantize(z, (3, 4), eps).sum().backward()
    half_l = (levels - 1) * (1 + eps) / 2
    shift = np.arctanh(np.where(levels % 2 == 0, 0.5, 0.0) / half_l)
    expected = (1 - np.tanh(z.numpy() + shift) ** 2) * half_l / np.floor(levels / 2)
    assert_close(z.grad, expected, 1e-12)


def test_errors_name_the_function():
    with pytest.raises(ShapeError, match=r"vector_quantize: .*\(2, 3\).*\(4, 5\)"):
        F.vector_quantize(lamina.tensor(np.zeros((2, 3))), lamina.tensor(np.zeros((4, 5))))
    with pytest.raises(ShapeError, match="nearest_codes"):
        F.nearest_codes(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ShapeError, match="finite_scalar_quantize: .*3 channels"):
        F.finite_scalar_quantize(lamina.tensor(np.zeros((2, 2))), (3, 4, 5))
    with pytest.raises(ValueError, match="levels"):
        F.finite_scalar_quantize(lamina.tensor(np.zeros((2, 2))), (1, 4))
