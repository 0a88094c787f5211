"""scaled_dot_product_attention with a float mask that is learned (requires grad): the mask's
gradient, first and second order, against torch; with grouped-query heads; gradient checks;
the blockwise path's clear refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import functional as F


def _ours(q, k, v, bias, **options):
    return F.scaled_dot_product_attention(q, k, v, mask=bias, **options)


def _theirs(q, k, v, bias, **options):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, **options)


@pytest.mark.parametrize("bias_shape", [(3, 4), (2, 1, 3, 4), (1, 4), (4,)],
                         ids=["per_pair", "per_batch", "row", "keys"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_learned_float_mask_gets_torchs_gradient(bias_shape, dtype):
    q, k, v = randn(2, 2, 3, 5, seed=1), randn(2, 2, 4, 5, seed=2), randn(2, 2, 4, 3, seed=3)
    compare_with_torch(_ours, _theirs, q, k, v, randn(*bias_shape, seed=4), dtype=dtype)


def test_a_learned_mask_with_a_boolean_causal_mask_and_a_scale():
    q, k, v, bias = randn(2, 4, 5, seed=5), randn(2, 4, 5, seed=6), randn(2, 4, 3, seed=7), randn(4, 4, seed=8)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()      # torch takes no mask with is_causal: add it as -inf

    def theirs(q, k, v, bias):
        return _theirs(q, k, v, bias.masked_fill(~causal, float("-inf")), scale=0.3)

    compare_with_torch(lambda *a: _ours(*a, causal=True, scale=0.3), theirs, q, k, v, bias, dtype=np.float64)


def test_a_learned_mask_in_grouped_query_attention():
    q, k, v = randn(2, 4, 3, 6, seed=9), randn(2, 2, 5, 6, seed=10), randn(2, 2, 5, 6, seed=11)
    for bias in (randn(4, 3, 5, seed=12), randn(3, 5, seed=13)):
        compare_with_torch(lambda *a: _ours(*a, enable_gqa=True), lambda *a: _theirs(*a, enable_gqa=True),
                           q, k, v, bias, dtype=np.float64)


def test_second_derivatives_through_a_learned_mask_match_torch():
    q, k, v, bias = randn(2, 3, 4, seed=14), randn(2, 5, 4, seed=15), randn(2, 5, 2, seed=16), randn(3, 5, seed=17)
    compare_double_backward_with_torch(_ours, _theirs, q, k, v, bias, rtol=1e-8)


def test_gradcheck_of_the_mask():
    q, k, v, bias = randn(2, 3, 4, seed=18), randn(2, 3, 4, seed=19), randn(2, 3, 2, seed=20), randn(3, 3, seed=21)
    assert check_gradients(_ours, q, k, v, bias)


def test_a_constant_float_mask_stays_a_constant():
    q, k, v = (lamina.tensor(randn(1, 2, 3, seed=s), requires_grad=True) for s in (22, 23, 24))
    bias = lamina.tensor(randn(2, 2, seed=25))
    F.scaled_dot_product_attention(q, k, v, mask=bias).sum().backward()
    assert bias.grad is None and q._ctx is None and q.grad is not None


def test_the_blockwise_path_refuses_a_learned_mask():
    q = lamina.tensor(randn(1, 4, 3, seed=26), requires_grad=True)
    bias = lamina.tensor(randn(4, 4, seed=27), requires_grad=True)
    with pytest.raises(ValueError, match=r"block_size=2.*float mask \(shape \(4, 4\)\).*requires grad.*None"):
        F.scaled_dot_product_attention(q, q, q, mask=bias, block_size=2)


@pytest.mark.parametrize("block_size", [None, 2])
@pytest.mark.parametrize("shapes", [((1, 2, 4), (1, 0, 4), (1, 0, 4)), ((1, 0, 4), (1, 3, 4), (1, 3, 4)),
                                    ((1, 2, 0), (1, 2, 0), (1, 2, 3))], ids=["no_keys", "no_queries", "no_features"])
def test_empty_axes_give_torchs_values_and_gradients(shapes, block_size):
    arrays = [randn(*shape, seed=i) for i, shape in enumerate(shapes)]
    compare_with_torch(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, block_size=block_size),
                       torch.nn.functional.scaled_dot_product_attention, *arrays, dtype=np.float64)


def test_torch_keyword_names_are_accepted():
    q, k, v = randn(2, 2, 5, 4, seed=40), randn(2, 2, 6, 4, seed=41), randn(2, 2, 6, 3, seed=42)
    mask = np.random.default_rng(43).random((5, 6)) > 0.4
    mask[:, 0] = True
    compare_with_torch(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=lamina.tensor(mask),
                                                                      dropout_p=0.0),
                       lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
                           a, b, c, attn_mask=torch.tensor(mask), dropout_p=0.0),
                       q, k, v, dtype=np.float64, rtol=1e-10)
    compare_with_torch(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                       lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=True),
                       q, k, v, dtype=np.float64, rtol=1e-10)
    with pytest.raises(TypeError, match="got both causal= and is_causal="):
        F.scaled_dot_product_attention(lamina.tensor(q), lamina.tensor(k), lamina.tensor(v), causal=True,
                                       is_causal=True)
