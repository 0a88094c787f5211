"""Torch re-implementations of the set layers and models, written from the papers and the
authors' reference code, reading the weights from a dict ``p`` in lamina's names and layouts
(Dense weights (in, out): y = x @ W + b)."""

import math

import numpy as np
import torch
import torch.nn.functional as TF

import lamina


def linear(p, name, x):
    y = x @ p[f"{name}.weight"]
    return y + p[f"{name}.bias"] if f"{name}.bias" in p else y


def layer_norm(p, name, x):
    return TF.layer_norm(x, (x.shape[-1],), p[f"{name}.weight"], p[f"{name}.bias"], 1e-5)


def pool(x, kind, mask=None):
    """sum, mean or max over the elements (axis 1), the padding (mask False) left out."""
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool)
    keep = mask[:, :, None]
    if kind == "max":
        return x.masked_fill(~keep, -math.inf).amax(dim=1)
    total = (x * keep.to(x.dtype)).sum(dim=1)
    return total if kind == "sum" else total / keep.sum(dim=1).to(x.dtype)


def perm_equivariant(p, prefix, x, kind, mask=None):
    """x Lambda + b - pool(x) Gamma."""
    pooled = pool(x, kind, mask)[:, None, :]
    return x @ p[f"{prefix}lambda_weight"] + p[f"{prefix}bias"] - pooled @ p[f"{prefix}gamma_weight"]


def mab(p, prefix, x, y, heads, ln, mask=None):
    """The reference MAB: heads stacked on the batch axis, scores over sqrt(dim_V), the
    projected queries as the residual, rFF = relu(Linear)."""
    q = linear(p, f"{prefix}fc_q", x)
    k, v = linear(p, f"{prefix}fc_k", y), linear(p, f"{prefix}fc_v", y)
    dim = q.shape[-1]
    split = dim // heads
    q_, k_, v_ = (torch.cat(t.split(split, 2), 0) for t in (q, k, v))
    scores = q_.bmm(k_.transpose(1, 2)) / math.sqrt(dim)
    if mask is not None:
        scores = scores.masked_fill(~mask.repeat(heads, 1)[:, None, :], -math.inf)
    o = torch.cat((q_ + torch.softmax(scores, 2).bmm(v_)).split(q.size(0), 0), 2)
    if ln:
        o = layer_norm(p, f"{prefix}ln0", o)
    o = o + torch.relu(linear(p, f"{prefix}fc_o", o))
    return layer_norm(p, f"{prefix}ln1", o) if ln else o


def sab(p, prefix, x, heads, ln, mask=None):
    return mab(p, f"{prefix}mab.", x, x, heads, ln, mask)


def isab(p, prefix, x, heads, ln, mask=None):
    points = p[f"{prefix}inducing_points"].repeat(x.shape[0], 1, 1)
    h = mab(p, f"{prefix}mab0.", points, x, heads, ln, mask)
    return mab(p, f"{prefix}mab1.", x, h, heads, ln)


def pma(p, prefix, x, heads, ln, mask=None):
    return mab(p, f"{prefix}mab.", p[f"{prefix}seeds"].repeat(x.shape[0], 1, 1), x, heads, ln, mask)


def gru_cell(p, prefix, x, h):
    """torch.nn.GRUCell's step with lamina's (D, 3H) kernels, gates r, z, n."""
    gi = x @ p[f"{prefix}kernel"] + p[f"{prefix}bias"]
    gh = h @ p[f"{prefix}recurrent_kernel"] + p[f"{prefix}recurrent_bias"]
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def slot_attention(p, x, slots, iters, eps=1e-8, mask=None):
    """Algorithm 1 of Locatello et al., line by line."""
    batch, k_slots, dim = slots.shape
    x = layer_norm(p, "norm_inputs", x)
    k, v = x @ p["project_k.weight"], x @ p["project_v.weight"]
    for _ in range(iters):
        previous = slots
        q = layer_norm(p, "norm_slots", slots) @ p["project_q.weight"] * dim ** -0.5
        attn = torch.softmax(torch.einsum("bnd,bkd->bnk", k, q), dim=-1) + eps
        if mask is not None:
            attn = attn * mask[:, :, None].to(attn.dtype)
        attn = attn / attn.sum(dim=1, keepdim=True)
        updates = torch.einsum("bnk,bnd->bkd", attn, v)
        slots = gru_cell(p, "gru.", updates.reshape(-1, dim), previous.reshape(-1, dim)).reshape(batch, k_slots, dim)
        hidden = torch.relu(linear(p, "mlp_hidden", layer_norm(p, "norm_mlp", slots)))
        slots = slots + linear(p, "mlp_out", hidden)
    return slots


def perceiver_block(p, prefix, x, context, heads, residual=True, mask=None):
    """The Perceiver IO reference's pre-norm cross- or self-attention block."""
    q_in = layer_norm(p, f"{prefix}norm_query", x)
    kv = q_in if context is None else layer_norm(p, f"{prefix}norm_context", context)
    q, k, v = linear(p, f"{prefix}to_q", q_in), linear(p, f"{prefix}to_k", kv), linear(p, f"{prefix}to_v", kv)
    n, t = q.shape[:2]

    def split(a):
        return a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(1, 2)

    keep = None if mask is None else mask[:, None, None, :]
    out = TF.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=keep)
    out = linear(p, f"{prefix}to_out", out.transpose(1, 2).reshape(n, t, -1))
    h = x + out if residual else out
    hidden = TF.gelu(linear(p, f"{prefix}mlp_hidden", layer_norm(p, f"{prefix}norm_mlp", h)))
    return h + linear(p, f"{prefix}mlp_out", hidden)


def named_values(module, seed=20, scale=0.5):
    """The module's parameter names and random float64 values of their shapes."""
    names = [k for k, _ in module.named_parameters()]
    rng = np.random.default_rng(seed)
    return names, [rng.standard_normal(v.shape) * scale for _, v in module.named_parameters()]


def f64(a):
    return lamina.tensor(np.asarray(a), dtype=np.float64)
