"""A PyTorch T5ForConditionalGeneration written from the published formulas with Hugging
Face's module names, so that its state_dict has Hugging Face's keys (transformers is not
installed in the test environment)."""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


class T5LayerNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class T5Attention(nn.Module):
    def __init__(self, c, has_bias, is_decoder):
        super().__init__()
        self.c, self.is_decoder, self.has_bias = c, is_decoder, has_bias
        inner = c["num_heads"] * c["d_kv"]
        self.q = nn.Linear(c["d_model"], inner, bias=False)
        self.k = nn.Linear(c["d_model"], inner, bias=False)
        self.v = nn.Linear(c["d_model"], inner, bias=False)
        self.o = nn.Linear(inner, c["d_model"], bias=False)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(c["relative_attention_num_buckets"], c["num_heads"])

    def compute_bias(self, q_len, k_len):
        context = torch.arange(q_len)[:, None]
        memory = torch.arange(k_len)[None, :]
        buckets = relative_position_bucket(memory - context, not self.is_decoder,
                                           self.c["relative_attention_num_buckets"],
                                           self.c["relative_attention_max_distance"])
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x, mask, kv=None, position_bias=None):
        n, t, _ = x.shape
        h, d = self.c["num_heads"], self.c["d_kv"]
        source = x if kv is None else kv

        def shape(y):
            return y.view(n, -1, h, d).transpose(1, 2)
        q, k, v = shape(self.q(x)), shape(self.k(source)), shape(self.v(source))
        scores = q @ k.transpose(3, 2)
        if position_bias is None:
            if self.has_bias:
                position_bias = self.compute_bias(t, k.shape[2])
            else:
                position_bias = torch.zeros(1, h, t, k.shape[2], dtype=scores.dtype)
            position_bias = position_bias + mask
        weights = torch.softmax(scores + position_bias, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(n, t, h * d)
        return self.o(out), position_bias


class T5DenseActDense(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gated = c["feed_forward_proj"] == "gated-gelu"
        if self.gated:
            self.wi_0 = nn.Linear(c["d_model"], c["d_ff"], bias=False)
            self.wi_1 = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        else:
            self.wi = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.wo = nn.Linear(c["d_ff"], c["d_model"], bias=False)

    def forward(self, x):
        if self.gated:
            hidden = nn.functional.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)
        else:
            hidden = torch.relu(self.wi(x))
        return self.wo(hidden)


class T5LayerSelfAttention(nn.Module):
    def __init__(self, c, has_bias, is_decoder):
        super().__init__()
        self.SelfAttention = T5Attention(c, has_bias, is_decoder)
        self.layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])

    def forward(self, x, mask, position_bias):
        out, position_bias = self.SelfAttention(self.layer_norm(x), mask, position_bias=position_bias)
        return x + out, position_bias


class T5LayerCrossAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.EncDecAttention = T5Attention(c, False, True)
        self.layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])

    def forward(self, x, kv, mask, position_bias):
        out, position_bias = self.EncDecAttention(self.layer_norm(x), mask, kv=kv, position_bias=position_bias)
        return x + out, position_bias


class T5LayerFF(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.DenseReluDense = T5DenseActDense(c)
        self.layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])

    def forward(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, c, has_bias, is_decoder):
        super().__init__()
        layers = [T5LayerSelfAttention(c, has_bias, is_decoder)]
        if is_decoder:
            layers.append(T5LayerCrossAttention(c))
        layers.append(T5LayerFF(c))
        self.layer = nn.ModuleList(layers)


class T5Stack(nn.Module):
    def __init__(self, c, shared, is_decoder, num_layers):
        super().__init__()
        self.embed_tokens = shared
        self.is_decoder = is_decoder
        self.block = nn.ModuleList([T5Block(c, i == 0, is_decoder) for i in range(num_layers)])
        self.final_layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])

    def forward(self, ids, mask, encoder_hidden=None, encoder_mask=None):
        x = self.embed_tokens(ids)
        n, t = ids.shape
        extended = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        if self.is_decoder:
            allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))[None, None] & mask[:, None, None, :].bool()
            extended = torch.where(allowed, torch.zeros((), dtype=x.dtype), torch.finfo(x.dtype).min)
            cross = (1.0 - encoder_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        position_bias = cross_bias = None
        for block in self.block:
            x, position_bias = block.layer[0](x, extended, position_bias)
            if self.is_decoder:
                x, cross_bias = block.layer[1](x, encoder_hidden, cross, cross_bias)
            x = block.layer[-1](x)
        return self.final_layer_norm(x)


class T5ForConditionalGeneration(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.shared = nn.Embedding(c["vocab_size"], c["d_model"])
        self.encoder = T5Stack(c, self.shared, False, c["num_layers"])
        self.decoder = T5Stack(c, self.shared, True, c.get("num_decoder_layers") or c["num_layers"])
        self.lm_head = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        self.tied = c.get("tie_word_embeddings", True)
        if self.tied:
            self.lm_head.weight = self.shared.weight
        for p in self.parameters():
            nn.init.normal_(p, std=0.5)

    def _shift_right(self, labels):
        shifted = labels.new_zeros(labels.shape)
        shifted[:, 1:] = labels[:, :-1].clone()
        return shifted.masked_fill(shifted == -100, 0)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None,
                decoder_attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        encoded = self.encoder(input_ids, attention_mask)
        if decoder_input_ids is None:
            decoder_input_ids = self._shift_right(labels)
        if decoder_attention_mask is None:
            decoder_attention_mask = torch.ones_like(decoder_input_ids)
        out = self.decoder(decoder_input_ids, decoder_attention_mask, encoded, attention_mask)
        if self.tied:
            out = out * self.c["d_model"] ** -0.5
        logits = self.lm_head(out)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100)
        return encoded, logits, loss
