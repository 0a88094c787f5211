"""The model-specific forward passes of :class:`~lamina.text.serving.LLMEngine`: one small
inference-only runner per model family, reading the weights of a built lamina model (the
model classes are not changed). Each runner gives the cache geometry (``num_layers``,
``kv_heads``, ``head_dim``), ``dtype``, ``max_positions`` and
``forward(tokens, positions, attend)`` -> scores (T, vocab), where ``attend(layer, q, k, v,
scale)`` stores the new keys and values (T, h_kv, d) and returns the attention output (T, h, d).

GPT-2::

    x = W_te[token] + W_pe[position]
    per block: x += attention(ln_1(x)) over the paged cache;  x += c_proj(gelu_tanh(c_fc(ln_2(x))))
    logits = ln_f(x) W_te^T

Llama (and Mistral, Qwen2, built the same way)::

    x = E[token]
    per block: x += o_proj(attention(rope(q), rope(k), v)),  (q, k, v) = qkv_proj(rms(x))   (GQA)
               x += down_proj(silu(gate_proj(m)) * up_proj(m)),  m = rms(x)
    logits = rms(x) lm_head  (E^T when tied)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["runner_for"]


def _arrays(*params) -> tuple:
    return tuple(None if p is None else np.asarray(p.data) for p in params)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _affine(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return x @ weight if bias is None else x @ weight + bias


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary positions, rotate-half pairing: (x1 cos - x2 sin, x1 sin + x2 cos) on (T, h, d)."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def _check_built(model) -> None:
    if not getattr(model, "built", False):
        raise ValueError("LLMEngine: build the model first (e.g. model.build((None, 1)))")


class _GPT2Runner:
    """GPT-2's forward over its raw arrays, read once."""

    def __init__(self, model):
        _check_built(model)
        self.wte, self.wpe = _arrays(model.wte.weight, model.wpe.weight)
        self.dtype, self.max_positions, self.context_name = self.wte.dtype, model.n_positions, "n_positions"
        self.heads = self.kv_heads = model.n_head
        self.head_dim = model.n_embd // model.n_head
        self.ln_f = (*_arrays(model.ln_f.weight, model.ln_f.bias), model.ln_f.eps)
        self.blocks = []
        for block in model.h:
            attn = block.self_attention
            self.blocks.append({
                "ln_1": (*_arrays(block.norm1.weight, block.norm1.bias), block.norm1.eps),
                "qkv": _arrays(attn.in_weight, attn.in_bias),
                "proj": _arrays(attn.out_weight, attn.out_bias),
                "ln_2": (*_arrays(block.norm2.weight, block.norm2.bias), block.norm2.eps),
                "fc": _arrays(block.linear1.weight, block.linear1.bias),
                "mlp_proj": _arrays(block.linear2.weight, block.linear2.bias),
            })
        self.num_layers = len(self.blocks)

    def forward(self, tokens: np.ndarray, positions: np.ndarray, attend) -> np.ndarray:
        x = self.wte[tokens] + self.wpe[positions]
        t, scale = len(tokens), 1.0 / math.sqrt(self.head_dim)
        for layer, block in enumerate(self.blocks):
            qkv = _affine(_layer_norm(x, *block["ln_1"]), *block["qkv"])
            q, k, v = (part.reshape(t, self.heads, self.head_dim) for part in np.split(qkv, 3, axis=-1))
            x = x + _affine(attend(layer, q, k, v, scale).reshape(t, -1), *block["proj"])
            hidden = _gelu_tanh(_affine(_layer_norm(x, *block["ln_2"]), *block["fc"]))
            x = x + _affine(hidden, *block["mlp_proj"])
        return _layer_norm(x, *self.ln_f) @ self.wte.T


_LLAMA_LAYOUT = ("Llama", "Mistral", "Qwen2")
"""The families that are exactly Llama's layout (Mistral adds a sliding window, Qwen2 q/k/v biases)."""

_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def _bias(layer, name: str = "bias"):
    return getattr(layer, name, None) if getattr(layer, "use_bias", True) else None


class _LlamaRunner:
    """Llama's forward over its raw arrays, read once; refuses what it cannot run."""

    def __init__(self, model):
        name = type(model).__name__
        if name not in _LLAMA_LAYOUT:
            raise TypeError(f"LLMEngine: {name} is built on Llama but changes its layout; supported are "
                            f"{', '.join(_LLAMA_LAYOUT)}")
        _check_built(model)
        self.max_positions, self.context_name = model.max_position_embeddings, "max_position_embeddings"
        self.heads, self.kv_heads = model.num_attention_heads, model.num_key_value_heads
        self.head_dim = model.head_dim
        self.embed = np.asarray(model.embed_tokens.weight.data)
        self.dtype = self.embed.dtype
        self.head = self.embed.T if model.tie_word_embeddings else np.asarray(model.lm_head.weight.data)
        self.norm = (np.asarray(model.norm.weight.data), model.norm.eps)
        self.blocks = [self._block(model, name, index, layer) for index, layer in enumerate(model.layers)]
        self.num_layers = len(self.blocks)
        attn = model.layers[0].self_attn
        self.scale = attn.scale or 1.0 / math.sqrt(self.head_dim)
        self.frequencies, self.attention_factor = np.asarray(attn.rotary_frequencies), attn.rotary_attention_factor

    def _block(self, model, name: str, index: int, layer) -> dict:
        attn, mlp = layer.self_attn, layer.mlp
        missing = []
        if attn.window is not None and attn.window < self.max_positions:
            missing.append(f"a sliding window of {attn.window} keys (block {index})")
        scaling = (attn.rotary_scaling or {}).get("rope_type", (attn.rotary_scaling or {}).get("type"))
        if scaling in _LENGTH_DEPENDENT_ROPE:
            missing.append(f"{scaling!r} rope scaling, whose frequencies change with the length")
        if attn.rotary_dims != attn.head_dim or attn.logit_softcap is not None or attn.alibi:
            missing.append("partial rotary features, logit soft-capping or ALiBi")
        if mlp.hidden_act != "silu":
            missing.append(f"the {mlp.hidden_act!r} MLP activation")
        if missing:
            raise ValueError(f"LLMEngine: cannot serve this {name}: the paged forward lacks {'; '.join(missing)}")
        norms = [(np.asarray(n.weight.data), n.eps) for n in (layer.input_layernorm, layer.post_attention_layernorm)]
        return {"attn_norm": norms[0], "mlp_norm": norms[1],
                "qkv": _arrays(attn.in_weight, _bias(attn, "in_bias")),
                "o": _arrays(attn.out_weight, getattr(attn, "out_bias", None) if attn.use_out_bias else None),
                "gate": _arrays(mlp.gate_proj.weight, _bias(mlp.gate_proj)),
                "up": _arrays(mlp.up_proj.weight, _bias(mlp.up_proj)),
                "down": _arrays(mlp.down_proj.weight, _bias(mlp.down_proj))}

    def forward(self, tokens: np.ndarray, positions: np.ndarray, attend) -> np.ndarray:
        x = self.embed[tokens]
        t, h, g, d = len(tokens), self.heads, self.kv_heads, self.head_dim
        angles = np.asarray(positions, dtype=np.float64)[:, None] * self.frequencies
        cos = (self.attention_factor * np.cos(angles)).astype(self.dtype)[:, None, :]
        sin = (self.attention_factor * np.sin(angles)).astype(self.dtype)[:, None, :]
        for layer, block in enumerate(self.blocks):
            qkv = _affine(_rms_norm(x, *block["attn_norm"]), *block["qkv"])
            q = _rotate(qkv[:, :h * d].reshape(t, h, d), cos, sin)
            k = _rotate(qkv[:, h * d:(h + g) * d].reshape(t, g, d), cos, sin)
            v = qkv[:, (h + g) * d:].reshape(t, g, d)
            x = x + _affine(attend(layer, q, k, v, self.scale).reshape(t, -1), *block["o"])
            m = _rms_norm(x, *block["mlp_norm"])
            x = x + _affine(_silu(_affine(m, *block["gate"])) * _affine(m, *block["up"]), *block["down"])
        return _rms_norm(x, *self.norm) @ self.head


def runner_for(model):
    """The runner of ``model``'s family: GPT-2, or Llama / Mistral / Qwen2; else a TypeError."""
    families = [cls.__name__ for cls in type(model).__mro__]
    if "GPT2" in families:
        return _GPT2Runner(model)
    if "Llama" in families:
        return _LlamaRunner(model)
    raise TypeError(f"LLMEngine: supports lamina's GPT2 and Llama-layout models ({', '.join(_LLAMA_LAYOUT)}), "
                    f"got {type(model).__name__}")
