"""GPT-NeoX (Black et al., "GPT-NeoX-20B", 2022) and the Pythia suite (Biderman et al., 2023)
in the layout of Hugging Face's ``GPTNeoXForCausalLM``:

    h_0 = embed_in[x]                                                (no position table)
    h_l = h_{l-1} + attention(input_layernorm(h_{l-1})) + mlp(post_attention_layernorm(h_{l-1}))
                                                 (use_parallel_residual; else one after the other)
    mlp(x) = dense_4h_to_h(gelu(dense_h_to_4h(x)))
    logits = embed_out(final_layer_norm(h_L))                        (untied)

LayerNorms and biased projections throughout. Rotary positions turn only the first
r = int(head_dim rotary_pct) features of each head (partial rotary, rotate-half pairing, base
``rotary_emb_base``), the rest passing unturned. The checkpoint's fused
``attention.query_key_value`` holds, per head, that head's query, key and value rows: its
rows are laid out [heads, 3, head_dim], which :func:`load_hf_gpt_neox_state_dict` sorts into
lamina's [queries | keys | values] columns.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.decoder_lm import DecoderLM
from lamina.models.hf_weights import HFWeight, build_children, copied, linear
from lamina.models.llama import load_hf_decoder_weights
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.sample_norm import LayerNorm

__all__ = ["GPTNeoX", "GPTNeoXLayer", "GPTNeoXMLP", "GPT_NEOX_CONFIGS", "gpt_neox", "gpt_neox_parameter_count",
           "load_hf_gpt_neox_state_dict"]

_PYTHIA = {"vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25}

GPT_NEOX_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 256, "rotary_pct": 0.25},
    "pythia_70m": {**_PYTHIA, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6,
                   "num_attention_heads": 8},
    "pythia_160m": {**_PYTHIA, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12},
}
"""Hugging Face configurations: a small 'tiny' one, pythia-70m and pythia-160m."""

_ACTIVATIONS = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


def _rotary_dims(head_dim: int, rotary_pct: float) -> int:
    return int(head_dim * rotary_pct)


@register_layer
class GPTNeoXMLP(Module):
    """GPT-NeoX's feed-forward network, dense_4h_to_h(act(dense_h_to_4h(x))), biased Dense
    layers of ``intermediate_size`` hidden units, ``hidden_act`` 'gelu' (exact) by default."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "gelu",
                 initializer_range: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        if hidden_act not in _ACTIVATIONS:
            raise ValueError(f"GPTNeoXMLP: hidden_act must be one of {tuple(_ACTIVATIONS)}, got {hidden_act!r}")
        self.hidden_size = positive_int(hidden_size, "GPTNeoXMLP: hidden_size")
        self.intermediate_size = positive_int(intermediate_size, "GPTNeoXMLP: intermediate_size")
        self.hidden_act, self.initializer_range = hidden_act, float(initializer_range)
        init = initializers.normal(std=self.initializer_range)
        self.dense_h_to_4h = Dense(intermediate_size, kernel_init=init)
        self.dense_4h_to_h = Dense(hidden_size, kernel_init=init)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        build_children([(self.dense_h_to_4h, shape), (self.dense_4h_to_h, shape[:-1] + (self.intermediate_size,))])
        self.built = True

    def forward(self, x) -> Tensor:
        return self.dense_4h_to_h(_ACTIVATIONS[self.hidden_act](self.dense_h_to_4h(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act, "initializer_range": self.initializer_range, "name": self.name}


@register_layer
class GPTNeoXLayer(Module):
    """One GPT-NeoX block on (N, T, hidden_size) (see the module docstring): ``attention`` a
    biased :class:`~lamina.nn.MultiHeadAttention` with partial rotary positions, ``mlp``'s
    ``dense_h_to_4h`` and ``dense_4h_to_h``, LayerNorms ``input_layernorm`` and
    ``post_attention_layernorm``; the call takes ``key_mask`` and ``position_ids`` as
    :class:`~lamina.models.LlamaDecoderLayer`."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                 rotary_pct: float = 0.25, rotary_emb_base: float = 10000.0, layer_norm_eps: float = 1e-5,
                 use_parallel_residual: bool = True, hidden_act: str = "gelu", initializer_range: float = 0.02,
                 max_position_embeddings: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "GPTNeoXLayer: hidden_size")
        self.num_attention_heads = positive_int(num_attention_heads, "GPTNeoXLayer: num_attention_heads")
        self.intermediate_size = positive_int(intermediate_size, "GPTNeoXLayer: intermediate_size")
        if hidden_size % num_attention_heads:
            raise ValueError(f"GPTNeoXLayer: hidden_size {hidden_size} is not divisible by num_attention_heads "
                             f"{num_attention_heads}")
        if not 0 < float(rotary_pct) <= 1:
            raise ValueError(f"GPTNeoXLayer: rotary_pct must be in (0, 1], got {rotary_pct!r}")
        self.rotary_pct, self.rotary_emb_base = float(rotary_pct), float(rotary_emb_base)
        self.layer_norm_eps, self.use_parallel_residual = float(layer_norm_eps), bool(use_parallel_residual)
        self.hidden_act, self.initializer_range = hidden_act, float(initializer_range)
        self.max_position_embeddings = max_position_embeddings
        init = initializers.normal(std=self.initializer_range)
        self.input_layernorm = LayerNorm(eps=self.layer_norm_eps)
        self.post_attention_layernorm = LayerNorm(eps=self.layer_norm_eps)
        head_dim = hidden_size // num_attention_heads
        self.attention = MultiHeadAttention(hidden_size, num_attention_heads, kernel_init=init, rotary=True,
                                            rotary_base=self.rotary_emb_base,
                                            rotary_dims=_rotary_dims(head_dim, self.rotary_pct),
                                            rotary_max_positions=max_position_embeddings)
        self.mlp = GPTNeoXMLP(hidden_size, intermediate_size, hidden_act, self.initializer_range)

    @property
    def streamable(self) -> bool:
        """True while the attention caches keys and values (the other layers act per step)."""
        return self.attention.caching

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        build_children((layer, shape) for layer in (self.input_layernorm, self.post_attention_layernorm,
                                                    self.attention, self.mlp))
        self.built = True

    def forward(self, x, key_mask=None, position_ids=None) -> Tensor:
        x = as_tensor(x)
        attended = self.attention(self.input_layernorm(x), key_mask=key_mask, causal=True, positions=position_ids)
        if self.use_parallel_residual:       # both branches read the block's input
            return F.add(F.add(x, attended), self.mlp(self.post_attention_layernorm(x)))
        x = F.add(x, attended)
        return F.add(x, self.mlp(self.post_attention_layernorm(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "rotary_pct": self.rotary_pct,
                "rotary_emb_base": self.rotary_emb_base, "layer_norm_eps": self.layer_norm_eps,
                "use_parallel_residual": self.use_parallel_residual, "hidden_act": self.hidden_act,
                "initializer_range": self.initializer_range,
                "max_position_embeddings": self.max_position_embeddings, "name": self.name}


@register_layer
class GPTNeoX(DecoderLM):
    """GPT-NeoX / Pythia language model (Hugging Face's ``GPTNeoXForCausalLM``): token ids
    (N, T) -> next-token scores (N, T, ``vocab_size``) (see the module docstring). Sub-modules
    carry Hugging Face's names without ``gpt_neox.``: ``embed_in``, ``layers`` (a ModuleList of
    :class:`GPTNeoXLayer`), ``final_layer_norm`` and ``embed_out`` (a Dense without bias).
    Arguments are ``GPTNeoXConfig``'s, with its defaults (GPT-NeoX-20B's sizes); the call
    (``key_mask``, ``position_ids``, caching) is :class:`~lamina.models.Llama`'s."""

    def __init__(self, vocab_size: int = 50432, hidden_size: int = 6144, intermediate_size: int = 24576,
                 num_hidden_layers: int = 44, num_attention_heads: int = 64, rotary_pct: float = 0.25,
                 rotary_emb_base: float = 10000.0, max_position_embeddings: int = 2048,
                 layer_norm_eps: float = 1e-5, use_parallel_residual: bool = True, hidden_act: str = "gelu",
                 initializer_range: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "GPTNeoX: vocab_size")
        self.hidden_size = positive_int(hidden_size, "GPTNeoX: hidden_size")
        self.num_hidden_layers = positive_int(num_hidden_layers, "GPTNeoX: num_hidden_layers")
        self.max_position_embeddings = positive_int(max_position_embeddings, "GPTNeoX: max_position_embeddings")
        self.initializer_range = float(initializer_range)
        init = initializers.normal(std=self.initializer_range)
        self.embed_in = Embedding(vocab_size, hidden_size, embeddings_init=init)
        self.layers = ModuleList([
            GPTNeoXLayer(hidden_size, num_attention_heads, intermediate_size, rotary_pct, rotary_emb_base,
                         layer_norm_eps, use_parallel_residual, hidden_act, initializer_range,
                         max_position_embeddings) for _ in range(num_hidden_layers)])
        self.final_layer_norm = LayerNorm(eps=float(layer_norm_eps))
        self.embed_out = Dense(vocab_size, use_bias=False, kernel_init=init)

    def token_embedding(self) -> Module:
        return self.embed_in

    def final_norm(self) -> Module:
        return self.final_layer_norm

    def head_layers(self) -> tuple[Module, ...]:
        return (self.embed_out,)

    def logits(self, hidden) -> Tensor:
        """The scores of the final hidden states: ``embed_out``."""
        return self.embed_out(hidden)

    def get_config(self) -> dict:
        first = self.layers[0].get_config()
        return {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "intermediate_size": first["intermediate_size"], "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": first["num_attention_heads"], "rotary_pct": first["rotary_pct"],
                "rotary_emb_base": first["rotary_emb_base"], "max_position_embeddings": self.max_position_embeddings,
                "layer_norm_eps": first["layer_norm_eps"], "use_parallel_residual": first["use_parallel_residual"],
                "hidden_act": first["hidden_act"], "initializer_range": self.initializer_range, "name": self.name}


def gpt_neox(config: str = "tiny", **options) -> GPTNeoX:
    """The GPT-NeoX of Hugging Face configuration ``config`` (see :data:`GPT_NEOX_CONFIGS`):
    'tiny', 'pythia_70m' (70,426,624 parameters) or 'pythia_160m' (162,322,944); ``options``
    override :class:`GPTNeoX`'s arguments. Unbuilt: ``model.build((None, 1))`` makes the weights."""
    if config not in GPT_NEOX_CONFIGS:
        raise ValueError(f"gpt_neox: config must be one of {tuple(GPT_NEOX_CONFIGS)}, got {config!r}")
    return GPTNeoX(**{**GPT_NEOX_CONFIGS[config], **options})


def gpt_neox_parameter_count(vocab_size: int, hidden_size: int, intermediate_size: int,
                             num_hidden_layers: int) -> int:
    """The parameters of :class:`GPTNeoX` by formula: 2 V E (embed_in, embed_out) + L (4 E^2 + 4 E
    (attention) + 2 E F + F + E (MLP) + 4 E (norms)) + 2 E (final norm)."""
    e, f = hidden_size, intermediate_size
    block = 4 * e * e + 4 * e + 2 * e * f + f + e + 4 * e
    return 2 * vocab_size * e + num_hidden_layers * block + 2 * e


def _head_interleaved(key: str, heads: int, who: str) -> HFWeight:
    """A fused query_key_value weight (3 E, E) or bias (3 E,), rows [heads, 3, head_dim],
    as lamina's [W_q | W_k | W_v] (E, 3 E) or [b_q | b_k | b_v] (3 E,)."""
    def convert(w):
        if w.shape[0] % (3 * heads):
            raise ShapeError(f"{who}: {key} has shape {tuple(w.shape)}; expected 3 x {heads} heads of rows")
        parts = w.reshape(heads, 3, w.shape[0] // (3 * heads), *w.shape[1:])
        q, k, v = (np.reshape(parts[:, i], (-1, *w.shape[1:])) for i in range(3))
        return np.concatenate([a.T for a in (q, k, v)], axis=-1)
    return HFWeight((key,), convert)


def hf_gpt_neox_table(model: GPTNeoX) -> dict[str, HFWeight]:
    """:class:`GPTNeoX`'s state-dict key -> Hugging Face's ``GPTNeoXModel`` weight (keys without
    ``gpt_neox.``; 'embed_out.weight' as it is)."""
    who = f"load_hf_gpt_neox_state_dict (model {model._label()})"
    table = {"embed_in.weight": copied("embed_in.weight"), "embed_out.weight": linear("embed_out.weight")}
    for part in ("weight", "bias"):
        table[f"final_layer_norm.{part}"] = copied(f"final_layer_norm.{part}")
    for i, block in enumerate(model.layers):
        layer = f"layers.{i}."
        for part in ("weight", "bias"):
            fused = f"{layer}attention.query_key_value.{part}"
            table[f"{layer}attention.in_{part}"] = _head_interleaved(fused, block.num_attention_heads, who)
            table[f"{layer}attention.out_{part}"] = (linear if part == "weight" else copied)(
                f"{layer}attention.dense.{part}")
            for norm in ("input_layernorm", "post_attention_layernorm"):
                table[f"{layer}{norm}.{part}"] = copied(f"{layer}{norm}.{part}")
            for dense in ("dense_h_to_4h", "dense_4h_to_h"):
                hf = f"{layer}mlp.{dense}.{part}"
                table[f"{layer}mlp.{dense}.{part}"] = (linear if part == "weight" else copied)(hf)
    return table


def _ignored(key: str) -> bool:
    """The buffers some checkpoints carry: the causal mask, its fill value and the rotary frequencies."""
    return key.endswith(("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq"))


def load_hf_gpt_neox_state_dict(model: GPTNeoX, state_dict, strict: bool = True) -> None:
    """Load Hugging Face GPT-NeoX / Pythia weights (``GPTNeoXForCausalLM``'s names,
    'gpt_neox.layers.0.attention.query_key_value.weight' ... 'embed_out.weight') into
    ``model``: the fused query_key_value rows [heads, 3, head_dim] are sorted into lamina's
    [queries | keys | values], ``Linear`` weights transposed; the attention's mask buffers and
    rotary frequencies are ignored. Sources and checks as
    :func:`lamina.models.load_hf_llama_state_dict`."""
    load_hf_decoder_weights(model, state_dict, GPTNeoX, hf_gpt_neox_table, strict, "load_hf_gpt_neox_state_dict",
                            prefix="gpt_neox.", ignored=_ignored)
