"""RG-LRU and Griffin's recurrent block: against float64 torch loops written from the paper's
formulas (outputs, input and every parameter gradient), float64 gradient checks, the scan
against step-by-step updates, causality, the starting range of a^c and the input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_layer_with_torch, perturb_parameters, randn
from lamina import nn
from lamina.errors import ShapeError


# -- torch rewrites of the published formulas --------------------------------------------------
def _block_diagonal(x, weight, bias):
    """W x + b with W = diag(weight[0], weight[1], ...) acting on consecutive feature blocks."""
    blocks = x.reshape(*x.shape[:-1], weight.shape[0], weight.shape[1])
    return torch.einsum("...bi,bij->...bj", blocks, weight).reshape(x.shape) + bias


def torch_rglru(x, wa, ba, wx, bx, lam, c=8.0, h=None):
    """The loop h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t), a_t = sigma(Lambda)^(c r_t)."""
    r, i = torch.sigmoid(_block_diagonal(x, wa, ba)), torch.sigmoid(_block_diagonal(x, wx, bx))
    a = torch.sigmoid(lam) ** (c * r)
    h = torch.zeros_like(x[:, 0]) if h is None else h
    states = []
    for t in range(x.shape[1]):
        h = a[:, t] * h + torch.sqrt(1 - a[:, t] ** 2) * (i[:, t] * x[:, t])
        states.append(h)
    return torch.stack(states, dim=1)


def torch_recurrent_block(x, wy, by, wx, bx, conv_w, conv_b, wa, ba, wg, bg, lam, wo, bo):
    """W_out (gelu_tanh(W_y x) * RGLRU(causal_conv(W_x x)))."""
    y = torch.nn.functional.gelu(x @ wy + by, approximate="tanh")
    u = x @ wx + bx
    k = conv_w.shape[0]
    padded = torch.cat([torch.zeros(u.shape[0], k - 1, u.shape[2], dtype=u.dtype), u], dim=1)
    conv = sum(padded[:, i:i + u.shape[1]] * conv_w[i] for i in range(k)) + conv_b
    return (torch_rglru(conv, wa, ba, wg, bg, lam) * y) @ wo + bo


def _rglru_params(layer):
    return [layer.gate_a_weight, layer.gate_a_bias, layer.gate_x_weight, layer.gate_x_bias, layer.a_param]


def test_rglru_matches_the_torch_loop(float64):
    layer = nn.RGLRU(6, num_blocks=2)
    perturb_parameters(layer, scale=0.3)
    compare_layer_with_torch(layer, _rglru_params(layer), torch_rglru, randn(2, 7, 6, seed=1))


def test_rglru_continues_from_a_state_like_the_torch_loop(float64):
    layer = nn.RGLRU(4, num_blocks=1)
    x, h0 = randn(2, 5, 4, seed=2), randn(2, 4, seed=3)
    ours = layer(x, state=h0).numpy()
    theirs = torch_rglru(*(torch.tensor(a) for a in (x, *(p.numpy() for p in _rglru_params(layer)))),
                         h=torch.tensor(h0))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_rglru_gradients(float64):
    layer = nn.RGLRU(4, num_blocks=2)
    perturb_parameters(layer, scale=0.3)
    assert check_gradients(lambda x, h: layer(x, state=h), randn(2, 4, 4, seed=4), randn(2, 4, seed=5))
    x = lamina.tensor(randn(2, 3, 4, seed=6))              # the parameters themselves are perturbed
    assert lamina.gradcheck(lambda *params: layer(x), *_rglru_params(layer))


def test_rglru_scan_equals_step_by_step(float64):
    layer = nn.RGLRU(6, num_blocks=3)
    perturb_parameters(layer, scale=0.3)
    x = randn(3, 9, 6, seed=7)
    full, last = layer(x, return_state=True)
    state, steps = None, []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        steps.append(y.numpy())
    np.testing.assert_allclose(np.stack(steps, axis=1), full.numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(state.numpy(), last.numpy(), rtol=1e-11, atol=1e-13)


def test_rglru_gradients_stay_finite_when_a_gate_closes():
    layer = nn.RGLRU(2)
    layer.gate_a_bias.data = np.array([-200.0, 0.0], dtype=layer.gate_a_bias.dtype)   # r = 0: a_t = 1
    x = lamina.tensor(randn(1, 3, 2, seed=11), requires_grad=True)
    layer(x).sum().backward()
    assert all(np.isfinite(g).all() for g in (x.grad, *(p.grad for p in _rglru_params(layer))))


def test_rglru_starts_with_a_power_c_in_the_published_range():
    layer = nn.RGLRU(512)
    a = 1 / (1 + np.exp(-layer.a_param.numpy().astype(np.float64)))
    ac = a ** 8
    assert 0.9 - 1e-5 <= ac.min() and ac.max() <= 0.999 + 1e-5
    assert abs(ac.mean() - 0.9495) < 0.01          # uniform on [0.9, 0.999]
    np.testing.assert_array_equal(layer.gate_a_bias.numpy(), 0.0)


def test_recurrent_block_matches_the_torch_rewrite(float64):
    block = nn.GriffinRecurrentBlock(4, lru_width=6, num_blocks=2)
    x = randn(2, 6, 4, seed=8)
    block(x)
    perturb_parameters(block, scale=0.3)
    params = [block.linear_y.weight, block.linear_y.bias, block.linear_x.weight, block.linear_x.bias,
              block.conv_weight, block.conv_bias, *_rglru_params(block.rg_lru)[:4], block.rg_lru.a_param,
              block.linear_out.weight, block.linear_out.bias]
    compare_layer_with_torch(block, params, torch_recurrent_block, x)


def test_recurrent_block_gradients(float64):
    block = nn.GriffinRecurrentBlock(3, lru_width=4, num_blocks=2, conv_width=3)
    block(randn(1, 2, 3))
    perturb_parameters(block, scale=0.3)
    assert check_gradients(block, randn(2, 5, 3, seed=9))


def test_recurrent_block_is_causal_and_its_cache_continues_the_sequence(float64):
    block = nn.GriffinRecurrentBlock(4, num_blocks=2)
    x = randn(2, 8, 4, seed=10)
    full = block(x).numpy()
    changed = x.copy()
    changed[:, 5] += 1.0
    out = block(changed).numpy()
    np.testing.assert_array_equal(out[:, :5], full[:, :5])
    assert np.abs(out[:, 5:] - full[:, 5:]).min() > 0
    pieces, cache = [], None
    for start, stop in ((0, 2), (2, 3), (3, 8)):        # shorter and longer than the conv window
        y, cache = block(x[:, start:stop], cache=cache, return_cache=True)
        pieces.append(y.numpy())
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-11, atol=1e-13)


def test_bad_inputs_name_the_layer_and_shapes():
    layer = nn.RGLRU(4, num_blocks=2)
    with pytest.raises(ShapeError, match=r"RGLRU.*\(2, 3, 5\).*\(N, T, 4\)"):
        layer(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ShapeError, match=r"state has shape \(2, 3\).*\(2, 4\)"):
        layer(np.zeros((2, 3, 4), np.float32), state=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="RGLRU: width 5 is not divisible by num_blocks 2"):
        nn.RGLRU(5, num_blocks=2)
    block = nn.GriffinRecurrentBlock(4)
    with pytest.raises(ShapeError, match="cache holds shapes"):
        block(np.zeros((1, 2, 4), np.float32), cache=(np.zeros((1, 2, 4)), np.zeros((1, 4))))
