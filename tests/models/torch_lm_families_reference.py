"""PyTorch causal language models written from Hugging Face's modeling files of Qwen2,
Gemma, Gemma 2, Phi-3, Mixtral and GPT-NeoX, with their parameter names, to check lamina's
against: one configurable decoder (`DecoderForCausalLM`) for the Llama-like families and
`GPTNeoXForCausalLM`, plus Hugging Face's `load_balancing_loss_func`. The rotary embedding
(with LongRoPE) is the Llama reference's. Norm weights start away from their defaults so that
a wrong formula shows."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_llama_reference import LlamaRotaryEmbedding, apply_rotary_pos_emb, repeat_kv, rotate_half
from torch_rms_norm import RMSNorm


class GemmaRMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * (1 + weight)."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(0.2 * torch.randn(hidden_size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


def layer_window(config: dict, index: int):
    """The sliding window of block ``index`` as each family's config sets it."""
    family = config["family"]
    if family == "qwen2":
        use = config.get("use_sliding_window", False) and index >= config.get("max_window_layers", 28)
        return config.get("sliding_window") if use else None
    if family == "gemma2":
        return config.get("sliding_window") if index % 2 == 0 else None
    return config.get("sliding_window")


class Attention(nn.Module):
    """Qwen2Attention (biased q/k/v), GemmaAttention, Gemma2Attention (query_pre_attn_scalar,
    soft-capped scores), Phi3Attention (one fused qkv_proj) and MixtralAttention (Llama's)."""

    def __init__(self, config: dict, index: int):
        super().__init__()
        e, h = config["hidden_size"], config["num_attention_heads"]
        g = config.get("num_key_value_heads") or h
        d = config.get("head_dim") or e // h
        self.h, self.g, self.d = h, g, d
        family = config["family"]
        self.fused = family == "phi3"
        if self.fused:
            self.qkv_proj = nn.Linear(e, (h + 2 * g) * d, bias=False)
        else:
            bias = family == "qwen2"
            self.q_proj = nn.Linear(e, h * d, bias=bias)
            self.k_proj = nn.Linear(e, g * d, bias=bias)
            self.v_proj = nn.Linear(e, g * d, bias=bias)
        self.o_proj = nn.Linear(h * d, e, bias=False)
        self.scaling = config.get("query_pre_attn_scalar", d) ** -0.5 if family == "gemma2" else d ** -0.5
        self.softcap = config.get("attn_logit_softcapping") if family == "gemma2" else None
        self.sliding_window = layer_window(config, index)

    def forward(self, x, cos, sin, key_padding=None):
        n, t, _ = x.shape
        if self.fused:
            qkv = self.qkv_proj(x)
            q, k, v = qkv.split([self.h * self.d, self.g * self.d, self.g * self.d], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(n, t, self.h, self.d).transpose(1, 2)
        k = k.view(n, t, self.g, self.d).transpose(1, 2)
        v = v.view(n, t, self.g, self.d).transpose(1, 2)
        r = cos.shape[-1]                       # Phi-3's partial rotary: the first r features turned
        q_turned, k_turned = apply_rotary_pos_emb(q[..., :r], k[..., :r], cos, sin)
        q, k = torch.cat((q_turned, q[..., r:]), dim=-1), torch.cat((k_turned, k[..., r:]), dim=-1)
        k, v = repeat_kv(k, self.h // self.g), repeat_kv(v, self.h // self.g)
        scores = q @ k.transpose(2, 3) * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        positions = torch.arange(t)
        allowed = positions[None, :] <= positions[:, None]
        if self.sliding_window is not None:
            allowed = allowed & (positions[:, None] - positions[None, :] < self.sliding_window)
        allowed = allowed[None, None]
        if key_padding is not None:
            allowed = allowed & key_padding[:, None, None, :].bool()
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(n, t, -1))


class MLP(nn.Module):
    """The gated MLP: separate gate_proj / up_proj (Llama, Qwen2, Gemma with the tanh GELU) or
    Phi-3's fused gate_up_proj (gate rows first)."""

    def __init__(self, config: dict):
        super().__init__()
        e, f = config["hidden_size"], config["intermediate_size"]
        self.fused = config["family"] == "phi3"
        if self.fused:
            self.gate_up_proj = nn.Linear(e, 2 * f, bias=False)
        else:
            self.gate_proj = nn.Linear(e, f, bias=False)
            self.up_proj = nn.Linear(e, f, bias=False)
        self.down_proj = nn.Linear(f, e, bias=False)
        gemma = config["family"].startswith("gemma")
        self.act = (lambda z: nn.functional.gelu(z, approximate="tanh")) if gemma else nn.functional.silu

    def forward(self, x):
        if self.fused:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self.act(gate) * up)


class MixtralExpert(nn.Module):
    def __init__(self, e: int, f: int):
        super().__init__()
        self.w1 = nn.Linear(e, f, bias=False)
        self.w2 = nn.Linear(f, e, bias=False)
        self.w3 = nn.Linear(e, f, bias=False)

    def forward(self, x):
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class MixtralSparseMoeBlock(nn.Module):
    """Hugging Face's: softmax router, top-k, renormalized weights, index_add of each expert's rows."""

    def __init__(self, config: dict):
        super().__init__()
        e, f = config["hidden_size"], config["intermediate_size"]
        self.top_k, self.num_experts = config["num_experts_per_tok"], config["num_local_experts"]
        self.gate = nn.Linear(e, self.num_experts, bias=False)
        self.experts = nn.ModuleList(MixtralExpert(e, f) for _ in range(self.num_experts))

    def forward(self, x):
        n, t, e = x.shape
        flat = x.view(-1, e)
        router_logits = self.gate(flat)
        weights = torch.softmax(router_logits, dim=1)
        weights, selected = torch.topk(weights, self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        expert_mask = nn.functional.one_hot(selected, num_classes=self.num_experts).permute(2, 1, 0)
        for index, expert in enumerate(self.experts):
            slot, rows = torch.where(expert_mask[index])
            out.index_add_(0, rows, expert(flat[rows]) * weights[rows, slot, None])
        return out.view(n, t, e), router_logits


def load_balancing_loss_func(gate_logits, num_experts: int, top_k: int, attention_mask=None):
    """Hugging Face's load-balancing loss over the router logits of every block."""
    logits = torch.cat(list(gate_logits), dim=0)
    routing_weights = torch.softmax(logits, dim=-1)
    _, selected = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = nn.functional.one_hot(selected, num_experts).to(logits.dtype)
    if attention_mask is None:
        tokens_per_expert = expert_mask.mean(dim=0)
        router_prob_per_expert = routing_weights.mean(dim=0)
    else:
        layers = logits.shape[0] // attention_mask.numel()
        real = attention_mask.reshape(-1).to(logits.dtype).repeat(layers)
        tokens_per_expert = (expert_mask * real[:, None, None]).sum(0) / real.sum()
        router_prob_per_expert = (routing_weights * real[:, None]).sum(0) / real.sum()
    return (tokens_per_expert * router_prob_per_expert[None]).sum() * num_experts


class DecoderLayer(nn.Module):
    def __init__(self, config: dict, index: int):
        super().__init__()
        e, eps = config["hidden_size"], config["rms_norm_eps"]
        norm = GemmaRMSNorm if config["family"].startswith("gemma") else RMSNorm
        self.self_attn = Attention(config, index)
        if config["family"] == "mixtral":
            self.block_sparse_moe = MixtralSparseMoeBlock(config)
        else:
            self.mlp = MLP(config)
        self.input_layernorm = norm(e, eps)
        self.post_attention_layernorm = norm(e, eps)
        self.sandwich = config["family"] == "gemma2"
        if self.sandwich:
            self.pre_feedforward_layernorm = norm(e, eps)
            self.post_feedforward_layernorm = norm(e, eps)

    def feed_forward(self, x):
        if hasattr(self, "block_sparse_moe"):
            y, self.router_logits = self.block_sparse_moe(x)
            return y
        return self.mlp(x)

    def forward(self, x, cos, sin, key_padding=None):
        attended = self.self_attn(self.input_layernorm(x), cos, sin, key_padding)
        if self.sandwich:
            x = x + self.post_attention_layernorm(attended)
            return x + self.post_feedforward_layernorm(self.feed_forward(self.pre_feedforward_layernorm(x)))
        x = x + attended
        return x + self.feed_forward(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e = config["hidden_size"]
        self.embed_tokens = nn.Embedding(config["vocab_size"], e)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config["num_hidden_layers"]))
        gemma = config["family"].startswith("gemma")
        self.norm = (GemmaRMSNorm if gemma else RMSNorm)(e, config["rms_norm_eps"])
        self.normalizer = math.sqrt(e) if gemma else None
        head_dim = config.get("head_dim") or e // config["num_attention_heads"]
        scaling = config.get("rope_scaling")
        if scaling is not None and "original_max_position_embeddings" in config:
            scaling = {**scaling, "original_max_position_embeddings": config["original_max_position_embeddings"]}
        rotary_dims = int(head_dim * config.get("partial_rotary_factor", 1.0))
        self.rotary_emb = LlamaRotaryEmbedding(rotary_dims, config.get("rope_theta", 10000.0), scaling,
                                               config.get("max_position_embeddings", 2048))

    def forward(self, ids, key_padding=None):
        x = self.embed_tokens(ids)
        if self.normalizer is not None:
            x = x * torch.tensor(self.normalizer, dtype=x.dtype)
        cos, sin = self.rotary_emb(x, torch.arange(ids.shape[1]))
        for layer in self.layers:
            x = layer(x, cos, sin, key_padding)
        return self.norm(x)


class DecoderForCausalLM(nn.Module):
    """``config``: the Hugging Face config fields of the family named by config['family']
    ('qwen2', 'gemma', 'gemma2', 'phi3' or 'mixtral')."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.model = DecoderModel(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        if config.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight
        self.final_softcap = config.get("final_logit_softcapping") if config["family"] == "gemma2" else None

    def forward(self, ids, key_padding=None):
        logits = self.lm_head(self.model(ids, key_padding))
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def aux_loss(self, key_padding=None):
        """The load-balancing loss of the last call (Mixtral)."""
        logits = [layer.router_logits for layer in self.model.layers]
        return load_balancing_loss_func(logits, self.config["num_local_experts"], self.config["num_experts_per_tok"],
                                        key_padding)


class GPTNeoXAttention(nn.Module):
    """Fused query_key_value viewed as (N, T, heads, 3 head_dim); partial rotary on the first
    rotary_ndims features of each head."""

    def __init__(self, config: dict):
        super().__init__()
        e, self.h = config["hidden_size"], config["num_attention_heads"]
        self.d = e // self.h
        self.rotary_ndims = int(self.d * config["rotary_pct"])
        self.query_key_value = nn.Linear(e, 3 * e)
        self.dense = nn.Linear(e, e)

    def forward(self, x, cos, sin, key_padding=None):
        n, t, _ = x.shape
        qkv = self.query_key_value(x).view(n, t, self.h, 3 * self.d).permute(0, 2, 1, 3)
        q, k, v = qkv[..., :self.d], qkv[..., self.d:2 * self.d], qkv[..., 2 * self.d:]
        r = self.rotary_ndims
        q = torch.cat((q[..., :r] * cos + rotate_half(q[..., :r]) * sin, q[..., r:]), dim=-1)
        k = torch.cat((k[..., :r] * cos + rotate_half(k[..., :r]) * sin, k[..., r:]), dim=-1)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.d)
        allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))[None, None]
        if key_padding is not None:
            allowed = allowed & key_padding[:, None, None, :].bool()
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return self.dense(out.transpose(1, 2).reshape(n, t, -1))


class GPTNeoXMLP(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config["hidden_size"], config["intermediate_size"])
        self.dense_4h_to_h = nn.Linear(config["intermediate_size"], config["hidden_size"])

    def forward(self, x):
        return self.dense_4h_to_h(nn.functional.gelu(self.dense_h_to_4h(x)))


def _layer_norm(e: int, eps: float) -> nn.LayerNorm:
    norm = nn.LayerNorm(e, eps=eps)
    with torch.no_grad():
        norm.weight.add_(0.2 * torch.randn(e))
        norm.bias.add_(0.1 * torch.randn(e))
    return norm


class GPTNeoXLayer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-5)
        self.use_parallel_residual = config.get("use_parallel_residual", True)
        self.input_layernorm = _layer_norm(e, eps)
        self.post_attention_layernorm = _layer_norm(e, eps)
        self.attention = GPTNeoXAttention(config)
        self.mlp = GPTNeoXMLP(config)

    def forward(self, x, cos, sin, key_padding=None):
        attended = self.attention(self.input_layernorm(x), cos, sin, key_padding)
        if self.use_parallel_residual:
            return x + attended + self.mlp(self.post_attention_layernorm(x))
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x))


class GPTNeoXModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e = config["hidden_size"]
        self.embed_in = nn.Embedding(config["vocab_size"], e)
        self.layers = nn.ModuleList(GPTNeoXLayer(config) for _ in range(config["num_hidden_layers"]))
        self.final_layer_norm = _layer_norm(e, config.get("layer_norm_eps", 1e-5))
        rotary_ndims = int(e // config["num_attention_heads"] * config["rotary_pct"])
        self.rotary_emb = LlamaRotaryEmbedding(rotary_ndims, config.get("rotary_emb_base", 10000.0))

    def forward(self, ids, key_padding=None):
        x = self.embed_in(ids)
        cos, sin = self.rotary_emb(x, torch.arange(ids.shape[1]))
        for layer in self.layers:
            x = layer(x, cos, sin, key_padding)
        return self.final_layer_norm(x)


class GPTNeoXForCausalLM(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.gpt_neox = GPTNeoXModel(config)
        self.embed_out = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)

    def forward(self, ids, key_padding=None):
        return self.embed_out(self.gpt_neox(ids, key_padding))
