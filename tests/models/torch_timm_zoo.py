"""Torch reference modules with timm's structure and parameter names for MLP-Mixer, ResMLP,
ConvMixer and DeiT, written from the papers and timm's published key names (timm itself is
not installed). Images are NCHW, tokens (N, T, D)."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, features: int, hidden: int, out: int | None = None, act=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, features if out is None else out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class MixerBlock(nn.Module):
    def __init__(self, dim: int, seq_len: int, tokens_hidden: int, channels_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(seq_len, tokens_hidden)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, channels_hidden)

    def forward(self, x):
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class Affine(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones((1, 1, dim)))
        self.beta = nn.Parameter(torch.zeros((1, 1, dim)))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


class ResBlock(nn.Module):
    def __init__(self, dim: int, seq_len: int, channels_hidden: int, init_values: float = 1e-4):
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = nn.Linear(seq_len, seq_len)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim, channels_hidden)
        self.ls1 = nn.Parameter(init_values * torch.ones(dim))
        self.ls2 = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        x = x + self.ls1 * self.linear_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ls2 * self.mlp_channels(self.norm2(x))


class MlpMixer(nn.Module):
    """Mixer (``resmlp=False``) or ResMLP on ``size`` x ``size`` images."""

    def __init__(self, size: int, patch: int, channels: int, dim: int, depth: int, num_classes: int,
                 resmlp: bool = False):
        super().__init__()
        seq_len = (size // patch) ** 2
        self.stem = PatchEmbed(patch, channels, dim)
        if resmlp:
            blocks = [ResBlock(dim, seq_len, 4 * dim) for _ in range(depth)]
        else:
            blocks = [MixerBlock(dim, seq_len, dim // 2, 4 * dim) for _ in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.norm = Affine(dim) if resmlp else nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x))).mean(dim=1))


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def convmixer_block(dim: int, kernel: int, act=nn.GELU) -> nn.Sequential:
    return nn.Sequential(
        Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel, groups=dim, padding="same"), act(), nn.BatchNorm2d(dim))),
        nn.Conv2d(dim, dim, 1), act(), nn.BatchNorm2d(dim))


class ConvMixer(nn.Module):
    def __init__(self, dim: int, depth: int, kernel: int, patch: int, channels: int, num_classes: int, act=nn.GELU):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, dim, patch, stride=patch), act(), nn.BatchNorm2d(dim))
        self.blocks = nn.Sequential(*[convmixer_block(dim, kernel, act) for _ in range(depth)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeiT(nn.Module):
    """(cls + dist) / 2 in eval mode, (cls, dist) in training mode when distilled."""

    def __init__(self, size: int, patch: int, channels: int, dim: int, depth: int, heads: int, num_classes: int,
                 distilled: bool = False):
        super().__init__()
        self.distilled = distilled
        self.patch_embed = PatchEmbed(patch, channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.head_dist = nn.Linear(dim, num_classes)
        self.pos_embed = nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1 + distilled, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        tokens = [self.cls_token, self.dist_token] if self.distilled else [self.cls_token]
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in tokens] + [x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        scores = self.head(x[:, 0])
        if not self.distilled:
            return scores
        scores_dist = self.head_dist(x[:, 1])
        return (scores, scores_dist) if self.training else (scores + scores_dist) / 2
