"""PyTorch references of Linformer, Nystromformer and Reformer LSH attention written from the
papers' formulas; LSH attention in its plainest form: a full (T, T) score matrix per hash round
with every key outside the query's chunk and the chunk before it masked."""

from __future__ import annotations

import math

import numpy as np
import torch


def full_attention(q, k, v):
    """softmax(Q K^T / sqrt(d)) V."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def linformer(q, k, v, e, f):
    n = k.shape[-2]
    return full_attention(q, e[..., :n] @ k, f[..., :n] @ v)


def iterative_pinv(a, iterations=6):
    """Z_0 = A^T / (max column sum |A| * max row sum |A|), Z <- Z (13 I - AZ (15 I - AZ (7 I - AZ))) / 4."""
    norm_1 = a.abs().sum(-2).amax(-1)[..., None, None]
    norm_inf = a.abs().sum(-1).amax(-1)[..., None, None]
    z = a.transpose(-1, -2) / (norm_1 * norm_inf)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom(q, k, v, m, iterations=6):
    *lead, n, d = q.shape
    q_marks = q.reshape(*lead, m, n // m, d).mean(-2)
    k_marks = k.reshape(*lead, m, n // m, d).mean(-2)
    s = 1 / math.sqrt(d)
    kernel_1 = torch.softmax(q @ k_marks.transpose(-1, -2) * s, -1)
    kernel_2 = torch.softmax(q_marks @ k_marks.transpose(-1, -2) * s, -1)
    kernel_3 = torch.softmax(q_marks @ k.transpose(-1, -2) * s, -1)
    return kernel_1 @ iterative_pinv(kernel_2, iterations) @ (kernel_3 @ v)


def depthwise_conv(v, kernel):
    """(N, H, T, d) convolved along T by one kernel (H, K) per head, zero padding, same length."""
    n, h, t, d = v.shape
    size = kernel.shape[-1]
    rows = v.permute(0, 3, 1, 2).reshape(n * d, h, t)
    out = torch.nn.functional.conv1d(rows, kernel[:, None, :], padding=(size - 1) // 2, groups=h)
    return out.reshape(n, d, h, t).permute(0, 2, 3, 1)


def lsh(qk, v, rotations, chunk_size, causal):
    """Reformer attention over qk (B, T, d), v (B, T, d_v) for rotations (d, R, b / 2)."""
    b, t, d = qk.shape
    rotated = torch.einsum("btd,drh->brth", qk.detach(), rotations)
    buckets = torch.cat([rotated, -rotated], -1).argmax(-1)                      # (B, R, T)
    rounds, chunks = buckets.shape[1], t // chunk_size
    positions = torch.arange(t)
    keys = torch.nn.functional.normalize(qk, dim=-1)                           # q / max(|q|, 1e-12)
    scores = qk @ keys.transpose(-1, -2) / math.sqrt(d)                        # (B, T, T)
    scores = torch.where(torch.eye(t, dtype=torch.bool), torch.full_like(scores, -1e5), scores)
    if causal:
        scores = torch.where(positions[None, :] > positions[:, None], torch.full_like(scores, -1e9), scores)
    outs, norms = [], []
    for r in range(rounds):
        rank = torch.empty(b, t, dtype=torch.long)
        order = torch.argsort(buckets[:, r] * t + positions, dim=-1, stable=True)
        rank.scatter_(1, order, positions.expand(b, t).clone())
        chunk = rank // chunk_size                                                 # (B, T)
        same = chunk[:, :, None] == chunk[:, None, :]
        previous = (chunk[:, :, None] - 1) % chunks == chunk[:, None, :]
        seen = torch.where(same | previous, scores, torch.full_like(scores, -math.inf))
        norm = torch.logsumexp(seen, -1)
        outs.append(torch.exp(seen - norm[..., None]) @ v)
        norms.append(norm)
    norms = torch.stack(norms, 1)                                                  # (B, R, T)
    weights = torch.softmax(norms, dim=1)
    return (torch.stack(outs, 1) * weights[..., None]).sum(1)


def random_rotations(d, rounds, buckets, seed=0):
    return np.random.default_rng(seed).standard_normal((d, rounds, buckets // 2))
