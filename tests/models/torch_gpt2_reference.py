"""A PyTorch GPT-2 written from Hugging Face's GPT2LMHeadModel's module names and formulas
(Conv1D weights (in, out), pre-LN blocks, gelu_new, the head tied to wte), to check
lamina's GPT2 against."""

from __future__ import annotations

import math

import torch
from torch import nn


class Conv1D(nn.Module):
    """y = x W + b with W stored (in, out)."""

    def __init__(self, n_out: int, n_in: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.2)
        self.bias = nn.Parameter(torch.randn(n_out) * 0.2)

    def forward(self, x):
        return x @ self.weight + self.bias


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class GPT2Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, n_positions: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = Conv1D(3 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)
        causal = torch.tril(torch.ones(n_positions, n_positions, dtype=torch.bool))
        self.register_buffer("bias", causal.view(1, 1, n_positions, n_positions), persistent=True)

    def forward(self, x, key_padding=None):
        n, t, e = x.shape
        q, k, v = self.c_attn(x).split(e, dim=2)
        q, k, v = (a.view(n, t, self.n_head, e // self.n_head).transpose(1, 2) for a in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(e // self.n_head)
        scores = torch.where(self.bias[:, :, :t, :t], scores, torch.finfo(scores.dtype).min)
        if key_padding is not None:
            scores = scores + (1.0 - key_padding[:, None, None, :].to(scores.dtype)) * torch.finfo(scores.dtype).min
        out = torch.softmax(scores, dim=-1) @ v
        return self.c_proj(out.transpose(1, 2).reshape(n, t, e))


class GPT2MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = Conv1D(4 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, 4 * n_embd)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, n_positions: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = GPT2Attention(n_embd, n_head, n_positions)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = GPT2MLP(n_embd)

    def forward(self, x, key_padding=None):
        x = x + self.attn(self.ln_1(x), key_padding)
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    def __init__(self, vocab_size: int, n_positions: int, n_embd: int, n_layer: int, n_head: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList(GPT2Block(n_embd, n_head, n_positions) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        with torch.no_grad():
            for ln in [self.ln_f, *(m for b in self.h for m in (b.ln_1, b.ln_2))]:
                ln.weight.add_(torch.randn_like(ln.weight) * 0.2)
                ln.bias.add_(torch.randn_like(ln.bias) * 0.2)

    def forward(self, ids, key_padding=None):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x, key_padding)
        return self.ln_f(x)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, vocab_size: int, n_positions: int, n_embd: int, n_layer: int, n_head: int):
        super().__init__()
        self.transformer = GPT2Model(vocab_size, n_positions, n_embd, n_layer, n_head)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, ids, key_padding=None):
        return self.lm_head(self.transformer(ids, key_padding))
