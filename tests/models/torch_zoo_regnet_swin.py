"""PyTorch references with torchvision's module structure and names (torchvision is not
installed) for RegNet and the Swin Transformer, to check ``load_torchvision_state_dict`` and
the outputs and gradients of the lamina models."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch_zoo_modern as tz
from torch import nn


# -- RegNet -----------------------------------------------------------------------------------------
def regnet_stages(depth, w_0, w_a, w_m, group_width, bottleneck=1.0):
    """(depths, widths, group widths) computed the way torchvision's generator does, in torch float32."""
    cont = torch.arange(depth) * w_a + w_0
    steps = torch.round(torch.log(cont / w_0) / math.log(w_m))
    widths = (torch.round(torch.divide(w_0 * torch.pow(w_m, steps), 8)) * 8).int().tolist()
    starts = [j for j in range(depth) if j == 0 or widths[j] != widths[j - 1]]
    depths = [b - a for a, b in zip(starts, starts[1:] + [depth])]
    stage_widths, groups = [], []
    for s in starts:
        w_b = int(widths[s] * bottleneck)
        g = min(group_width, w_b)
        stage_widths.append(int(tz.make_divisible(w_b, g) / bottleneck))
        groups.append(g)
    return depths, stage_widths, groups


class RegNetBlock(nn.Module):
    def __init__(self, w_in, w_out, stride, group_width, se_ratio, bottleneck=1.0):
        super().__init__()
        self.proj = None
        if w_in != w_out or stride != 1:
            self.proj = tz.conv_norm_act(w_in, w_out, 1, stride, act=None)
        w_b = int(round(w_out * bottleneck))
        layers = OrderedDict(a=tz.conv_norm_act(w_in, w_b, 1),
                             b=tz.conv_norm_act(w_b, w_b, 3, stride, groups=w_b // group_width))
        if se_ratio:
            layers["se"] = tz.SqueezeExcitation(w_b, int(round(se_ratio * w_in)))
        layers["c"] = tz.conv_norm_act(w_b, w_out, 1, act=None)
        self.f = nn.Sequential(layers)
        self.activation = nn.ReLU()

    def forward(self, x):
        return self.activation((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNet(nn.Module):
    def __init__(self, depth, w_0, w_a, w_m, group_width, se_ratio=None, num_classes=1000):
        super().__init__()
        self.stem = tz.conv_norm_act(3, 32, 3, 2)
        stages, w_in = OrderedDict(), 32
        for i, (n, w, g) in enumerate(zip(*regnet_stages(depth, w_0, w_a, w_m, group_width)), start=1):
            stages[f"block{i}"] = nn.Sequential(OrderedDict(
                (f"block{i}-{j}", RegNetBlock(w_in if j == 0 else w, w, 2 if j == 0 else 1, g, se_ratio))
                for j in range(n)))
            w_in = w
        self.trunk_output = nn.Sequential(stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk_output(self.stem(x))), 1))


# -- Swin Transformer ---------------------------------------------------------------------------------
def relative_index(window):
    """(N N,) row of the offset table of every token pair of a window, torchvision's order."""
    ys, xs = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return ((rel[..., 0] + window[0] - 1) * (2 * window[1] - 1) + rel[..., 1] + window[1] - 1).flatten()


def window_mask(ph, pw, window, shift):
    """(nW, N, N): -100 between tokens of a shifted window that came from different regions."""
    region = torch.zeros(ph, pw)
    count = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            region[hs[0]:hs[1], ws[0]:ws[1]] = count
            count += 1
    n = window[0] * window[1]
    region = region.view(ph // window[0], window[0], pw // window[1], window[1]).permute(0, 2, 1, 3).reshape(-1, n)
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return torch.where(diff != 0, -100.0, 0.0)


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    @staticmethod
    def cells(x):
        """The 2x2 neighbourhoods side by side (B, H/2, W/2, 4C), odd sides padded."""
        h, w = x.shape[1:3]
        x = nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        return torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)

    def forward(self, x):
        return self.reduction(self.norm(self.cells(x)))


class ShiftedWindowAttention(nn.Module):
    def __init__(self, dim, window, shift, heads):
        super().__init__()
        self.window, self.shift, self.heads = list(window), list(shift), heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads) * 0.02)
        self.register_buffer("relative_position_index", relative_index(window))

    def qkv_parts(self, x, c):
        """q, k, v (heads first) of the windows' tokens x (B nW, N, C)."""
        return self.qkv(x).reshape(x.shape[0], x.shape[1], 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)

    def scores(self, q, k, n):
        """Scaled dot products plus the relative position bias."""
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)
        return attn + bias.unsqueeze(0)

    def forward(self, x):
        b, h, w, c = x.shape
        (wh, ww), heads, n = self.window, self.heads, self.window[0] * self.window[1]
        x = nn.functional.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        ph, pw = x.shape[1:3]
        shift = [0 if wh >= ph else self.shift[0], 0 if ww >= pw else self.shift[1]]
        if sum(shift):
            x = torch.roll(x, (-shift[0], -shift[1]), (1, 2))
        nw = (ph // wh) * (pw // ww)
        x = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, n, c)
        q, k, v = self.qkv_parts(x, c)
        attn = self.scores(q, k, n)
        if sum(shift):
            mask = window_mask(ph, pw, self.window, shift).to(attn.dtype)
            attn = (attn.view(b, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b * nw, n, c)
        x = self.proj(x)
        x = x.view(b, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sum(shift):
            x = torch.roll(x, (shift[0], shift[1]), (1, 2))
        return x[:, :h, :w].contiguous()


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, window, shift, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, window, shift, heads)
        self.stochastic_depth = tz.StochasticDepth(0.0)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim),
                                 nn.Dropout(0.0))

    def forward(self, x):
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class SwinTransformer(nn.Module):
    def __init__(self, embed_dim, depths, heads, window=(7, 7), num_classes=1000):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, embed_dim, 4, 4), Permute([0, 2, 3, 1]), nn.LayerNorm(embed_dim))]
        for i, (n, nh) in enumerate(zip(depths, heads)):
            dim = embed_dim * 2 ** i
            layers.append(nn.Sequential(*[SwinBlock(dim, nh, window, [0, 0] if j % 2 == 0 else [w // 2 for w in window])
                                          for j in range(n)]))
            if i + 1 < len(depths):
                layers.append(PatchMerging(dim))
        self.features = nn.Sequential(*layers)
        last = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(last)
        self.head = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.norm(self.features(x))
        return self.head(x.mean((1, 2)))
