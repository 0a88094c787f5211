"""PyTorch references of the diffusion denoisers and schedules, written from the formulas:
functions of a dict of weights named as lamina's state dict (Dense kernels (n_in, n_out),
convolution kernels (K, f, f, c_in)), on torch tensors, so that values and gradients can be
compared with lamina's."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as TF


# -- schedules -------------------------------------------------------------------------------
def linear_betas(T: int) -> torch.Tensor:
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)


def sigmoid_betas(T: int, start=-3.0, end=3.0, tau=1.0, max_beta=0.999) -> torch.Tensor:
    u = torch.arange(T + 1, dtype=torch.float64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    abar = (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
    return torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)


def column(values: torch.Tensor, t, ndim: int, dtype) -> torch.Tensor:
    """values[t] shaped (N, 1, ..., 1)."""
    return values[torch.as_tensor(t)].reshape((-1,) + (1,) * (ndim - 1)).to(dtype)


# -- networks ---------------------------------------------------------------------------------
def timestep_embedding(t, dim: int, dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(t), dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angles = t / torch.pow(10000.0, 2.0 * torch.floor(j / 2) / dim)
    return torch.where(j % 2 == 0, torch.sin(angles), torch.cos(angles)).to(dtype)


def dense(p: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    out = x @ p[f"{name}.weight"]
    bias = p.get(f"{name}.bias")
    return out if bias is None else out + bias


def conv(p: dict, name: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """A 'same' convolution of an NCHW map (at stride 2 the extra padding row and column go
    at the bottom and right, as TensorFlow's and lamina's)."""
    w = p[f"{name}.weight"].permute(0, 3, 1, 2)
    k = w.shape[-1]
    if stride == 1:
        return TF.conv2d(x, w, p[f"{name}.bias"], padding=(k - 1) // 2)
    total = max((math.ceil(x.shape[-1] / stride) - 1) * stride + k - x.shape[-1], 0)
    x = TF.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
    return TF.conv2d(x, w, p[f"{name}.bias"], stride=stride)


def time_features(p: dict, t, y, time_dim: int, dtype) -> torch.Tensor:
    e = dense(p, "time_out", TF.silu(dense(p, "time_in", timestep_embedding(t, time_dim, dtype))))
    if y is not None:
        e = e + p["class_embedding.weight"][torch.as_tensor(y)]
    return e


def denoising_mlp(p: dict, x, t, num_layers: int, time_dim: int, y=None) -> torch.Tensor:
    e = time_features(p, t, y, time_dim, x.dtype)
    h = x
    for k in range(num_layers):
        h = TF.silu(dense(p, f"layers.{k}", h) + dense(p, f"time_projections.{k}", e))
    return dense(p, "head", h)


def group_norm(p: dict, name: str, x: torch.Tensor, groups: int) -> torch.Tensor:
    c = x.shape[1]
    return TF.group_norm(x, math.gcd(groups, c), p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)


def residual_block(p: dict, name: str, x: torch.Tensor, e: torch.Tensor, groups: int) -> torch.Tensor:
    h = conv(p, f"{name}.conv1", TF.silu(group_norm(p, f"{name}.norm1", x, groups)))
    h = h + dense(p, f"{name}.time_projection", TF.silu(e))[:, :, None, None]
    h = conv(p, f"{name}.conv2", TF.silu(group_norm(p, f"{name}.norm2", h, groups)))
    skip = conv(p, f"{name}.skip", x) if f"{name}.skip.weight" in p else x
    return skip + h


def denoising_unet(p: dict, x_nhwc, t, levels: int, groups: int, time_dim: int, y=None) -> torch.Tensor:
    e = time_features(p, t, y, time_dim, x_nhwc.dtype)
    h = conv(p, "stem", x_nhwc.permute(0, 3, 1, 2))
    skips = []
    for level in range(levels):
        h = residual_block(p, f"down_blocks.{level}", h, e, groups)
        skips.append(h)
        if level < levels - 1:
            h = conv(p, f"downsamplers.{level}", h, stride=2)
    h = residual_block(p, "middle", h, e, groups)
    for level in range(levels - 1, -1, -1):
        h = residual_block(p, f"up_blocks.{level}", torch.cat([skips[level], h], dim=1), e, groups)
        if level > 0:
            h = conv(p, f"up_convs.{level - 1}", TF.interpolate(h, scale_factor=2, mode="nearest"))
    h = conv(p, "head", TF.silu(group_norm(p, "head_norm", h, groups)))
    return h.permute(0, 2, 3, 1)
