"""AdditiveAttention (Bahdanau): against the same formula written in PyTorch, gradchecked,
masked, configured, and learning to point at the right step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import TOLERANCE, assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary


def _torch_additive(q, v, k, wq, wk, b, vec, mask=None):
    hidden = torch.tanh((q @ wq + b)[:, :, None, :] + (k @ wk)[:, None, :, :])
    scores = hidden @ vec
    if mask is not None:
        scores = scores.masked_fill(~torch.as_tensor(mask), -1e9)
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("separate_key", [False, True])
def test_matches_the_formula_in_torch(dtype, masked, separate_key):
    lamina.set_default_dtype(dtype)
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((2, 3, 5)).astype(dtype), rng.standard_normal((2, 4, 6)).astype(dtype)
    k = rng.standard_normal((2, 4, 7)).astype(dtype) if separate_key else v
    mask = rng.random((2, 3, 4)) > 0.3 if masked else None
    if masked:
        mask[:, :, 0] = True                                     # every query attends somewhere
    layer = nn.AdditiveAttention(8)
    tensors = [lamina.tensor(a, requires_grad=True, dtype=dtype) for a in ([q, v, k] if separate_key else [q, v])]
    layer(tensors)
    rng2 = np.random.default_rng(1)
    layer.bias.data = (0.1 * rng2.standard_normal(8)).astype(dtype)
    out = layer(tensors, mask=mask)
    up = rng2.standard_normal(out.shape).astype(dtype)
    out.backward(up)
    theirs = [torch.tensor(a, requires_grad=True) for a in ([q, v, k] if separate_key else [q, v])]
    weights = [torch.tensor(p.numpy(), requires_grad=True) for p in
               (layer.query_kernel, layer.key_kernel, layer.bias, layer.score_vector)]
    ref = _torch_additive(theirs[0], theirs[1], theirs[-1] if separate_key else theirs[1], *weights, mask=mask)
    (ref * torch.tensor(up)).sum().backward()
    rtol = TOLERANCE[dtype]
    assert_close(out.numpy(), ref.detach().numpy(), rtol, "output")
    for ours, other in zip(tensors, theirs):
        assert_close(ours.grad, other.grad.numpy(), rtol, "input gradient")
    for p, other in zip((layer.query_kernel, layer.key_kernel, layer.bias, layer.score_vector), weights):
        assert_close(p.grad, other.grad.numpy(), rtol, f"{p.shape} gradient")


def test_gradcheck_and_weights():
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(2)
    q, v = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 3, 4))
    layer = nn.AdditiveAttention(3)
    qt, vt = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (q, v))
    layer([qt, vt])
    assert lamina.gradcheck(lambda a, b, *_: layer([a, b]), qt, vt, *layer.parameters())
    mask = np.array([True, False, True])
    context, weights = layer([qt, vt], mask=mask, return_weights=True)
    assert weights.shape == (2, 2, 3) and np.allclose(weights.numpy().sum(-1), 1)
    assert (weights.numpy()[..., 1] == 0).all() and not weights.requires_grad
    assert np.allclose(context.numpy(), weights.numpy() @ v)


def test_config_errors_and_summary():
    layer = nn.AdditiveAttention(6, use_bias=False, name="att")
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert (again.units, again.use_bias, again.name) == (6, False, "att")
    q, v = lamina.tensor(np.zeros((2, 3, 5))), lamina.tensor(np.zeros((2, 4, 7)))
    layer([q, v])
    assert [p.shape for p in layer.parameters()] == [(5, 6), (7, 6), (6,)]
    with pytest.raises(lamina.ShapeError, match=r"att.*\(batch, time, 5\)"):
        layer([lamina.tensor(np.zeros((2, 3, 4))), v])
    with pytest.raises(lamina.ShapeError, match="does not broadcast to the scores"):
        layer([q, v], mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        layer([q, v], mask=np.ones((3, 4)))
    with pytest.raises(ValueError, match="units must be a positive int"):
        nn.AdditiveAttention(0)

    class Reader(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.AdditiveAttention(6)

        def forward(self, x):
            return self.attention([F.getitem(x, (slice(None), slice(0, 3))), x])

    row = summary(Reader(), (4, 7)).rows[0]
    assert row["macs"] == (3 * 7 + 4 * 7) * 6 + 3 * 4 * (6 + 7) and row["output_shape"] == [3, 7]


def test_learns_to_attend_to_the_step_its_query_names():
    """Each query is the one-hot code of a position; the context must be the value there."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(3)
    steps = 6
    layer = nn.AdditiveAttention(16)
    positions = np.eye(steps, dtype=np.float32)
    opt = None
    for _ in range(300):
        values = rng.standard_normal((32, steps, 1)).astype(np.float32)
        keys = np.concatenate([values, np.broadcast_to(positions, (32, steps, steps))], axis=-1)
        target = rng.integers(0, steps, 32)
        query = positions[target][:, None, :]
        out = layer([lamina.tensor(query), lamina.tensor(values), lamina.tensor(keys)])
        opt = opt or optim.Adam(layer, lr=0.03)
        cost = F.mean_squared_error(F.reshape(out, 32, 1), values[np.arange(32), target])
        opt.zero_grad()
        cost.backward()
        opt.step()
    assert cost.item() < 0.01
