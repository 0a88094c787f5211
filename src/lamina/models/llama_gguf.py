"""Llama models in llama.cpp's GGUF files: :func:`load_gguf_llama` builds a :class:`Llama` from
a file's ``llama.*`` metadata and loads its (possibly quantized) weights;
:func:`save_gguf_llama` writes a :class:`Llama` as llama.cpp's converter would.

llama.cpp names the weights ``token_embd``, ``blk.N.attn_norm``, ``blk.N.attn_q`` / ``attn_k``
/ ``attn_v`` / ``attn_output``, ``blk.N.ffn_norm``, ``blk.N.ffn_gate`` / ``ffn_up`` /
``ffn_down``, ``output_norm`` and ``output`` (absent when the head is tied to the token
table), each stored as PyTorch's ``Linear`` weight (out, in) in NumPy order.

Rotary layout: Hugging Face's Llama turns feature j of a head with feature j + d/2 (rotate
half), llama.cpp's with feature j + 1 (adjacent pairs). llama.cpp's converter
(``convert_hf_to_gguf.py``, ``LlamaModel.permute``) therefore reorders the rows of each
head of ``q_proj`` (and ``k_proj``, with the key/value heads) from [x_0 .. x_{d/2-1},
x_{d/2} .. x_{d-1}] to [x_0, x_{d/2}, x_1, x_{d/2+1}, ...]:

    W.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(heads d, in)

:func:`interleave_rotary_rows` applies it and :func:`deinterleave_rotary_rows` undoes it.

Llama 3.1's frequency scaling reaches GGUF as a tensor ``rope_freqs`` of divisors of the
frequencies; the loader recognises Llama 3.1's 'llama3' scaling in it (and otherwise divides
by the stored factors exactly, as a 'longrope' scaling with equal short and long factors).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from lamina import functional as F
from lamina.io.gguf import GGUFFile, GGUFValue, GGUFValueType, read_gguf, write_gguf
from lamina.io.gguf_quants import BLOCK_SIZES, ggml_type
from lamina.models.llama import Llama, load_hf_llama_state_dict

__all__ = ["deinterleave_rotary_rows", "interleave_rotary_rows", "llama_config_from_gguf", "load_gguf_llama",
           "save_gguf_llama"]

ARCHITECTURE = "llama"
_LAYER_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q": "self_attn.q_proj",
                "attn_k": "self_attn.k_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
_LLAMA3_GUESS = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}


def interleave_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotate-half rows of a q or k projection (heads d, ...) in llama.cpp's
    adjacent-pair order: within each head, row 2i + s comes from row s d/2 + i."""
    weight = np.asarray(weight)
    return weight.reshape(heads, 2, -1, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def deinterleave_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of :func:`interleave_rotary_rows`: llama.cpp's rows back in Hugging Face's order."""
    weight = np.asarray(weight)
    return weight.reshape(heads, -1, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# -- reading ----------------------------------------------------------------------------------

def _as_file(source) -> GGUFFile:
    return source if isinstance(source, GGUFFile) else read_gguf(source)


def _decimal(file: GGUFFile, key: str) -> float:
    """A float field as the shortest decimal that its float32 rounds from (1e-05, not
    9.99999974738e-06): the value the converter was given."""
    field = file.fields[key]
    return float(str(np.float32(field.value))) if field.type == GGUFValueType.FLOAT32 else float(field.value)


def _rope_scaling(file: GGUFFile, prefix: str, head_dim: int, theta: float, context: int) -> dict | None:
    who = f"load_gguf_llama: {file.path}"
    kind = file.metadata.get(f"{prefix}rope.scaling.type", "none")
    factor_key = f"{prefix}rope.scaling.factor"
    if kind == "none" and f"{prefix}rope.scale_linear" in file.metadata:      # older files
        kind, factor_key = "linear", f"{prefix}rope.scale_linear"
    if "rope_freqs.weight" in file.tensors:
        if kind != "none":
            raise ValueError(f"{who}: both a rope_freqs tensor and rope.scaling.type {kind!r}")
        return _scaling_from_divisors(file.tensor("rope_freqs.weight").astype(np.float64), head_dim, theta, context,
                                      who)
    if kind == "none":
        return None
    if kind in ("linear", "yarn"):
        if factor_key not in file.metadata:
            raise KeyError(f"{who}: rope.scaling.type {kind!r} needs the metadata key {factor_key!r}")
        scaling = {"rope_type": kind, "factor": _decimal(file, factor_key)}
        original = file.metadata.get(f"{prefix}rope.scaling.original_context_length")
        if kind == "yarn" and original is not None:
            scaling["original_max_position_embeddings"] = int(original)
        return scaling
    raise NotImplementedError(f"{who}: rope.scaling.type {kind!r} is not supported (none, linear, yarn)")


def _scaling_from_divisors(divisors: np.ndarray, head_dim: int, theta: float, context: int, who: str) -> dict:
    """Llama 3.1's 'llama3' scaling when it gives ``divisors`` (to float32 precision), else the
    divisors themselves as a 'longrope' scaling with equal short and long factors."""
    if divisors.shape != (head_dim // 2,):
        raise ValueError(f"{who}: rope_freqs holds {divisors.shape} values, expected head_dim / 2 = {head_dim // 2}")
    plain = F.rotary_frequencies(head_dim, theta)
    guess = {**_LLAMA3_GUESS, "factor": float(divisors.max())}
    if guess["factor"] > 1 and np.allclose(plain / F.rotary_frequencies(head_dim, theta, guess), divisors,
                                           rtol=1e-6, atol=0):
        return guess
    factors = divisors.tolist()
    return {"rope_type": "longrope", "short_factor": factors, "long_factor": factors, "attention_factor": 1.0,
            "original_max_position_embeddings": context}


def llama_config_from_gguf(source) -> dict:
    """:class:`Llama`'s arguments from a GGUF file's (path or :class:`GGUFFile`) ``llama.*``
    metadata: context_length, embedding_length, block_count, feed_forward_length,
    attention.head_count, attention.layer_norm_rms_epsilon (required), attention.head_count_kv,
    rope.freq_base, attention.key_length, rope.dimension_count, rope scaling; the vocabulary
    from the rows of ``token_embd``, the head tied when ``output`` is absent. A missing
    required key raises a KeyError naming the file and the key."""
    file = _as_file(source)
    who = f"load_gguf_llama: {file.path}"
    architecture = file.metadata.get("general.architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(f"{who}: general.architecture is {architecture!r}; only {ARCHITECTURE!r} files hold a Llama")
    prefix = f"{ARCHITECTURE}."

    def required(key: str):
        if prefix + key not in file.metadata:
            raise KeyError(f"{who}: missing metadata key {prefix + key!r}")
        value = file.metadata[prefix + key]
        if isinstance(value, list):
            raise NotImplementedError(f"{who}: {prefix + key} varies by layer ({value}); not supported")
        return value

    def optional(key: str, default):
        return required(key) if prefix + key in file.metadata else default

    if "token_embd.weight" not in file.tensors:
        raise KeyError(f"{who}: missing tensor 'token_embd.weight'")
    hidden, heads = int(required("embedding_length")), int(required("attention.head_count"))
    vocab = file.tensors["token_embd.weight"].shape[0]
    if int(optional("vocab_size", vocab)) != vocab:
        raise ValueError(f"{who}: {prefix}vocab_size {required('vocab_size')} differs from token_embd's {vocab} rows")
    head_dim = int(optional("attention.key_length", hidden // heads))
    if int(optional("attention.value_length", head_dim)) != head_dim:
        raise NotImplementedError(f"{who}: attention.value_length differs from attention.key_length {head_dim}")
    if int(optional("rope.dimension_count", head_dim)) != head_dim:
        raise NotImplementedError(f"{who}: rope.dimension_count {required('rope.dimension_count')} rotates only part "
                                  f"of each head of {head_dim} features; not supported")
    context = int(required("context_length"))
    theta = _decimal(file, prefix + "rope.freq_base") if prefix + "rope.freq_base" in file.metadata else 10000.0
    required("attention.layer_norm_rms_epsilon")
    config = {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": int(required("feed_forward_length")),
              "num_hidden_layers": int(required("block_count")), "num_attention_heads": heads,
              "num_key_value_heads": int(optional("attention.head_count_kv", heads)),
              "max_position_embeddings": context,
              "rms_norm_eps": _decimal(file, prefix + "attention.layer_norm_rms_epsilon"), "rope_theta": theta,
              "tie_word_embeddings": "output.weight" not in file.tensors,
              "attention_bias": "blk.0.attn_q.bias" in file.tensors, "mlp_bias": "blk.0.ffn_up.bias" in file.tensors,
              "rope_scaling": _rope_scaling(file, prefix, head_dim, theta, context)}
    if head_dim != hidden // heads:
        config["head_dim"] = head_dim
    return config


def _hf_arrays(file: GGUFFile, model: Llama) -> dict[str, np.ndarray]:
    """The file's weights under Hugging Face's names, q and k rows back in rotate-half order."""
    who = f"load_gguf_llama: {file.path}"
    names = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight"}
    if not model.tie_word_embeddings:
        names["output.weight"] = "lm_head.weight"
    kinds = ("weight", "bias") if model.attention_bias or model.mlp_bias else ("weight",)
    for i in range(model.num_hidden_layers):
        for ours, theirs in _LAYER_NAMES.items():
            for kind in kinds:
                if kind == "weight" or f"blk.{i}.{ours}.bias" in file.tensors:
                    names[f"blk.{i}.{ours}.{kind}"] = f"layers.{i}.{theirs}.{kind}"
    missing = sorted(name for name in names if name not in file.tensors)
    unexpected = sorted(set(file.tensors) - set(names) - {"rope_freqs.weight"})
    if missing or unexpected:
        raise KeyError(f"{who}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
                       f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    arrays = {}
    for name, hf_name in names.items():
        array = file.tensor(name)
        if ".attn_q." in name:
            array = deinterleave_rotary_rows(array, model.num_attention_heads)
        elif ".attn_k." in name:
            array = deinterleave_rotary_rows(array, model.num_key_value_heads)
        arrays[hf_name] = array
    return arrays


def load_gguf_llama(source, **options) -> Llama:
    """A :class:`Llama` built from a GGUF file (a path or a :class:`GGUFFile`) with
    :func:`llama_config_from_gguf` (``options`` override its arguments, e.g. ``name``) and
    holding the file's weights, dequantized and cast to the default dtype (the q and k rows
    back in Hugging Face's order)."""
    file = _as_file(source)
    model = Llama(**{**llama_config_from_gguf(file), **options})
    load_hf_llama_state_dict(model, _hf_arrays(file, model))
    return model


# -- writing ----------------------------------------------------------------------------------

def _metadata(model: Llama) -> dict:
    u32 = GGUFValueType.UINT32

    def f32(value: float) -> GGUFValue:
        return GGUFValue(float(value), GGUFValueType.FLOAT32)

    prefix = f"{ARCHITECTURE}."
    metadata = {"general.architecture": ARCHITECTURE, "general.name": model.name or "llama",
                prefix + "vocab_size": GGUFValue(model.vocab_size, u32),
                prefix + "context_length": GGUFValue(model.max_position_embeddings, u32),
                prefix + "embedding_length": GGUFValue(model.hidden_size, u32),
                prefix + "block_count": GGUFValue(model.num_hidden_layers, u32),
                prefix + "feed_forward_length": GGUFValue(model.intermediate_size, u32),
                prefix + "rope.dimension_count": GGUFValue(model.head_dim, u32),
                prefix + "attention.head_count": GGUFValue(model.num_attention_heads, u32),
                prefix + "attention.head_count_kv": GGUFValue(model.num_key_value_heads, u32),
                prefix + "rope.freq_base": f32(model.rope_theta),
                prefix + "attention.layer_norm_rms_epsilon": f32(model.rms_norm_eps)}
    if model.head_dim != model.hidden_size // model.num_attention_heads:
        metadata[prefix + "attention.key_length"] = GGUFValue(model.head_dim, u32)
        metadata[prefix + "attention.value_length"] = GGUFValue(model.head_dim, u32)
    return metadata


def _scaling_entries(model: Llama, metadata: dict, tensors: dict) -> None:
    scaling = model.rope_scaling
    kind = None if scaling is None else scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return
    if kind == "linear":
        metadata[f"{ARCHITECTURE}.rope.scaling.type"] = "linear"
        metadata[f"{ARCHITECTURE}.rope.scaling.factor"] = GGUFValue(float(scaling["factor"]), GGUFValueType.FLOAT32)
    elif kind == "llama3":
        plain = F.rotary_frequencies(model.head_dim, model.rope_theta)
        scaled = F.rotary_frequencies(model.head_dim, model.rope_theta, scaling, model.max_position_embeddings)
        tensors["rope_freqs.weight"] = (plain / scaled).astype(np.float32)
    else:
        raise NotImplementedError(f"save_gguf_llama: rope_scaling of type {kind!r} has no GGUF form here "
                                  "(linear and llama3 do)")


def save_gguf_llama(model: Llama, path: str | os.PathLike, weight_type="F32", metadata: Mapping | None = None) -> None:
    """Write ``model`` as a GGUF file in llama.cpp's layout (its names, ``llama.*`` keys, q and
    k rows interleaved by :func:`interleave_rotary_rows`). ``weight_type`` (a ggml type name such as
    'F32', 'F16', 'BF16', 'Q8_0', 'Q4_0') stores the matrices; the 1-D weights (norms, biases)
    and matrices whose rows are not a whole number of the type's blocks stay F32, as
    llama.cpp's quantizer leaves them. ``metadata`` adds keys (a tokenizer's, say)."""
    if not isinstance(model, Llama):
        raise TypeError(f"save_gguf_llama: expected a Llama model, got {type(model).__name__}")
    if model.sliding_window is not None:
        raise ValueError(f"save_gguf_llama: {model._label()} has a sliding window, which the llama "
                         "architecture of GGUF cannot record")
    if not model.built:
        model.build((None, 1))
    kind = ggml_type(weight_type)
    state = {key: np.asarray(value, dtype=np.float32) for key, value in model.state_dict().items()}
    tensors = {"token_embd.weight": state["embed_tokens.weight"]}
    q_rows = model.num_attention_heads * model.head_dim
    kv_rows = model.num_key_value_heads * model.head_dim
    for i in range(model.num_hidden_layers):
        layer, block = f"layers.{i}.", f"blk.{i}."
        kinds = ("weight", "bias") if model.attention_bias else ("weight",)
        for suffix in kinds:
            joined = state[f"{layer}self_attn.in_{suffix}"].T      # (q + k + v rows, in), or (rows,)
            q, k, v = np.split(joined, [q_rows, q_rows + kv_rows])
            tensors[f"{block}attn_q.{suffix}"] = interleave_rotary_rows(q, model.num_attention_heads)
            tensors[f"{block}attn_k.{suffix}"] = interleave_rotary_rows(k, model.num_key_value_heads)
            tensors[f"{block}attn_v.{suffix}"] = v
            tensors[f"{block}attn_output.{suffix}"] = state[f"{layer}self_attn.out_{suffix}"].T
        tensors[f"{block}attn_norm.weight"] = state[f"{layer}input_layernorm.weight"]
        tensors[f"{block}ffn_norm.weight"] = state[f"{layer}post_attention_layernorm.weight"]
        for ours, theirs in (("ffn_gate", "gate_proj"), ("ffn_up", "up_proj"), ("ffn_down", "down_proj")):
            tensors[f"{block}{ours}.weight"] = state[f"{layer}mlp.{theirs}.weight"].T
            if model.mlp_bias:
                tensors[f"{block}{ours}.bias"] = state[f"{layer}mlp.{theirs}.bias"]
    tensors["output_norm.weight"] = state["norm.weight"]
    if not model.tie_word_embeddings:
        tensors["output.weight"] = state["lm_head.weight"].T
    fields = _metadata(model)
    _scaling_entries(model, fields, tensors)
    fields.update(metadata or {})
    block = BLOCK_SIZES[kind][0]
    types = {name: kind for name, array in tensors.items() if array.ndim == 2 and array.shape[-1] % block == 0}
    write_gguf(path, fields, tensors, types=types)
