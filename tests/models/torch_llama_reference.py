"""A PyTorch Llama written from Hugging Face's LlamaForCausalLM's module names and formulas
(RMSNorm, rotary positions with rotate_half, grouped-query attention through repeat_kv,
SwiGLU MLP, an optional tied head), to check lamina's Llama against; with the config fields
head_dim, rope_scaling ('linear', 'llama3', 'dynamic', 'yarn' and 'longrope', from Hugging
Face's rope initialisation functions and its per-forward update of the dynamic kinds),
sliding_window (MistralForCausalLM's attention mask) and a key/value cache."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_rms_norm import RMSNorm


def scaled_inv_freq(inv_freq, rope_scaling: dict | None):
    """Hugging Face's inv_freq rescaled as its 'linear' and 'llama3' rope types do."""
    if rope_scaling is None:
        return inv_freq
    factor = rope_scaling["factor"]
    if rope_scaling.get("rope_type", rope_scaling.get("type")) == "linear":
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


def _plain_inv_freq(head_dim: int, base: float):
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(head_dim: int, base: float, rope_scaling: dict, max_position_embeddings: int):
    factor = rope_scaling["factor"]
    original = rope_scaling.get("original_max_position_embeddings", max_position_embeddings)
    attention_factor = rope_scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rope_scaling.get("mscale"), rope_scaling.get("mscale_all_dim")
        attention_factor = (_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
                            if mscale and mscale_all_dim else _yarn_mscale(factor))

    def correction_dim(num_rotations):
        return head_dim * math.log(original / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = correction_dim(rope_scaling.get("beta_fast") or 32)
    high = correction_dim(rope_scaling.get("beta_slow") or 1)
    if rope_scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(head_dim // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
    extrapolation_factor = 1 - ramp
    pos_freqs = base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (1.0 / pos_freqs) * extrapolation_factor
    return inv_freq, attention_factor


def rope_parameters(head_dim: int, base: float, rope_scaling: dict | None, max_position_embeddings: int,
                    seq_len: int | None = None):
    """(inv_freq, attention_scaling) as Hugging Face's rope initialisation functions give them
    (the config's rope_scaling, seq_len for 'dynamic' and 'longrope')."""
    kind = "default" if rope_scaling is None else rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind in ("default", "linear", "llama3"):
        return scaled_inv_freq(_plain_inv_freq(head_dim, base), rope_scaling), 1.0
    if kind == "dynamic":
        factor = rope_scaling["factor"]
        seq_len = seq_len if seq_len is not None and seq_len > max_position_embeddings else max_position_embeddings
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (head_dim / (head_dim - 2))
        return _plain_inv_freq(head_dim, base), 1.0
    if kind == "yarn":
        return _yarn(head_dim, base, rope_scaling, max_position_embeddings)
    # longrope
    factor, attention_factor = rope_scaling.get("factor"), rope_scaling.get("attention_factor")
    original = rope_scaling.get("original_max_position_embeddings")
    if original is not None:
        factor = max_position_embeddings / original
    else:
        original = max_position_embeddings
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = rope_scaling["long_factor"] if seq_len and seq_len > original else rope_scaling["short_factor"]
    ext = torch.tensor(ext, dtype=torch.float64)
    return 1.0 / (ext * base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)), attention_factor


class LlamaRotaryEmbedding(nn.Module):
    """Hugging Face's rotary embedding, with its per-forward frequency update for 'dynamic'
    (grow past the longest length seen, reset below the context) and 'longrope' (the long
    factors past the original context)."""

    def __init__(self, head_dim: int, base: float, rope_scaling: dict | None = None,
                 max_position_embeddings: int = 2048):
        super().__init__()
        self.config = (head_dim, base, rope_scaling, max_position_embeddings)
        self.rope_type = "default" if rope_scaling is None else rope_scaling.get("rope_type", rope_scaling.get("type"))
        inv_freq, self.attention_scaling = rope_parameters(*self.config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.original_inv_freq = inv_freq
        self.max_seq_len_cached = self.original_max_seq_len = max_position_embeddings

    def _update(self, position_ids):
        seq_len = int(position_ids.max()) + 1
        if self.rope_type == "dynamic":
            if seq_len > self.max_seq_len_cached:
                self.inv_freq, self.attention_scaling = rope_parameters(*self.config, seq_len=seq_len)
                self.max_seq_len_cached = seq_len
            if seq_len < self.original_max_seq_len < self.max_seq_len_cached:
                self.inv_freq, self.max_seq_len_cached = self.original_inv_freq, self.original_max_seq_len
        elif self.rope_type == "longrope":
            self.inv_freq = rope_parameters(*self.config, seq_len=seq_len)[0]

    def forward(self, x, position_ids):
        self._update(position_ids)
        freqs = position_ids[:, None].to(torch.float64) * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


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

    def forward(self, x, cos, sin, key_padding=None, cache: list | None = None):
        """``cache``: a list holding the rotated keys and values of the steps read before
        (empty at first), extended with this call's."""
        n, t, _ = x.shape
        q = self.q_proj(x).view(n, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        past = 0
        if cache is not None:
            if cache:
                past = cache[0].shape[2]
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        n_rep = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)
        query_positions = past + torch.arange(t)[:, None]
        key_positions = torch.arange(past + t)[None, :]
        allowed = key_positions <= query_positions
        if self.sliding_window is not None:       # q_idx - kv_idx < sliding_window
            allowed = allowed & (query_positions - key_positions < self.sliding_window)
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
        self.input_layernorm = RMSNorm(e, config["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(e, config["rms_norm_eps"])

    def forward(self, x, cos, sin, key_padding=None, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, key_padding, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config["num_hidden_layers"]))
        self.norm = RMSNorm(config["hidden_size"], config["rms_norm_eps"])
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.rotary_emb = LlamaRotaryEmbedding(head_dim, config["rope_theta"], config.get("rope_scaling"),
                                               config.get("max_position_embeddings", 2048))

    def forward(self, ids, key_padding=None, caches=None):
        """``caches``: one list per layer (see LlamaAttention.forward) to decode with a
        key/value cache, the positions continuing after the cached steps."""
        x = self.embed_tokens(ids)
        past = caches[0][0].shape[2] if caches is not None and caches[0] else 0
        cos, sin = self.rotary_emb(x, past + torch.arange(ids.shape[1]))
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, key_padding, None if caches is None else caches[i])
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """``config``: LlamaConfig's fields (vocab_size, hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads, num_key_value_heads, rms_norm_eps, rope_theta,
    tie_word_embeddings, attention_bias, mlp_bias, head_dim, rope_scaling, sliding_window,
    max_position_embeddings)."""

    def __init__(self, config: dict):
        super().__init__()
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        if config.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids, key_padding=None, caches=None):
        return self.lm_head(self.model(ids, key_padding, caches))
