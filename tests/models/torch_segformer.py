"""PyTorch reference of Hugging Face's SegformerForSemanticSegmentation (transformers is not
installed): the same module names and computations, tokens (N, h w, C) inside the encoder and
NCHW maps between stages, as Hugging Face writes it."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn


class Config:
    def __init__(self, hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2), num_attention_heads=(1, 2, 5, 8),
                 sr_ratios=(8, 4, 2, 1), patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2), mlp_ratios=(4, 4, 4, 4),
                 decoder_hidden_size=256, num_labels=150, num_channels=3, drop_path_rate=0.0,
                 classifier_dropout_prob=0.0, semantic_loss_ignore_index=255):
        self.__dict__.update(locals())
        del self.__dict__["self"]


class PatchEmbeddings(nn.Module):
    def __init__(self, patch, stride, cin, width):
        super().__init__()
        self.proj = nn.Conv2d(cin, width, patch, stride, patch // 2)
        self.layer_norm = nn.LayerNorm(width)

    def forward(self, x):
        x = self.proj(x)
        height, width = x.shape[2:]
        return self.layer_norm(x.flatten(2).transpose(1, 2)), height, width


class EfficientSelfAttention(nn.Module):
    def __init__(self, width, heads, sr_ratio):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr_ratio
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(width, width, sr_ratio, sr_ratio)
            self.layer_norm = nn.LayerNorm(width)

    def split(self, tokens):
        n, length, width = tokens.shape
        return tokens.view(n, length, self.heads, width // self.heads).permute(0, 2, 1, 3)

    def forward(self, tokens, height, width):
        q = self.split(self.query(tokens))
        if self.sr_ratio > 1:
            n, _, channels = tokens.shape
            grid = tokens.permute(0, 2, 1).reshape(n, channels, height, width)
            tokens = self.layer_norm(self.sr(grid).reshape(n, channels, -1).permute(0, 2, 1))
        k, v = self.split(self.key(tokens)), self.split(self.value(tokens))
        weights = torch.softmax(q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5), dim=-1)
        context = (weights @ v).permute(0, 2, 1, 3)
        return context.reshape(context.shape[0], context.shape[1], -1)


class SelfOutput(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self, width, heads, sr_ratio):
        super().__init__()
        self.self = EfficientSelfAttention(width, heads, sr_ratio)
        self.output = SelfOutput(width)

    def forward(self, tokens, height, width):
        return self.output(self.self(tokens, height, width))


class DWConv(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.dwconv = nn.Conv2d(width, width, 3, 1, 1, groups=width)

    def forward(self, tokens, height, width):
        n, _, channels = tokens.shape
        grid = tokens.transpose(1, 2).reshape(n, channels, height, width)
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.dense1 = nn.Linear(width, hidden)
        self.dwconv = DWConv(hidden)
        self.dense2 = nn.Linear(hidden, width)

    def forward(self, tokens, height, width):
        return self.dense2(TF.gelu(self.dwconv(self.dense1(tokens), height, width)))


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype))
        return x / keep * mask


class Layer(nn.Module):
    def __init__(self, width, heads, sr_ratio, mlp_ratio, drop_path):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(width)
        self.attention = Attention(width, heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.layer_norm_2 = nn.LayerNorm(width)
        self.mlp = MixFFN(width, width * mlp_ratio)

    def forward(self, tokens, height, width):
        tokens = tokens + self.drop_path(self.attention(self.layer_norm_1(tokens), height, width))
        return tokens + self.drop_path(self.mlp(self.layer_norm_2(tokens), height, width))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        rates = torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu").tolist()
        stages = len(c.hidden_sizes)
        self.patch_embeddings = nn.ModuleList(
            PatchEmbeddings(c.patch_sizes[i], c.strides[i], c.num_channels if i == 0 else c.hidden_sizes[i - 1],
                            c.hidden_sizes[i]) for i in range(stages))
        blocks, first = [], 0
        for i in range(stages):
            blocks.append(nn.ModuleList(Layer(c.hidden_sizes[i], c.num_attention_heads[i], c.sr_ratios[i],
                                              c.mlp_ratios[i], rates[first + j]) for j in range(c.depths[i])))
            first += c.depths[i]
        self.block = nn.ModuleList(blocks)
        self.layer_norm = nn.ModuleList(nn.LayerNorm(w) for w in c.hidden_sizes)

    def forward(self, x):
        maps = []
        for embedding, layers, norm in zip(self.patch_embeddings, self.block, self.layer_norm):
            tokens, height, width = embedding(x)
            for layer in layers:
                tokens = layer(tokens, height, width)
            tokens = norm(tokens)
            x = tokens.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
            maps.append(x)
        return maps


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.encoder = Encoder(c)


class MLP(nn.Module):
    def __init__(self, cin, width):
        super().__init__()
        self.proj = nn.Linear(cin, width)

    def forward(self, x):
        return self.proj(x.flatten(2).transpose(1, 2))


class DecodeHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c.decoder_hidden_size
        self.linear_c = nn.ModuleList(MLP(w, d) for w in c.hidden_sizes)
        self.linear_fuse = nn.Conv2d(d * len(c.hidden_sizes), d, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(d)
        self.classifier = nn.Conv2d(d, c.num_labels, 1)

    def forward(self, maps):
        size = maps[0].shape[2:]
        joined = []
        for x, mlp in zip(maps, self.linear_c):
            height, width = x.shape[2:]
            y = mlp(x).permute(0, 2, 1).reshape(x.shape[0], -1, height, width)
            joined.append(TF.interpolate(y, size=size, mode="bilinear", align_corners=False))
        x = torch.relu(self.batch_norm(self.linear_fuse(torch.cat(joined[::-1], dim=1))))
        return self.classifier(x)


class SegformerForSemanticSegmentation(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.segformer = Model(c)
        self.decode_head = DecodeHead(c)

    def forward(self, x):
        return self.decode_head(self.segformer.encoder(x))


def segformer_loss(logits, labels, ignore_index=255):
    """Hugging Face's loss: logits resized to the labels, cross-entropy (or, with one label, the
    masked binary cross-entropy)."""
    logits = TF.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if logits.shape[1] > 1:
        return TF.cross_entropy(logits, labels, ignore_index=ignore_index)
    valid = ((labels >= 0) & (labels != ignore_index)).to(logits.dtype)
    losses = TF.binary_cross_entropy_with_logits(logits.squeeze(1), labels.to(logits.dtype), reduction="none")
    return (losses * valid).mean()
