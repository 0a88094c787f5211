import json
import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.nn.functional_call import functional_call

B, K, NODE, MSG, TIME, OUT, HEADS = 4, 3, 3, 2, 4, 5, 2
# row 0 full, row 1 partly filled, row 2 without any neighbour, row 3 one neighbour
MASK = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
PARAMS = ["query_kernel", "key_kernel", "value_kernel", "merge1_kernel", "merge1_bias", "merge2_kernel",
          "merge2_bias", "time_encoder.weight", "time_encoder.bias"]


def torch_time_encoding(t, weight, bias):
    return torch.cos(t[..., None] * weight + bias)


def torch_tgat(x, nx, msg, dt, q, k, v, w1, b1, w2, b2, tw, tb, mask=MASK, heads=HEADS):
    b, n = mask.shape
    c = q.shape[1] // heads
    query = torch.cat([x, torch_time_encoding(torch.zeros(b, dtype=x.dtype), tw, tb)], 1) @ q
    keys_in = torch.cat([nx, msg, torch_time_encoding(dt, tw, tb)], 2)
    key, value = (keys_in @ k).reshape(b, n, heads, c), (keys_in @ v).reshape(b, n, heads, c)
    scores = torch.einsum("bhc,bnhc->bnh", query.reshape(b, heads, c), key) / math.sqrt(c)
    valid = torch.tensor(mask)[:, :, None]
    alpha = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)
    alpha = torch.nan_to_num(alpha) * valid                          # no neighbour: zero message
    attended = torch.einsum("bnh,bnhc->bhc", alpha, value).reshape(b, heads * c)
    return torch.relu(torch.cat([attended, x], 1) @ w1 + b1) @ w2 + b2


def test_time_encoder_frequencies_and_values():
    enc = nn.TimeEncoder(6)
    expected = np.array([10.0 ** (-9 * j / 5) for j in range(6)])
    np.testing.assert_allclose(enc.weight.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(enc.bias.numpy(), 0.0)
    t = np.array([[0.0, 1.5, 30.0], [1e3, 2e5, 7.0]])
    weight, bias = randn(6, seed=1), randn(6, seed=2)
    compare_with_torch(lambda t, w, b: functional_call(enc.to(t.dtype), {"weight": w, "bias": b}, t),
                       torch_time_encoding, t, weight, bias, dtype=np.float64)
    assert check_gradients(lambda t, w, b: functional_call(enc.to(t.dtype), {"weight": w, "bias": b}, t),
                           t / 100, weight, bias)


def test_time_encoder_fixed_has_no_trainable_parameters():
    assert nn.TimeEncoder(4, learnable=False).parameters(trainable_only=True) == []
    assert len(nn.TimeEncoder(4).parameters(trainable_only=True)) == 2


def _arrays(layer):
    inputs = [randn(B, NODE, seed=1), randn(B, K, NODE, seed=2), randn(B, K, MSG, seed=3),
              np.abs(randn(B, K, seed=4)) * 3]
    params = [randn(*getattr_path(layer, name).shape, seed=10 + i, scale=0.7) for i, name in enumerate(PARAMS)]
    return inputs + params


def getattr_path(module, name):
    for part in name.split("."):
        module = getattr(module, part)
    return module


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_temporal_graph_attention_matches_torch(dtype):
    layer = nn.TemporalGraphAttention(NODE, MSG, TIME, OUT, heads=HEADS)

    def ours(x, nx, msg, dt, *params):
        layer.to(x.dtype)
        return functional_call(layer, dict(zip(PARAMS, params)), x, nx, msg, dt, MASK)

    arrays = _arrays(layer)
    out = compare_with_torch(ours, torch_tgat, *arrays, dtype=dtype, rtol=1e-4 if dtype == np.float32 else None)
    assert np.all(np.isfinite(out[0].numpy()))
    if dtype == np.float64:
        assert check_gradients(ours, *arrays)


def test_masked_neighbours_do_not_matter():
    layer = nn.TemporalGraphAttention(NODE, MSG, TIME, OUT, heads=HEADS)
    x, nx, msg, dt = (lamina.tensor(a.astype(np.float32)) for a in _arrays(layer)[:4])
    changed = nx.numpy().copy()
    changed[~MASK] += 100.0
    before = layer(x, nx, msg, dt, MASK).numpy()
    after = layer(x, lamina.tensor(changed), msg, dt, MASK).numpy()
    np.testing.assert_allclose(before, after, rtol=1e-6)
    changed[MASK] += 1.0
    assert not np.allclose(layer(x, lamina.tensor(changed), msg, dt, MASK).numpy()[MASK.any(1)],
                           before[MASK.any(1)])


def test_shape_errors_name_the_layer():
    layer = nn.TemporalGraphAttention(NODE, MSG, TIME, OUT)
    with pytest.raises(lamina.errors.ShapeError, match="TemporalGraphAttention"):
        layer(lamina.tensor(np.zeros((B, NODE + 1))), lamina.tensor(np.zeros((B, K, NODE))),
              lamina.tensor(np.zeros((B, K, MSG))), lamina.tensor(np.zeros((B, K))), MASK)


def test_configs_rebuild_the_layers():
    layer = nn.TemporalGraphAttention(3, 2, 4, 5, heads=2, learnable_time=False)
    twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
    twin.load_state_dict(layer.state_dict())
    rng = np.random.default_rng(0)
    inputs = [lamina.tensor(a.astype(np.float32)) for a in (rng.standard_normal((2, 3)), rng.standard_normal((2, 4, 3)),
                                                            rng.standard_normal((2, 4, 2)), rng.random((2, 4)))]
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    assert twin.get_config() == layer.get_config()
    assert np.array_equal(twin(*inputs, mask).numpy(), layer(*inputs, mask).numpy())
    encoder = nn.TimeEncoder(6, learnable=False)
    assert nn.layer_from_config(nn.layer_to_config(encoder)).get_config() == encoder.get_config()
