"""PyTorch references of the delta rule, the gated delta rule and gated linear attention,
written from the papers' recurrent forms with plain loops over the steps (the state as the
papers' d_v x d_k matrix: S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,
o_t = S_t q_t), and of the DeltaNet, Gated DeltaNet and GLA layers built on them."""

from __future__ import annotations

import torch
import torch.nn.functional as tF

from torch_linear_sequence import heads, linear, merged


def delta_rule_loop(q, k, v, beta, log_alpha=None, scale=1.0, state=None):
    """q, k (N, H, T, d_k), v (N, H, T, d_v), beta and log_alpha (N, H, T), state (N, H, d_v, d_k).
    Returns the outputs (N, H, T, d_v) and the last state (N, H, d_v, d_k)."""
    n, h, steps, d_k = q.shape
    s = torch.zeros(n, h, v.shape[-1], d_k, dtype=q.dtype) if state is None else state
    eye = torch.eye(d_k, dtype=q.dtype)
    outputs = []
    for t in range(steps):
        kt, vt, bt = k[:, :, t], v[:, :, t], beta[:, :, t, None, None]
        alpha = 1.0 if log_alpha is None else torch.exp(log_alpha[:, :, t, None, None])
        erase = eye - bt * kt[..., :, None] * kt[..., None, :]
        s = alpha * s @ erase + bt * vt[..., :, None] * kt[..., None, :]
        outputs.append(s @ (scale * q[:, :, t, :, None]))
    return torch.cat(outputs, dim=-1).transpose(-1, -2), s


def gla_loop(q, k, v, log_alpha, scale=1.0, state=None):
    """S_t = S_{t-1} diag(alpha_t) + v_t k_t^T, o_t = S_t q_t with S (N, H, d_v, d_k)."""
    n, h, steps, d_k = q.shape
    s = torch.zeros(n, h, v.shape[-1], d_k, dtype=q.dtype) if state is None else state
    outputs = []
    for t in range(steps):
        s = s * torch.exp(log_alpha[:, :, t, None, :]) + v[:, :, t, :, None] * k[:, :, t, None, :]
        outputs.append(s @ (scale * q[:, :, t, :, None]))
    return torch.cat(outputs, dim=-1).transpose(-1, -2), s


def short_conv(x, weight):
    """Causal depthwise convolution of x (N, T, C) with weight (C, K), by torch's conv1d."""
    size = weight.shape[1]
    padded = tF.pad(x.transpose(1, 2), (size - 1, 0))
    return tF.conv1d(padded, weight[:, None, :], groups=x.shape[-1]).transpose(1, 2)


def _qkv(x, params, use_short_conv, activate):
    qkv = torch.cat([linear(x, params, name) for name in ("q_proj", "k_proj", "v_proj")], dim=-1)
    if use_short_conv:
        qkv = short_conv(qkv, params["conv_weight"])
    return tF.silu(qkv) if use_short_conv or activate else qkv


def _output(o, x, params, use_gate, eps):
    y = merged(tF.rms_norm(o, (o.shape[-1],), params["norm_weight"], eps))
    if use_gate:
        y = y * tF.silu(linear(x, params, "g_proj"))
    return linear(y, params, "out_proj")


def delta_net_layer(num_heads, use_short_conv=True, use_gate=False, gated=False, eps=1e-5):
    """DeltaNet (``gated``: Gated DeltaNet, whose gate is always on) as reference(x, params)."""
    def reference(x, params):
        qkv = _qkv(x, params, use_short_conv, activate=True)
        q, k, v = (heads(part, num_heads) for part in qkv.chunk(3, dim=-1))
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
        beta = torch.sigmoid(linear(x, params, "b_proj")).transpose(1, 2)
        log_alpha = None
        if gated:
            rate = tF.softplus(linear(x, params, "a_proj") + params["dt_bias"])
            log_alpha = (-torch.exp(params["A_log"]) * rate).transpose(1, 2)
        o, _ = delta_rule_loop(q, k, v, beta, log_alpha, q.shape[-1] ** -0.5)
        return _output(o, x, params, use_gate or gated, eps)
    return reference


def gla_layer(num_heads, normalizer=16.0, use_short_conv=False, eps=1e-5):
    def reference(x, params):
        qkv = _qkv(x, params, use_short_conv, activate=False)
        q, k, v = (heads(part, num_heads) for part in qkv.chunk(3, dim=-1))
        logits = linear(linear(x, params, "gate_down"), params, "gate_up")
        log_alpha = heads(tF.logsigmoid(logits) / normalizer, num_heads)
        o, _ = gla_loop(q, k, v, log_alpha, q.shape[-1] ** -0.5)
        return _output(o, x, params, True, eps)
    return reference
