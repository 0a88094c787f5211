import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.mixture_of_depths import MixtureOfDepths


class ResidualMLP(nn.Module):
    """y = x + tanh(x W1 + b1) W2, a residual block small enough to rewrite in torch."""

    def __init__(self, hidden):
        super().__init__()
        self.inner = nn.Dense(hidden, activation="tanh")
        self.outer = None
        self.hidden = hidden

    def build(self, input_shape):
        self.outer = nn.Dense(input_shape[-1])
        self.built = True

    def forward(self, x):
        return x + self.outer(self.inner(x))


NAMES = ["router_weight", "router_bias", "block.inner.weight", "block.inner.bias", "block.outer.weight",
         "block.outer.bias"]


def _layer(capacity, shape=(2, 6, 4)):
    lamina.set_default_dtype(np.float64)
    layer = MixtureOfDepths(ResidualMLP(5), capacity=capacity)
    layer(randn(*shape))
    return layer


def _torch_mod(k):
    def run(x, wr, br, w1, b1, w2, b2):
        logits = (x @ wr + br)[..., 0]
        chosen = torch.sort(torch.topk(logits, k, dim=1).indices, dim=1).values
        index = chosen[..., None].expand(-1, -1, x.shape[-1])
        selected = torch.gather(x, 1, index)
        update = torch.tanh(selected @ w1 + b1) @ w2 + b2
        weights = torch.sigmoid(torch.gather(logits, 1, chosen))[..., None]
        return x.scatter_add(1, index, weights * update)
    return run


@pytest.mark.parametrize("capacity, k", [(1.0, 6), (0.5, 3), (0.2, 2)])
def test_matches_a_torch_rewrite(capacity, k):
    layer = _layer(capacity)
    params = [randn(*p.shape, seed=s) for s, p in enumerate(_params(layer))]

    def ours(x, *p):
        return nn.functional_call(layer, dict(zip(NAMES, p)), x)

    x = randn(2, 6, 4, seed=9)
    compare_with_torch(ours, _torch_mod(k), x, *params, dtype=np.float64)
    assert layer.selection_mask.sum(axis=1).tolist() == [k, k]
    assert check_gradients(ours, x, *params)


def _params(layer):
    named = dict(layer.named_parameters())
    return [named[n] for n in NAMES]


def test_full_capacity_is_the_block_update_times_router_weights():
    layer = _layer(1.0)
    x = lamina.tensor(randn(2, 6, 4, seed=3))
    r = 1 / (1 + np.exp(-(x.numpy() @ layer.router_weight.numpy() + layer.router_bias.numpy())))
    block_out = layer.block(x).numpy()
    expected = x.numpy() + r * (block_out - x.numpy())
    assert np.array_equal(layer(x).numpy(), expected)


def test_unselected_tokens_pass_unchanged_and_top_k_is_per_sequence():
    layer = _layer(0.25, shape=(3, 8, 4))
    x = randn(3, 8, 4, seed=5) * 3
    y = layer(x).numpy()
    mask = layer.selection_mask
    assert mask.sum(axis=1).tolist() == [2, 2, 2]
    assert np.array_equal(y[~mask], x[~mask])
    assert not np.allclose(y[mask], x[mask])
    for row in range(3):
        best = np.sort(np.argsort(-layer.router_logits[row])[:2])
        assert np.flatnonzero(mask[row]).tolist() == best.tolist()


def test_errors():
    for bad in (0, 0.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=r"capacity must be a number in \(0, 1\]"):
            MixtureOfDepths(ResidualMLP(3), capacity=bad)
    layer = _layer(0.5)
    with pytest.raises(ShapeError, match=r"expects \(batch, tokens, 4\)"):
        layer(randn(2, 6, 3))


def test_wraps_a_causal_transformer_block():
    lamina.set_default_dtype(np.float64)
    block = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=0.0, causal=True)
    layer = MixtureOfDepths(block, capacity=0.5)
    x = randn(2, 6, 4, seed=2)
    y = layer(x)
    assert y.shape == (2, 6, 4)
    mask = layer.selection_mask
    assert np.array_equal(y.numpy()[~mask], x[~mask])
    y.sum().backward()
    assert layer.router_weight.grad is not None and np.abs(layer.router_weight.grad).sum() > 0
