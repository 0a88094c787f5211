"""Linear attention and FAVOR+: values and gradients against PyTorch's quadratic forms, the
chunked causal prefix sums equal to the masked (T, T) form for every chunk size, finite
differences and second derivatives, the random features' estimate of softmax attention
improving with their number, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from torch_linear_sequence import elu_plus_one, favor, performer, quadratic_linear_attention


def _qkv(seed: int = 0, steps: int = 7):
    return [randn(2, 2, steps, 3, seed=seed + i) for i in range(3)]


def _tensors(*arrays):
    return [lamina.tensor(a, dtype=np.float64) for a in arrays]


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_the_quadratic_form_in_torch(causal, chunk_size):
    def ours(q, k, v):
        return F.linear_attention(q, k, v, causal=causal, chunk_size=chunk_size)

    def theirs(q, k, v):
        return quadratic_linear_attention(q, k, v, elu_plus_one, causal)

    compare_with_torch(ours, theirs, *_qkv(), dtype=np.float64)
    compare_with_torch(ours, theirs, *_qkv(), dtype=np.float32, rtol=1e-5)


def test_other_feature_maps_and_cross_attention_lengths():
    q, k, v = randn(2, 4, 3), randn(2, 6, 3, seed=1), randn(2, 6, 5, seed=2)
    compare_with_torch(lambda q, k, v: F.linear_attention(q, k, v, feature_map="relu"),
                       lambda q, k, v: quadratic_linear_attention(q, k, v, torch.relu, False),
                       q, k, np.abs(v), dtype=np.float64)
    square = lambda x: x * x   # noqa: E731 - a callable feature map
    compare_with_torch(lambda q, k, v: F.linear_attention(q, k, v, feature_map=square),
                       lambda q, k, v: quadratic_linear_attention(q, k, v, square, False),
                       q, k, v, dtype=np.float64)


def test_causal_outputs_do_not_depend_on_later_steps():
    q, k, v = _tensors(*_qkv())
    full = F.linear_attention(q, k, v, causal=True, chunk_size=2).numpy()
    short = F.linear_attention(q[:, :, :4], k[:, :, :4], v[:, :, :4], causal=True, chunk_size=3).numpy()
    np.testing.assert_allclose(full[:, :, :4], short, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_and_second_derivatives(causal):
    q, k, v = _qkv(steps=5)

    def fn(q, k, v):
        return F.linear_attention(q, k, v, causal=causal, chunk_size=2)

    assert check_gradients(fn, q, k, v)
    assert check_second_derivatives(fn, q * 0.5, k * 0.5, v)


@pytest.mark.parametrize("causal", [False, True])
def test_favor_features_and_performer_match_torch(causal):
    w = F.orthogonal_random_features(8, 3, seed=1, dtype=np.float64)
    compare_with_torch(lambda x: F.favor_features(x, w), lambda x: favor(x, torch.tensor(w)),
                       randn(2, 5, 3, scale=0.5), dtype=np.float64)
    compare_with_torch(lambda q, k, v: F.performer_attention(q, k, v, w, causal=causal, chunk_size=2),
                       lambda q, k, v: performer(q, k, v, torch.tensor(w), causal), *_qkv(), dtype=np.float64)
    assert check_gradients(lambda q, k, v: F.performer_attention(q, k, v, w, causal=True, chunk_size=3),
                           *_qkv(steps=4))


def test_orthogonal_features_are_orthogonal_blocks_with_gaussian_norms_and_follow_the_seed():
    w = F.orthogonal_random_features(10, 4, seed=3, dtype=np.float64)
    assert w.shape == (10, 4)
    block = w[:4] / np.linalg.norm(w[:4], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(4), atol=1e-12)
    np.testing.assert_array_equal(w, F.orthogonal_random_features(10, 4, seed=3, dtype=np.float64))
    assert not np.allclose(w, F.orthogonal_random_features(10, 4, seed=4, dtype=np.float64))
    first_rows = np.stack([F.orthogonal_random_features(2, 3, seed=s, dtype=np.float64)[0] for s in range(400)])
    directions = first_rows / np.linalg.norm(first_rows, axis=1, keepdims=True)
    assert np.abs(directions.mean(0)).max() < 0.1          # uniform directions (Haar), no preferred sign
    many = F.orthogonal_random_features(4000, 4, seed=0, dtype=np.float64)
    np.testing.assert_allclose((many ** 2).sum(1).mean(), 4.0, rtol=0.05)   # rows N(0, I): E|w|^2 = d


def test_performer_estimate_converges_to_softmax_attention():
    arrays = [randn(1, 2, 16, 8, seed=10 + i) * 0.7 for i in range(3)]
    q, k, v = _tensors(*arrays)
    exact = torch.softmax(torch.tensor(arrays[0]) @ torch.tensor(arrays[1]).transpose(-1, -2) / np.sqrt(8), -1)
    exact = exact @ torch.tensor(arrays[2])
    errors = []
    for features in (8, 64, 512):
        err = [np.abs(F.performer_attention(q, k, v, F.orthogonal_random_features(features, 8, seed=s,
                                                                                   dtype=np.float64)).numpy()
                      - exact.numpy()).mean() for s in range(5)]
        errors.append(np.mean(err))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0] and errors[2] < 0.03


def test_errors_name_the_function_and_shapes():
    q, k, v = _tensors(*_qkv())
    with pytest.raises(ShapeError, match=r"linear_attention: .*\(2, 2, 7, 3\)"):
        F.linear_attention(q, k[..., :2], v)
    with pytest.raises(ShapeError, match="linear_attention: causal attention needs as many queries"):
        F.linear_attention(q[:, :, :3], k, v, causal=True)
    with pytest.raises(ValueError, match="linear_attention: feature_map must be"):
        F.linear_attention(q, k, v, feature_map="softmax")
    with pytest.raises(ValueError, match="linear_attention: chunk_size"):
        F.linear_attention(q, k, v, causal=True, chunk_size=0)
    with pytest.raises(ShapeError, match=r"favor_features: .*\(5, 2\)"):
        F.favor_features(q, np.ones((5, 2)))
    with pytest.raises(ValueError, match="orthogonal_random_features: num_features"):
        F.orthogonal_random_features(0, 3)
