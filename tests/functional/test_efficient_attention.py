"""Linformer, Nystromformer and Reformer LSH attention: values and gradients against float64
PyTorch rewrites of the papers' formulas (LSH with the same rotations), finite differences,
the limits in which each equals softmax attention, the pseudo-inverse iteration against
numpy.linalg.pinv, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from torch_efficient_attention import full_attention, iterative_pinv, linformer, lsh, nystrom, random_rotations


def _tensors(*arrays):
    return [lamina.tensor(a, dtype=np.float64) for a in arrays]


def _qkv(steps: int = 8, d: int = 3, seed: int = 0, lead=(2,)):
    return [randn(*lead, steps, d, seed=seed + i) for i in range(3)]


# -- Linformer ----------------------------------------------------------------------------
def test_linformer_matches_torch_with_separate_and_shared_projections():
    q, k, v = _qkv()
    e, f = randn(3, 11, seed=5), randn(3, 11, seed=6)          # T_max = 11 > T = 8: first 8 columns
    compare_with_torch(F.linformer_attention, linformer, q, k, v, e, f, dtype=np.float64)
    compare_with_torch(lambda q, k, v, e: F.linformer_attention(q, k, v, e),
                       lambda q, k, v, e: linformer(q, k, v, e, e), q, k, v, e, dtype=np.float64)


def test_linformer_with_identity_projections_is_full_attention():
    q, k, v = _tensors(*_qkv(steps=6))
    eye = lamina.tensor(np.eye(6), dtype=np.float64)
    expected = F.scaled_dot_product_attention(q, k, v).numpy()
    np.testing.assert_allclose(F.linformer_attention(q, k, v, eye).numpy(), expected, rtol=1e-12, atol=1e-14)


def test_linformer_gradcheck():
    assert check_gradients(F.linformer_attention, *_qkv(steps=4, lead=()), randn(2, 5, seed=3), randn(2, 5, seed=4))


# -- Nystromformer ------------------------------------------------------------------------
def test_pinv_iteration_converges_to_numpy_pinv():
    a = np.eye(6) + 0.2 * randn(6, 6, seed=1)                  # condition number about 2
    expected = np.linalg.pinv(a)
    errors = [np.abs(F.nystrom_pinv(lamina.tensor(a, dtype=np.float64), i).numpy() - expected).max()
              for i in range(7)]
    assert all(later < earlier for earlier, later in zip(errors[:5], errors[1:6]))
    assert errors[0] > 0.5 and errors[6] < 1e-12


def test_pinv_matches_torch_with_gradients():
    a = np.stack([np.eye(4) + 0.3 * randn(4, 4, seed=s) for s in range(2)])
    compare_with_torch(F.nystrom_pinv, iterative_pinv, a, dtype=np.float64)


@pytest.mark.parametrize("landmarks", [2, 4])
def test_nystrom_matches_torch(landmarks):
    compare_with_torch(lambda q, k, v: F.nystrom_attention(q, k, v, landmarks),
                       lambda q, k, v: nystrom(q, k, v, landmarks), *_qkv(lead=(2, 2)), dtype=np.float64)


def test_nystrom_approaches_full_attention_as_landmarks_reach_the_length():
    q, k, v = _tensors(*_qkv(steps=16, d=4))
    full = full_attention(*(torch.tensor(t.numpy()) for t in (q, k, v))).numpy()
    error = {m: np.abs(F.nystrom_attention(q, k, v, m).numpy() - full).max() for m in (1, 4, 16)}
    assert error[16] < 0.1 * min(error[1], error[4])
    exact = F.nystrom_attention(q, k, v, 16, pinv_iterations=40).numpy()
    np.testing.assert_allclose(exact, full, atol=1e-10)


def test_nystrom_gradcheck():
    assert check_gradients(lambda q, k, v: F.nystrom_attention(q, k, v, 2), *_qkv(steps=4, lead=()))


def test_second_derivatives_of_linformer_and_nystrom():
    assert check_second_derivatives(F.linformer_attention, *_qkv(steps=3, d=2, lead=()), randn(2, 4, seed=3))
    assert check_second_derivatives(lambda q, k, v: F.nystrom_attention(q, k, v, 2, pinv_iterations=2),
                                    *_qkv(steps=4, d=2, lead=()))


# -- Reformer LSH attention ----------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rounds,buckets,chunk", [(1, 4, 2), (3, 4, 3), (2, 2, 6)])
def test_lsh_matches_torch_with_the_same_rotations(causal, rounds, buckets, chunk):
    qk, v = randn(2, 12, 4, seed=1), randn(2, 12, 3, seed=2)
    rotations = random_rotations(4, rounds, buckets, seed=3)

    def ours(qk, v):
        return F.lsh_attention(qk, v, rotations, chunk, causal)

    def theirs(qk, v):
        return lsh(qk, v, torch.tensor(rotations), chunk, causal)

    compare_with_torch(ours, theirs, qk, v, dtype=np.float64)


def test_lsh_buckets_are_the_argmax_of_the_rotated_vectors():
    x, rotations = randn(5, 3, seed=0), random_rotations(3, 2, 6, seed=1)
    rotated = np.einsum("td,drh->rth", x, rotations)
    expected = np.argmax(np.concatenate([rotated, -rotated], -1), -1)
    np.testing.assert_array_equal(F.lsh_buckets(x, rotations), expected)
    assert F.lsh_buckets(x, rotations).max() < 6


def test_lsh_with_one_bucket_is_full_shared_qk_attention_without_self():
    qk, v = _tensors(randn(2, 8, 4, seed=4), randn(2, 8, 3, seed=5))
    keys = qk.numpy() / np.linalg.norm(qk.numpy(), axis=-1, keepdims=True)
    scores = qk.numpy() @ keys.swapaxes(-1, -2) / 2.0
    scores[:, np.arange(8), np.arange(8)] = -1e5
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ v.numpy()
    one_bucket = np.zeros((4, 2, 0))
    for chunk in (4, 8):                         # two chunks that see each other, or one chunk
        np.testing.assert_allclose(F.lsh_attention(qk, v, one_bucket, chunk).numpy(), expected, rtol=1e-12)


def test_lsh_causal_first_position_attends_to_itself_only():
    qk, v = _tensors(randn(1, 6, 4, seed=6), randn(1, 6, 2, seed=7))
    out = F.lsh_attention(qk, v, random_rotations(4, 1, 2), 3, causal=True).numpy()
    np.testing.assert_allclose(out[0, 0], v.numpy()[0, 0], rtol=1e-12)


def test_lsh_zero_vectors_give_finite_outputs_and_gradients():
    qk = lamina.tensor(np.zeros((1, 4, 2)), dtype=np.float64, requires_grad=True)
    v = lamina.tensor(randn(1, 4, 2), dtype=np.float64)
    out = F.lsh_attention(qk, v, random_rotations(2, 1, 2), 2)
    out.sum().backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(qk.grad).all()


def test_lsh_gradcheck():
    rotations = random_rotations(3, 2, 4, seed=2)
    assert check_gradients(lambda qk, v: F.lsh_attention(qk, v, rotations, 2, causal=True),
                           randn(6, 3, seed=1), randn(6, 2, seed=3))


# -- errors -------------------------------------------------------------------------------
def test_errors_name_the_function_and_the_shapes():
    q, k, v = _tensors(*_qkv())
    with pytest.raises(ShapeError, match=r"linformer_attention: e must be .* T_max >= the 8 keys"):
        F.linformer_attention(q, k, v, randn(3, 5))
    with pytest.raises(ShapeError, match=r"nystrom_attention: num_landmarks 3 must divide the 8 queries"):
        F.nystrom_attention(q, k, v, 3)
    with pytest.raises(ShapeError, match=r"nystrom_pinv: expected square matrices .*\(2, 3\)"):
        F.nystrom_pinv(randn(2, 3))
    with pytest.raises(ShapeError, match=r"lsh_attention: chunk_size 3 must divide the sequence length 8"):
        F.lsh_attention(q, v, random_rotations(3, 1, 2), 3)
    with pytest.raises(ShapeError, match=r"lsh_buckets: rotations must be \(d, rounds, buckets / 2\) with d = 3"):
        F.lsh_attention(q, v, random_rotations(4, 1, 2), 4)
