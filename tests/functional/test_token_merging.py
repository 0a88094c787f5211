"""Bipartite soft matching, size-weighted merging and proportional attention (ToMe)."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, positive, randn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError


# class token, then alternating B (odd) and A (even) tokens: a_1 = token 2 is nearly b_0 = token 1,
# a_2 = token 4 is less close to b_1 = token 3
def f64(a):
    return lamina.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64)


HAND_METRIC = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 1.0], [0.5, 0.0, 1.0]]])


def torch_matching(metric, r, class_token=True):
    """A torch rewrite of the published reference: gather / scatter_reduce on the A and B sets."""
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    if class_token:
        scores[..., 0, :] = -torch.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x, mode="mean"):
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    return merge


def test_hand_made_metric_merges_the_closest_pair_by_weighted_average():
    x = randn(1, 5, 2, seed=1)
    merge, _ = F.bipartite_soft_matching(HAND_METRIC, 1)
    y, size = F.merge_wavg(merge, x)
    # unmerged A tokens [0, 4] then B tokens [1 + 2, 3]
    expected = np.stack([x[0, 0], x[0, 4], (x[0, 1] + x[0, 2]) / 2, x[0, 3]])[None]
    assert_close(y.numpy(), expected, 1e-6)
    assert size.numpy()[0, :, 0].tolist() == [1, 1, 2, 1]

    merge, _ = F.bipartite_soft_matching(HAND_METRIC, 2)
    sizes = np.array([[[1.0], [2.0], [3.0], [1.0], [4.0]]])
    y, size = F.merge_wavg(merge, x, sizes)
    expected = np.stack([x[0, 0], (2 * x[0, 1] + 3 * x[0, 2]) / 5, (x[0, 3] + 4 * x[0, 4]) / 5])[None]
    assert_close(y.numpy(), expected, 1e-6)
    assert size.numpy()[0, :, 0].tolist() == [1, 5, 5]
    assert size.numpy().sum() == sizes.sum()


def test_r_zero_is_the_identity_and_r_is_capped():
    x = f64(randn(2, 7, 3))
    merge, unmerge = F.bipartite_soft_matching(randn(2, 7, 4, seed=2), 0)
    assert merge(x) is x and unmerge(x) is x
    merge, _ = F.bipartite_soft_matching(randn(2, 7, 4, seed=2), 10)
    assert merge(x).shape == (2, 4, 3)  # at most (7 - 1) // 2 = 3 merges


def test_the_class_token_is_never_merged():
    metric = randn(3, 9, 4, seed=3)
    metric[:, 0] = metric[:, 1]              # the class token is b_0's twin, yet stays alone
    x = randn(3, 9, 2, seed=4)
    merge, _ = F.bipartite_soft_matching(metric, 4)
    y, size = F.merge_wavg(merge, x)
    assert_close(y.numpy()[:, 0], x[:, 0], 1e-6)
    assert np.all(size.numpy()[:, 0, 0] == 1)
    assert np.all(size.numpy().sum(axis=(1, 2)) == 9)


def test_merge_matches_a_torch_rewrite_of_the_reference_with_gradients():
    metric = randn(2, 11, 5, seed=5)
    merge, _ = F.bipartite_soft_matching(metric, 3)
    reference = torch_matching(torch.tensor(metric), 3)
    for mode in ("sum", "mean"):
        compare_with_torch(lambda x, mode=mode: merge(x, mode), lambda x, mode=mode: reference(x, mode),
                           randn(2, 11, 4, seed=6), dtype=np.float64)
    sizes = positive(2, 11, 1, seed=7)
    check_gradients(lambda x: F.merge_wavg(merge, x, sizes)[0], randn(2, 11, 4, seed=8))


def test_unmerge_restores_shapes_and_copies_merged_values_to_both_sources():
    metric = randn(2, 10, 3, seed=9)
    x = randn(2, 10, 3, seed=10)
    merge, unmerge = F.bipartite_soft_matching(metric, 3)
    back = unmerge(merge(f64(x))).numpy()
    assert back.shape == x.shape
    changed = ~np.isclose(back, x).all(axis=-1)
    assert changed.sum(axis=1).min() >= 4 and changed.sum(axis=1).max() <= 6  # 3 merges move 2 tokens each
    for n in range(2):
        # every token reads back either itself or the value shared by its merged group
        for value in np.unique(back[n].round(12), axis=0):
            group = np.flatnonzero(np.isclose(back[n], value).all(axis=-1))
            assert_close(value, x[n, group].mean(axis=0), 1e-9)
    assert back[:, 0].tolist() == x[:, 0].tolist()
    with pytest.raises(ShapeError, match="unmerge"):
        unmerge(x)


def test_proportional_attention_equals_attention_over_duplicated_tokens():
    sizes = np.array([[1, 3, 2, 1, 4], [2, 1, 1, 5, 1]])
    q, k, v = randn(2, 2, 3, 4, seed=11), randn(2, 2, 5, 4, seed=12), randn(2, 2, 5, 4, seed=13)
    y = F.proportional_attention(f64(q), f64(k), f64(v), sizes[..., None].astype(np.float64)).numpy()
    for n in range(2):
        copies = np.repeat(np.arange(5), sizes[n])
        plain = F.scaled_dot_product_attention(f64(q[n]), f64(k[n][:, copies]), f64(v[n][:, copies])).numpy()
        np.testing.assert_allclose(y[n], plain, rtol=1e-13, atol=1e-15)
    log_size = torch.tensor(np.log(sizes))[:, None, None, :]
    compare_with_torch(lambda q, k, v: F.proportional_attention(q, k, v, sizes[..., None]),
                       lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=log_size),
                       q, k, v, dtype=np.float64)
    check_gradients(lambda q, k, v: F.proportional_attention(q, k, v, sizes[..., None].astype(float)), q, k, v)


def test_errors_name_the_function():
    with pytest.raises(ShapeError, match="bipartite_soft_matching: metric"):
        F.bipartite_soft_matching(np.zeros((4, 3)), 1)
    merge, _ = F.bipartite_soft_matching(randn(1, 5, 2), 1)
    with pytest.raises(ShapeError, match="merge_wavg: size"):
        F.merge_wavg(merge, randn(1, 5, 2), np.ones((1, 4, 1)))
    with pytest.raises(ShapeError, match="proportional_attention: size"):
        F.proportional_attention(randn(1, 1, 2, 3), randn(1, 1, 4, 3), randn(1, 1, 4, 3), np.ones((1, 3, 1)))
    assert isinstance(merge(randn(1, 5, 2)), Tensor)
