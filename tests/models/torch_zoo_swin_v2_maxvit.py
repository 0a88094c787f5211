"""PyTorch references with torchvision's module structure and names (torchvision is not
installed) for the Swin Transformer V2 and MaxViT, to check ``load_torchvision_state_dict``
and the outputs and gradients of the lamina models."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch_zoo_modern as tz
import torch_zoo_regnet_swin as tr
from torch import nn


# -- Swin Transformer V2 -----------------------------------------------------------------------------
class ShiftedWindowAttentionV2(tr.ShiftedWindowAttention):
    """Cosine attention with a clamped temperature and the continuous position bias; no key bias."""

    def __init__(self, dim, window, shift, heads):
        super().__init__(dim, window, shift, heads)
        del self.relative_position_bias_table
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, heads, bias=False))
        axes = [torch.arange(-(w - 1), w, dtype=torch.float32) / (w - 1) * 8 for w in window]
        table = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).unsqueeze(0)
        self.register_buffer("relative_coords_table", torch.sign(table) * torch.log2(table.abs() + 1.0) / 3.0)

    def qkv_parts(self, x, c):
        bias = self.qkv.bias.clone()
        bias[c:2 * c] = 0
        qkv = nn.functional.linear(x, self.qkv.weight, bias)
        return qkv.reshape(x.shape[0], x.shape[1], 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)

    def scores(self, q, k, n):
        attn = nn.functional.normalize(q, dim=-1) @ nn.functional.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        rel = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)
        return attn + 16 * torch.sigmoid(rel).unsqueeze(0)


class SwinBlockV2(tr.SwinBlock):
    def __init__(self, dim, heads, window, shift, mlp_ratio=4.0):
        super().__init__(dim, heads, window, shift, mlp_ratio)
        self.attn = ShiftedWindowAttentionV2(dim, window, shift, heads)

    def forward(self, x):
        x = x + self.stochastic_depth(self.norm1(self.attn(x)))
        return x + self.stochastic_depth(self.norm2(self.mlp(x)))


class PatchMergingV2(tr.PatchMerging):
    def __init__(self, dim):
        super().__init__(dim)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(self.cells(x)))


class SwinTransformerV2(nn.Module):
    def __init__(self, embed_dim, depths, heads, window=(8, 8), num_classes=1000):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, embed_dim, 4, 4), tr.Permute([0, 2, 3, 1]), nn.LayerNorm(embed_dim))]
        for i, (n, nh) in enumerate(zip(depths, heads)):
            dim = embed_dim * 2 ** i
            layers.append(nn.Sequential(*[
                SwinBlockV2(dim, nh, window, [0, 0] if j % 2 == 0 else [w // 2 for w in window]) for j in range(n)]))
            if i + 1 < len(depths):
                layers.append(PatchMergingV2(dim))
        self.features = nn.Sequential(*layers)
        last = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(last)
        self.head = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x)).mean((1, 2)))


# -- MaxViT ------------------------------------------------------------------------------------------
def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.99)


class MBConv(nn.Module):
    def __init__(self, cin, cout, stride, expansion=4.0, squeeze=0.25):
        super().__init__()
        self.proj = nn.Identity()
        if stride != 1 or cin != cout:
            conv = [nn.Conv2d(cin, cout, 1)]
            self.proj = nn.Sequential(*([nn.AvgPool2d(3, stride, 1)] if stride == 2 else []), *conv)
        self.stochastic_depth = tz.StochasticDepth(0.0)
        mid = int(cout * expansion)
        self.layers = nn.Sequential(OrderedDict(
            pre_norm=batch_norm(cin),
            conv_a=tz.conv_norm_act(cin, mid, 1, act=nn.GELU, eps=1e-3, momentum=0.99),
            conv_b=tz.conv_norm_act(mid, mid, 3, stride, groups=mid, act=nn.GELU, eps=1e-3, momentum=0.99),
            squeeze_excitation=tz.SqueezeExcitation(mid, int(cout * squeeze), activation=nn.SiLU),
            conv_c=nn.Conv2d(mid, cout, 1)))

    def forward(self, x):
        return self.proj(x) + self.stochastic_depth(self.layers(x))


class RelativePositionalMultiHeadAttention(nn.Module):
    def __init__(self, feat_dim, head_dim, partition):
        super().__init__()
        self.heads, self.head_dim, self.size, self.feat_dim = feat_dim // head_dim, head_dim, partition, feat_dim
        self.to_qkv = nn.Linear(feat_dim, 3 * feat_dim)
        self.merge = nn.Linear(feat_dim, feat_dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * partition - 1) ** 2, self.heads) * 0.02)
        n = partition * partition
        self.register_buffer("relative_position_index", tr.relative_index((partition, partition)).view(n, n))

    def forward(self, x):
        b, g, p, d = x.shape
        q, k, v = (t.reshape(b, g, p, self.heads, self.head_dim).permute(0, 1, 3, 2, 4)
                   for t in torch.chunk(self.to_qkv(x), 3, dim=-1))
        scores = q @ (k * self.feat_dim ** -0.5).transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(p, p, -1)
        weights = (scores + bias.permute(2, 0, 1).unsqueeze(0)).softmax(-1)
        return self.merge((weights @ v).permute(0, 1, 3, 2, 4).reshape(b, g, p, d))


class PartitionAttentionLayer(nn.Module):
    """NCHW in and out, as torchvision's: partitions of P pixels ('window') or of H / P
    pixels ('grid', then the two partition axes swapped)."""

    def __init__(self, channels, head_dim, partition, kind, mlp_ratio=4):
        super().__init__()
        self.partition, self.kind = partition, kind
        self.attn_layer = nn.Sequential(nn.LayerNorm(channels),
                                        RelativePositionalMultiHeadAttention(channels, head_dim, partition),
                                        nn.Dropout(0.0))
        self.mlp_layer = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels * mlp_ratio), nn.GELU(),
                                       nn.Linear(channels * mlp_ratio, channels), nn.Dropout(0.0))
        self.stochastic_dropout = tz.StochasticDepth(0.0)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.partition if self.kind == "window" else h // self.partition
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p, c)
        if self.kind == "grid":
            x = x.swapaxes(-2, -3)
        x = x + self.stochastic_dropout(self.attn_layer(x))
        x = x + self.stochastic_dropout(self.mlp_layer(x))
        if self.kind == "grid":
            x = x.swapaxes(-2, -3)
        return x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class MaxVitLayer(nn.Module):
    def __init__(self, cin, cout, stride, head_dim, partition):
        super().__init__()
        self.layers = nn.Sequential(OrderedDict(
            MBconv=MBConv(cin, cout, stride),
            window_attention=PartitionAttentionLayer(cout, head_dim, partition, "window"),
            grid_attention=PartitionAttentionLayer(cout, head_dim, partition, "grid")))

    def forward(self, x):
        return self.layers(x)


class MaxVitBlock(nn.Module):
    def __init__(self, cin, cout, count, head_dim, partition):
        super().__init__()
        self.layers = nn.ModuleList(MaxVitLayer(cin if j == 0 else cout, cout, 2 if j == 0 else 1, head_dim, partition)
                                    for j in range(count))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MaxVit(nn.Module):
    def __init__(self, stem, widths, depths, head_dim, partition, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(tz.conv_norm_act(3, stem, 3, 2, act=nn.GELU, eps=1e-3, momentum=0.99),
                                  nn.Sequential(nn.Conv2d(stem, stem, 3, 1, 1)))
        self.blocks = nn.ModuleList(MaxVitBlock(cin, cout, n, head_dim, partition)
                                    for cin, cout, n in zip((stem, *widths[:-1]), widths, depths))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(widths[-1]),
                                        nn.Linear(widths[-1], widths[-1]), nn.Tanh(),
                                        nn.Linear(widths[-1], num_classes, bias=False))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)
