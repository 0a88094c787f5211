"""PyTorch references of the linear-time sequence layers, written from the papers' formulas in
their plainest form (quadratic masks, loops over the steps), and a comparison of a lamina layer
with one of them: outputs, input and parameter gradients."""

from __future__ import annotations

import math

import numpy as np
import torch

import lamina
from helpers import assert_close, randn


def compare_layer_with_torch(layer, reference, x: np.ndarray, rtol: float = 1e-10, **call) -> dict:
    """Run the float64 ``layer`` and ``reference(x, params)`` (params: the layer's parameters
    as torch tensors, by name) on ``x``; compare the outputs, then the gradients of the input
    and of every parameter for one random upstream gradient. Returns the torch parameters."""
    ours_x = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(ours_x, **call)
    params = {name: torch.tensor(np.asarray(p.data), requires_grad=True) for name, p in layer.named_parameters()}
    theirs_x = torch.tensor(x, requires_grad=True)
    expected = reference(theirs_x, params)
    assert_close(out.numpy(), expected.detach().numpy(), rtol, "output")
    upstream = randn(*out.shape, seed=7)
    (out * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(ours_x.grad, theirs_x.grad.numpy(), rtol, "input gradient")
    for name, p in layer.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), rtol, f"gradient of {name}")
    return params


def linear(x, params, name):
    out = x @ params[f"{name}.weight"]
    return out + params[f"{name}.bias"] if f"{name}.bias" in params else out


def heads(x, h):
    n, t, e = x.shape
    return x.reshape(n, t, h, e // h).transpose(1, 2)


def merged(x):
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def quadratic_linear_attention(q, k, v, phi, causal, eps=1e-6):
    """sum_s phi(q_t).phi(k_s) v_s / (sum_s phi(q_t).phi(k_s) + eps) with the (T, T) weights."""
    weights = phi(q) @ phi(k).transpose(-1, -2)
    if causal:
        weights = weights * torch.tril(torch.ones(weights.shape[-2:], dtype=weights.dtype))
    return (weights @ v) / (weights.sum(-1, keepdim=True) + eps)


def elu_plus_one(x):
    return torch.nn.functional.elu(x) + 1


def favor(x, w, offset=None):
    logits = x @ w.T - 0.5 * (x * x).sum(-1, keepdim=True)
    if offset is not None:
        logits = logits - offset
    return torch.exp(logits) / math.sqrt(w.shape[0])


def performer(q, k, v, w, causal, eps=1e-6):
    root = q.shape[-1] ** -0.25
    q, k = q * root, k * root
    fq = favor(q, w, (q @ w.T).amax(-1, keepdim=True))
    if causal:
        # the keys' offset for query t: the largest key logit up to step t
        seen = torch.cummax((k @ w.T).amax(-1), dim=-1).values[..., None]
        weights = (fq * torch.exp(-seen)) @ favor(k, w).transpose(-1, -2)
        weights = weights * torch.tril(torch.ones(weights.shape[-2:], dtype=weights.dtype))
    else:
        weights = fq @ favor(k, w, (k @ w.T).amax((-2, -1), keepdim=True)).transpose(-1, -2)
    return (weights @ v) / (weights.sum(-1, keepdim=True) + eps)


def kernel_attention_layer(num_heads, attend):
    def reference(x, params):
        q, k, v = (heads(linear(x, params, name), num_heads) for name in ("q_proj", "k_proj", "v_proj"))
        return linear(merged(attend(q, k, v)), params, "out_proj")
    return reference


def rotate(x, offset=0, base=10000.0):
    """RoPE with the rotate-half pairing over (..., T, d)."""
    t, d = x.shape[-2:]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = (offset + torch.arange(t, dtype=torch.float64))[:, None] * theta
    cos, sin = torch.cos(angles), torch.sin(angles)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def retention_layer(num_heads, eps=1e-6):
    """Multi-scale retention in the parallel form: (Q K^T * D) V, group norm, swish gate."""
    def reference(x, params):
        steps = x.shape[1]
        q = rotate(heads(linear(x, params, "q_proj"), num_heads))
        k = rotate(heads(linear(x, params, "k_proj"), num_heads))
        k = k / math.sqrt(k.shape[-1])
        v = heads(linear(x, params, "v_proj"), num_heads)
        gamma = 1 - 2.0 ** (-5.0 - torch.arange(num_heads, dtype=torch.float64))
        n, m = torch.arange(steps)[:, None], torch.arange(steps)[None, :]
        decay = torch.where(n >= m, gamma[:, None, None] ** (n - m).clamp(min=0), torch.zeros(()))
        y = (q @ k.transpose(-1, -2) * decay) @ v
        y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + eps)
        y = merged(y) * params["norm_weight"] + params["norm_bias"]
        return linear(torch.nn.functional.silu(linear(x, params, "g_proj")) * y, params, "out_proj")
    return reference


def shift(x):
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


def wkv_by_definition(time_decay, time_first, k, v):
    """wkv_t straight from the sums over i <= t (no stabilisation: small inputs only)."""
    w = torch.exp(time_decay)
    outputs = []
    for t in range(k.shape[1]):
        gaps = torch.arange(t - 1, -1, -1, dtype=k.dtype)[:, None]
        weights = torch.exp(k[:, :t] - gaps * w)
        now = torch.exp(time_first + k[:, t])
        outputs.append(((weights * v[:, :t]).sum(1) + now * v[:, t]) / (weights.sum(1) + now))
    return torch.stack(outputs, dim=1)


def time_mix_layer(x, params):
    previous = shift(x)

    def mix(name):
        ratio = params[f"time_mix_{name}"]
        return x * ratio + previous * (1 - ratio)

    k, v = linear(mix("k"), params, "key"), linear(mix("v"), params, "value")
    r = torch.sigmoid(linear(mix("r"), params, "receptance"))
    return linear(r * wkv_by_definition(params["time_decay"], params["time_first"], k, v), params, "output")


def channel_mix_layer(x, params):
    previous = shift(x)

    def mix(name):
        ratio = params[f"time_mix_{name}"]
        return x * ratio + previous * (1 - ratio)

    hidden = torch.relu(linear(mix("k"), params, "key")) ** 2
    return torch.sigmoid(linear(mix("r"), params, "receptance")) * linear(hidden, params, "value")
