"""A PyTorch Llama written from Hugging Face's LlamaForCausalLM's module names and formulas
(RMSNorm, rotary positions with rotate_half, grouped-query attention through repeat_kv,
SwiGLU MLP, an optional tied head), to check lamina's Llama against; with the config fields
head_dim, rope_scaling ('linear' and 'llama3', from Hugging Face's rope initialisation
functions) and sliding_window (MistralForCausalLM's attention mask)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.2 * torch.randn(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))


def scaled_inv_freq(inv_freq, rope_scaling: dict | None):
    """Hugging Face's inv_freq rescaled as its 'linear' and 'llama3' rope types do."""
    if rope_scaling is None:
        return inv_freq
    factor = rope_scaling["factor"]
    if rope_scaling["rope_type"] == "linear":
        return inv_freq / factor
    old_context_len = rope_scaling["original_max_position_embeddings"]
    low_freq_factor, high_freq_factor = rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, base: float, rope_scaling: dict | None = None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", scaled_inv_freq(inv_freq, rope_scaling), persistent=False)

    def forward(self, x, position_ids):
        freqs = position_ids[:, None].to(torch.float64) * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(hidden, n_rep: int):
    batch, kv_heads, steps, head_dim = hidden.shape
    if n_rep == 1:
        return hidden
    hidden = hidden[:, :, None].expand(batch, kv_heads, n_rep, steps, head_dim)
    return hidden.reshape(batch, kv_heads * n_rep, steps, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, bias: bool, head_dim: int | None = None,
                 sliding_window: int | None = None):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads if head_dim is None else head_dim
        self.sliding_window = sliding_window
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=bias)

    def forward(self, x, cos, sin, key_padding=None):
        n, t, _ = x.shape
        q = self.q_proj(x).view(n, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        n_rep = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)
        allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))
        if self.sliding_window is not None:       # q_idx - kv_idx < sliding_window
            allowed = allowed & ~torch.tril(allowed, diagonal=-self.sliding_window)
        allowed = allowed[None, None]
        if key_padding is not None:
            allowed = allowed & key_padding[:, None, None, :].bool()
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(n, t, -1))


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e = config["hidden_size"]
        self.self_attn = LlamaAttention(e, config["num_attention_heads"], config["num_key_value_heads"],
                                        config.get("attention_bias", False), config.get("head_dim"),
                                        config.get("sliding_window"))
        self.mlp = LlamaMLP(e, config["intermediate_size"], config.get("mlp_bias", False))
        self.input_layernorm = LlamaRMSNorm(e, config["rms_norm_eps"])
        self.post_attention_layernorm = LlamaRMSNorm(e, config["rms_norm_eps"])

    def forward(self, x, cos, sin, key_padding=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, key_padding)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config["num_hidden_layers"]))
        self.norm = LlamaRMSNorm(config["hidden_size"], config["rms_norm_eps"])
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.rotary_emb = LlamaRotaryEmbedding(head_dim, config["rope_theta"], config.get("rope_scaling"))

    def forward(self, ids, key_padding=None):
        x = self.embed_tokens(ids)
        cos, sin = self.rotary_emb(x, torch.arange(ids.shape[1]))
        for layer in self.layers:
            x = layer(x, cos, sin, key_padding)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """``config``: LlamaConfig's fields (vocab_size, hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads, num_key_value_heads, rms_norm_eps, rope_theta,
    tie_word_embeddings, attention_bias, mlp_bias, head_dim, rope_scaling, sliding_window)."""

    def __init__(self, config: dict):
        super().__init__()
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        if config.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids, key_padding=None):
        return self.lm_head(self.model(ids, key_padding))
