"""A Llama-style decoder (Touvron et al., "LLaMA" and "Llama 2", 2023) in the layout of
Hugging Face's ``LlamaForCausalLM``, so that its published weights (and those of models built
the same way, such as TinyLlama) load with :func:`load_hf_llama_state_dict`.

    h_0 = E[x]                                                       (no position table)
    h_l = h_{l-1} + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),
          n = input_layernorm(h_{l-1})                               (causal, GQA)
    h_l = h_l + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = post_attention_layernorm(h_l)
    logits = lm_head(norm(h_L))                  (lm_head = E^T when tie_word_embeddings)

The norms are RMSNorms, y = x / sqrt(mean(x^2) + rms_norm_eps) * weight; the projections
have no bias (unless ``attention_bias`` / ``mlp_bias``); the keys and values have
``num_key_value_heads`` heads, each serving a group of query heads (grouped-query attention).

Rotary positions: lamina's :func:`~lamina.functional.rotary_embedding` pairs feature j of a
head with feature j + d/2 (the "rotate half" convention), as Hugging Face's Llama does, with
theta_j = rope_theta^(-2j/d). Hugging Face's ``q_proj`` / ``k_proj`` weights are already laid
out for that pairing (the conversion from Meta's interleaved checkpoints permuted their rows),
so the loader copies them without any permutation: ``self_attn.in_weight`` is
[q_proj^T | k_proj^T | v_proj^T] and ``out_weight`` is o_proj^T, lamina's Dense weights
(in, out) being PyTorch's ``Linear`` weights (out, in) transposed.

The attention is lamina's :class:`~lamina.nn.MultiHeadAttention`, so the model caches keys and
values for :func:`lamina.text.sample_text`, :func:`lamina.text.beam_search_ids` and the other
decoders of :mod:`lamina.text`. ``rope_scaling`` takes Hugging Face's frequency rescalings
'linear', 'dynamic' (dynamic NTK), 'yarn', 'longrope' and 'llama3' (Llama 3.1 and 3.2); see
:func:`lamina.functional.rotary_parameters`. 'dynamic' and 'longrope' recompute the
frequencies for each call from its length (cached steps included), as Hugging Face's forward
does: a cached key keeps the rotation it was read with, so past ``max_position_embeddings``
(past original_max_position_embeddings for 'longrope') cached decoding differs from a rerun
on the whole text, in Hugging Face as here. ``head_dim`` may differ from hidden_size /
num_attention_heads; ``sliding_window`` limits each query to the last keys (Mistral's; see
:mod:`lamina.models.mistral`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.decoder_lm import DecoderLM
from lamina.models.hf_weights import HFWeight, copied, joined_linear, linear, load_hf_state_dict, read_state_dict
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.rms_norm import RMSNorm

__all__ = ["LLAMA_CONFIGS", "Llama", "LlamaDecoderLayer", "LlamaMLP", "llama", "llama_parameter_count",
           "load_hf_llama_state_dict"]

_LLAMA2 = {"vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}

_LLAMA3 = {"vocab_size": 128256, "num_attention_heads": 32, "num_key_value_heads": 8,
           "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0}
_LLAMA3_SCALING = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}

LLAMA_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256},
    "tinyllama_1.1b": {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                       "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 2048,
                       "rms_norm_eps": 1e-5},
    "llama2_7b": {**_LLAMA2, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                  "num_attention_heads": 32},
    "llama2_13b": {**_LLAMA2, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                   "num_attention_heads": 40},
    "llama2_70b": {**_LLAMA2, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                   "num_attention_heads": 64, "num_key_value_heads": 8},
    "llama3_8b": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                  "rms_norm_eps": 1e-5, "rope_theta": 500000.0},
    "llama3_1_8b": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                    "rope_scaling": {**_LLAMA3_SCALING, "factor": 8.0}},
    "llama3_2_1b": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                    "head_dim": 64, "tie_word_embeddings": True, "rope_scaling": {**_LLAMA3_SCALING, "factor": 32.0}},
}
"""Hugging Face configurations: a small 'tiny' one for experiments, TinyLlama-1.1B (v1.0),
Llama-2-7b/13b/70b, Meta-Llama-3-8B (the original Llama 3, without rope scaling),
Llama-3.1-8B and Llama-3.2-1B (with their 'llama3' rope scaling)."""


_ACTIVATIONS = {"silu": F.silu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}
"""Hugging Face's names of the gate activations of the gated MLPs."""


def _normal(std: float):
    return initializers.normal(std=std)


@register_layer
class LlamaMLP(Module):
    """The SwiGLU feed-forward network: down_proj(silu(gate_proj(x)) * up_proj(x)), with
    ``intermediate_size`` hidden units; sub-layers ``gate_proj``, ``up_proj``, ``down_proj``
    (Dense, weights (in, out), N(0, ``initializer_range``), no bias unless ``mlp_bias``).
    ``hidden_act`` 'gelu_pytorch_tanh' (Gemma's GeGLU) puts the tanh GELU in place of silu."""

    def __init__(self, hidden_size: int, intermediate_size: int, mlp_bias: bool = False,
                 initializer_range: float = 0.02, hidden_act: str = "silu", name: str | None = None):
        super().__init__(name=name)
        if hidden_act not in _ACTIVATIONS:
            raise ValueError(f"LlamaMLP: hidden_act must be one of {tuple(_ACTIVATIONS)}, got {hidden_act!r}")
        self.hidden_act = hidden_act
        self.hidden_size = positive_int(hidden_size, "LlamaMLP: hidden_size")
        self.intermediate_size = positive_int(intermediate_size, "LlamaMLP: intermediate_size")
        self.mlp_bias = bool(mlp_bias)
        self.initializer_range = float(initializer_range)
        init = _normal(self.initializer_range)
        self.gate_proj = Dense(intermediate_size, use_bias=self.mlp_bias, kernel_init=init)
        self.up_proj = Dense(intermediate_size, use_bias=self.mlp_bias, kernel_init=init)
        self.down_proj = Dense(hidden_size, use_bias=self.mlp_bias, kernel_init=init)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        hidden = shape[:-1] + (self.intermediate_size,)
        for layer, layer_shape in ((self.gate_proj, shape), (self.up_proj, shape), (self.down_proj, hidden)):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        self.built = True

    def forward(self, x) -> Tensor:
        return self.down_proj(F.mul(_ACTIVATIONS[self.hidden_act](self.gate_proj(x)), self.up_proj(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.hidden_size,)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "mlp_bias": self.mlp_bias, "initializer_range": self.initializer_range,
                "hidden_act": self.hidden_act, "name": self.name}


@register_layer
class LlamaDecoderLayer(Module):
    """One pre-norm Llama block on (N, T, hidden_size):

        x = x + self_attn(input_layernorm(x))              (causal, rotary, GQA)
        x = x + mlp(post_attention_layernorm(x))

    ``self_attn`` is a :class:`~lamina.nn.MultiHeadAttention` with rotary positions of base
    ``rope_theta`` and ``num_key_value_heads`` key/value heads; ``key_mask`` (N, T) is False
    for padding keys; ``position_ids`` (N, T) the rotary positions of each step (default
    0 .. T - 1, continuing while caching); ``mask`` (T, T), while caching (T, S + T), True =
    attend, replaces the causal one (a tree of candidates). Keys and values are cached through the attention layer (see
    :func:`lamina.text.caching_keys_values`). ``hidden_act`` is the MLP's gate activation;
    ``attention_options`` more arguments of the attention layer (``out_bias``, ``scale``,
    ``logit_softcap``: see :class:`~lamina.nn.MultiHeadAttention`)."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                 num_key_value_heads: int | None = None, rms_norm_eps: float = 1e-6, rope_theta: float = 10000.0,
                 attention_bias: bool = False, mlp_bias: bool = False, attention_dropout: float = 0.0,
                 initializer_range: float = 0.02, head_dim: int | None = None, rope_scaling: Mapping | None = None,
                 sliding_window: int | None = None, max_position_embeddings: int | None = None,
                 hidden_act: str = "silu", attention_options: Mapping | None = None, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "LlamaDecoderLayer: hidden_size")
        self.attention_options = dict(attention_options or {})
        self.num_attention_heads = positive_int(num_attention_heads, "LlamaDecoderLayer: num_attention_heads")
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.rms_norm_eps = float(rms_norm_eps)
        self.rope_theta = float(rope_theta)
        self.attention_bias = bool(attention_bias)
        self.attention_dropout = dropout_rate(attention_dropout, "LlamaDecoderLayer")
        self.input_layernorm = RMSNorm(hidden_size, eps=self.rms_norm_eps)
        self.self_attn = MultiHeadAttention(hidden_size, num_attention_heads, use_bias=self.attention_bias,
                                            dropout=self.attention_dropout,
                                            kernel_init=_normal(initializer_range), rotary=True,
                                            rotary_base=self.rope_theta, num_kv_heads=self.num_key_value_heads,
                                            head_dim=head_dim, rotary_scaling=rope_scaling, window=sliding_window,
                                            rotary_max_positions=max_position_embeddings,
                                            **self.attention_options)
        self.post_attention_layernorm = RMSNorm(hidden_size, eps=self.rms_norm_eps)
        self.mlp = LlamaMLP(hidden_size, intermediate_size, mlp_bias, initializer_range, hidden_act)
        self.mlp_options = {"intermediate_size": self.mlp.intermediate_size, "mlp_bias": self.mlp.mlp_bias,
                            "initializer_range": self.mlp.initializer_range, "hidden_act": hidden_act}

    @property
    def streamable(self) -> bool:
        """True while the attention caches keys and values (the other layers act per step)."""
        return self.self_attn.caching

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for layer in (self.input_layernorm, self.self_attn, self.post_attention_layernorm, self.mlp):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, x, key_mask=None, position_ids=None, mask=None) -> Tensor:
        x = as_tensor(x)
        attended = self.self_attn(self.input_layernorm(x), mask=mask, key_mask=key_mask, causal=True,
                                  positions=position_ids)
        x = F.add(x, attended)
        return F.add(x, self.mlp(self.post_attention_layernorm(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, **self.mlp_options,
                "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
                "attention_bias": self.attention_bias, "attention_dropout": self.attention_dropout,
                "head_dim": self.self_attn.head_dim, "rope_scaling": self.self_attn.rotary_scaling,
                "sliding_window": self.self_attn.window,
                "max_position_embeddings": self.self_attn.rotary_max_positions,
                "attention_options": self.attention_options, "name": self.name}


@register_layer
class Llama(DecoderLM):
    """Llama language model (Hugging Face's ``LlamaForCausalLM``): token ids (N, T) ->
    next-token scores (N, T, ``vocab_size``) (see the module docstring for the formulas).

    Sub-modules carry Hugging Face's names, without the ``model.`` prefix: ``embed_tokens``,
    ``layers`` (a ModuleList of :class:`LlamaDecoderLayer`), ``norm`` and ``lm_head`` (a Dense
    without bias; absent when ``tie_word_embeddings``, the scores then being
    h ``embed_tokens.weight``^T). The arguments are ``LlamaConfig``'s, with its defaults
    (Llama-2-7b's sizes). Weights start as Hugging Face initializes them: N(0,
    ``initializer_range``) for the table and every projection, unit RMSNorm weights, zero
    biases.

    ``head_dim`` (default hidden_size / num_attention_heads), ``rope_scaling`` (None, or
    Hugging Face's mapping: {'rope_type': 'linear' or 'dynamic', 'factor'}, {'rope_type':
    'yarn', 'factor', optional 'original_max_position_embeddings', 'beta_fast', 'beta_slow',
    'attention_factor', 'mscale', 'mscale_all_dim', 'truncate'}, {'rope_type': 'longrope',
    'short_factor', 'long_factor', optional 'original_max_position_embeddings', 'factor',
    'attention_factor'} or {'rope_type': 'llama3', 'factor', 'low_freq_factor',
    'high_freq_factor', 'original_max_position_embeddings'}; a missing key or unknown type
    raises a ValueError naming the model and the key) and ``sliding_window`` (None: every
    earlier key; Mistral's) go to each layer's attention.

    ``model(ids, key_mask=None, position_ids=None)``: ``key_mask`` (N, T), False for padding
    tokens that no query may attend to (while caching: (N, S) over every step read, this call's
    included); ``position_ids`` (N, T) the rotary positions of each step (default 0 .. T - 1,
    as Hugging Face's forward without them; a left-padded row may count from its first real
    token, Hugging Face's cumsum(attention_mask) - 1). Within :func:`lamina.text.caching_keys_values` consecutive calls
    continue one sequence, the rotary positions continuing after the cached steps.
    ``max_len`` (``max_position_embeddings``) is the context the samplers keep to.
    """

    def __init__(self, vocab_size: int = 32000, hidden_size: int = 4096, intermediate_size: int = 11008,
                 num_hidden_layers: int = 32, num_attention_heads: int = 32, num_key_value_heads: int | None = None,
                 max_position_embeddings: int = 2048, rms_norm_eps: float = 1e-6, rope_theta: float = 10000.0,
                 tie_word_embeddings: bool = False, attention_bias: bool = False, mlp_bias: bool = False,
                 attention_dropout: float = 0.0, initializer_range: float = 0.02, head_dim: int | None = None,
                 rope_scaling: Mapping | None = None, sliding_window: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "Llama: vocab_size")
        self.hidden_size = positive_int(hidden_size, "Llama: hidden_size")
        self.intermediate_size = positive_int(intermediate_size, "Llama: intermediate_size")
        self.num_hidden_layers = positive_int(num_hidden_layers, "Llama: num_hidden_layers")
        self.num_attention_heads = positive_int(num_attention_heads, "Llama: num_attention_heads")
        kv_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.num_key_value_heads = positive_int(kv_heads, "Llama: num_key_value_heads")
        if head_dim is None and hidden_size % num_attention_heads:
            raise ValueError(f"Llama: hidden_size {hidden_size} is not divisible by num_attention_heads "
                             f"{num_attention_heads}; pass head_dim")
        self.head_dim = hidden_size // num_attention_heads if head_dim is None else positive_int(
            head_dim, "Llama: head_dim")
        self.rope_scaling = None if rope_scaling is None else dict(rope_scaling)
        self.sliding_window = None if sliding_window is None else positive_int(sliding_window,
                                                                                 "Llama: sliding_window")
        if num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"Llama: num_key_value_heads {self.num_key_value_heads} must divide "
                             f"num_attention_heads {num_attention_heads}")
        self.max_position_embeddings = positive_int(max_position_embeddings, "Llama: max_position_embeddings")
        F.check_rope_scaling(self.rope_scaling, self.rotary_dims(), self.max_position_embeddings,
                             type(self).__name__)
        if not float(rms_norm_eps) > 0:
            raise ValueError(f"Llama: rms_norm_eps must be > 0, got {rms_norm_eps!r}")
        self.rms_norm_eps = float(rms_norm_eps)
        self.rope_theta = float(rope_theta)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.attention_bias, self.mlp_bias = bool(attention_bias), bool(mlp_bias)
        self.attention_dropout = dropout_rate(attention_dropout, "Llama")
        self.initializer_range = float(initializer_range)
        init = _normal(self.initializer_range)
        self.embed_tokens = Embedding(vocab_size, hidden_size, embeddings_init=init)
        self.layers = ModuleList([self.decoder_layer(i) for i in range(num_hidden_layers)])
        self.norm = RMSNorm(hidden_size, eps=self.rms_norm_eps)
        if not self.tie_word_embeddings:
            self.lm_head = Dense(vocab_size, use_bias=False, kernel_init=init)

    def decoder_layer(self, index: int) -> LlamaDecoderLayer:
        """Block ``index`` of the model, made of :meth:`layer_arguments`."""
        return LlamaDecoderLayer(**self.layer_arguments(index))

    def layer_arguments(self, index: int) -> dict:
        """The arguments of block ``index``; the families built on Llama add theirs (their own
        options are set before Llama's ``__init__`` makes the blocks)."""
        return {"hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "num_key_value_heads": self.num_key_value_heads,
                "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
                "attention_bias": self.attention_bias, "mlp_bias": self.mlp_bias,
                "attention_dropout": self.attention_dropout, "initializer_range": self.initializer_range,
                "head_dim": self.head_dim, "rope_scaling": self.rope_scaling,
                "sliding_window": self.layer_window(index), "max_position_embeddings": self.max_position_embeddings}

    def rotary_dims(self) -> int:
        """The features of each head that the rotary positions turn: all ``head_dim``."""
        return self.head_dim

    def layer_window(self, index: int) -> int | None:
        """The sliding window of block ``index``: ``sliding_window`` in every block."""
        return self.sliding_window

    def token_embedding(self) -> Module:
        return self.embed_tokens

    def final_norm(self) -> Module:
        return self.norm

    def head_layers(self) -> tuple[Module, ...]:
        return () if self.tie_word_embeddings else (self.lm_head,)

    def logits(self, hidden) -> Tensor:
        """The scores of the final hidden states: ``lm_head``, or the token table when tied."""
        if self.tie_word_embeddings:
            return F.matmul(hidden, F.transpose(self.embed_tokens.weight, 1, 0))
        return self.lm_head(hidden)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
                "max_position_embeddings": self.max_position_embeddings, "rms_norm_eps": self.rms_norm_eps,
                "rope_theta": self.rope_theta, "tie_word_embeddings": self.tie_word_embeddings,
                "attention_bias": self.attention_bias, "mlp_bias": self.mlp_bias,
                "attention_dropout": self.attention_dropout, "initializer_range": self.initializer_range,
                "head_dim": self.head_dim, "rope_scaling": self.rope_scaling, "sliding_window": self.sliding_window,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, "
                f"num_hidden_layers={self.num_hidden_layers}, num_attention_heads={self.num_attention_heads}, "
                f"num_key_value_heads={self.num_key_value_heads}")


def _config(config: str, table: Mapping) -> dict:
    if config not in table:
        raise ValueError(f"llama: config must be one of {tuple(table)}, got {config!r}")
    return dict(table[config])


def llama(config: str = "tiny", **options) -> Llama:
    """The Llama of Hugging Face configuration ``config`` (see :data:`LLAMA_CONFIGS`):
    'tiny', 'tinyllama_1.1b' (1,100,048,384 parameters), 'llama2_7b' (6,738,415,616),
    'llama2_13b' (13,015,864,320), 'llama2_70b' (68,976,648,192) or 'llama3_8b'
    (8,030,261,248), 'llama3_1_8b' (8,030,261,248) or 'llama3_2_1b' (1,235,814,400, tied);
    ``options`` override :class:`Llama`'s arguments. Unbuilt: the weights are
    created on the first call or by ``model.build((None, 1))`` (inside
    :func:`lamina.nn.init.meta` they are shape-only, to count the parameters of a big one)."""
    return Llama(**{**_config(config, LLAMA_CONFIGS), **options})


def llama_parameter_count(vocab_size: int = 32000, hidden_size: int = 4096, intermediate_size: int = 11008,
                          num_hidden_layers: int = 32, num_attention_heads: int = 32,
                          num_key_value_heads: int | None = None, tie_word_embeddings: bool = False,
                          head_dim: int | None = None) -> int:
    """The parameters of :class:`Llama` (without biases) by formula, without building it:
    V E (table) + L (2 E h d + 2 E g d (attention) + 3 E F (MLP) + 2 E (norms)) + E (norm)
    + V E (lm_head, unless tied), with h heads and g key/value heads of d features
    (d = ``head_dim``, by default E / h)."""
    e, f = hidden_size, intermediate_size
    d = e // num_attention_heads if head_dim is None else head_dim
    kv = d * (num_attention_heads if num_key_value_heads is None else num_key_value_heads)
    block = 2 * e * d * num_attention_heads + 2 * e * kv + 3 * e * f + 2 * e
    head = 0 if tie_word_embeddings else vocab_size * e
    return vocab_size * e + num_hidden_layers * block + e + head


# -- Hugging Face weights -------------------------------------------------------------------
_MLP_KEYS = ("gate_proj", "up_proj", "down_proj")


def hf_llama_table(model: Llama) -> dict[str, HFWeight]:
    """:class:`Llama`'s state-dict key -> Hugging Face's ``LlamaModel`` weight (the keys
    without ``model.``; 'lm_head.weight' for an untied head). The q/k/v projections join
    into ``self_attn.in_weight`` (no row permutation: both use the rotate-half rotary)."""
    table = {"embed_tokens.weight": copied("embed_tokens.weight"), "norm.weight": copied("norm.weight")}
    if not model.tie_word_embeddings:
        table["lm_head.weight"] = linear("lm_head.weight")
    for i in range(model.num_hidden_layers):
        layer = f"layers.{i}."                  # the same prefix in both layouts
        attention = layer + "self_attn."
        table[attention + "in_weight"] = joined_linear(*(f"{attention}{p}_proj.weight" for p in "qkv"))
        table[attention + "out_weight"] = linear(attention + "o_proj.weight")
        if model.attention_bias:
            table[attention + "in_bias"] = joined_linear(*(f"{attention}{p}_proj.bias" for p in "qkv"))
            table[attention + "out_bias"] = copied(attention + "o_proj.bias")
        for norm in ("input_layernorm", "post_attention_layernorm"):
            table[f"{layer}{norm}.weight"] = copied(f"{layer}{norm}.weight")
        for name in _MLP_KEYS:
            table[f"{layer}mlp.{name}.weight"] = linear(f"{layer}mlp.{name}.weight")
            if model.mlp_bias:
                table[f"{layer}mlp.{name}.bias"] = copied(f"{layer}mlp.{name}.bias")
    return table


def hf_ignored_keys(model: Module):
    """Keys some checkpoints carry that the model does not use: the rotary frequencies
    buffer, and the head of a tied model (a copy of the token table)."""
    def ignored(key: str) -> bool:
        return key.endswith("rotary_emb.inv_freq") or (model.tie_word_embeddings and key == "lm_head.weight")
    return ignored


def load_hf_decoder_weights(model: Module, state_dict, kind: type, table_of, strict: bool, who: str,
                            prefix: str = "model.", ignored=None) -> None:
    """Load a Hugging Face causal language model's weights into ``model`` (an instance of
    ``kind``): the keys lose ``prefix``, an unbuilt model is built, and ``table_of(model)``
    (lamina key -> :class:`~lamina.models.hf_weights.HFWeight`) says how each array is made;
    keys ``ignored`` accepts (default :func:`hf_ignored_keys`) may be left over."""
    if not isinstance(model, kind):
        raise TypeError(f"{who}: expected a {kind.__name__} model, got {type(model).__name__}")
    arrays = {key.removeprefix(prefix): value for key, value in read_state_dict(state_dict, who).items()}
    if not model.built:
        model.build((None, 1))
    load_hf_state_dict(model, arrays, table_of(model), ignored or hf_ignored_keys(model), strict, who)


def load_hf_llama_state_dict(model: Llama, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Llama weights into ``model``: ``state_dict`` maps Hugging Face's names
    (``LlamaForCausalLM``'s, 'model.layers.0.self_attn.q_proj.weight' ... 'lm_head.weight', or
    ``LlamaModel``'s, without 'model.') to arrays or torch tensors (bfloat16 ones too), or
    names safetensors files (BF16 read as float32): one file, a list of shards, Hugging Face's
    ``model.safetensors.index.json`` or a checkpoint folder (see
    :func:`lamina.models.hf_weights.read_state_dict`). The values take the model's dtype.
    ``Linear`` weights (out, in) are transposed to lamina's (in, out), the
    q/k/v projections joined into ``self_attn.in_weight``; the rotary ``inv_freq`` buffers,
    and ``lm_head.weight`` of a tied model, are ignored. An unbuilt model is built first.
    ``strict``: every weight present and every key used, else a KeyError listing them; a
    mis-shaped value raises :class:`lamina.ShapeError` naming the weight."""
    load_hf_decoder_weights(model, state_dict, Llama, hf_llama_table, strict, "load_hf_llama_state_dict")
