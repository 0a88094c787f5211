"""Gemma (Gemma Team, "Gemma: Open Models Based on Gemini Research and Technology", 2024)
and Gemma 2 ("Gemma 2: Improving Open Language Models at a Practical Size", 2024) in the
layout of Hugging Face's ``GemmaForCausalLM`` and ``Gemma2ForCausalLM``: Llama's blocks with

    h_0 = E[x] sqrt(hidden_size)            (the factor rounded to the model's dtype)
    RMSNorm(x) = x / sqrt(mean(x^2) + eps) * (1 + w)      (w stored, zero at the start)
    mlp(x) = down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))          (GeGLU)

``head_dim`` set on its own (256) and the output head tied to the token table. Gemma 2 adds

    x = x + post_attention_layernorm(attention(input_layernorm(x)))
    x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
    scores s = q k^T / sqrt(query_pre_attn_scalar),  s -> c_a tanh(s / c_a)   (before the mask)
    logits = c_f tanh(lm_head(h) / c_f)

(c_a = ``attn_logit_softcapping``, c_f = ``final_logit_softcapping``), its blocks
alternating between a sliding window of ``sliding_window`` keys (even blocks 0, 2, ...) and
global attention (odd blocks).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.hf_weights import copied
from lamina.models.llama import Llama, LlamaDecoderLayer, hf_llama_table, llama_parameter_count, load_hf_decoder_weights
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.rms_norm import RMSNorm

__all__ = ["GEMMA2_CONFIGS", "GEMMA_CONFIGS", "Gemma", "Gemma2", "Gemma2DecoderLayer", "GemmaDecoderLayer",
           "GemmaRMSNorm", "gemma", "gemma2", "gemma_parameter_count", "load_hf_gemma2_state_dict",
           "load_hf_gemma_state_dict"]

_SMALL = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256}

GEMMA_CONFIGS = {
    "tiny": dict(_SMALL),
    "gemma_2b": {"vocab_size": 256000, "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
                 "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256},
}
"""Hugging Face configurations: a small 'tiny' one and gemma-2b."""

GEMMA2_CONFIGS = {
    "tiny": {**_SMALL, "query_pre_attn_scalar": 16, "sliding_window": 8},
    "gemma2_2b": {"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                  "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                  "query_pre_attn_scalar": 256, "sliding_window": 4096},
}
"""Hugging Face configurations: a small 'tiny' one (window 8) and gemma-2-2b."""


@register_layer
class GemmaRMSNorm(RMSNorm):
    """Gemma's RMSNorm, y = x / sqrt(mean(x^2) + eps) * (1 + weight), ``weight`` starting at 0."""

    default_name = "gemma_rms_norm"

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if self.elementwise_affine:
            self.weight.data[...] = 0

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._trailing_shape(tuple(x.shape))
        weight = F.add(self.weight, 1.0) if self.elementwise_affine else None
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


@register_layer
class GemmaDecoderLayer(LlamaDecoderLayer):
    """A :class:`~lamina.models.LlamaDecoderLayer` with Gemma's (1 + w) RMSNorms."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int, *args, **kwargs):
        super().__init__(hidden_size, num_attention_heads, intermediate_size, *args, **kwargs)
        self.input_layernorm = GemmaRMSNorm(hidden_size, eps=self.rms_norm_eps)
        self.post_attention_layernorm = GemmaRMSNorm(hidden_size, eps=self.rms_norm_eps)


@register_layer
class Gemma2DecoderLayer(GemmaDecoderLayer):
    """Gemma 2's block: normalized both before and after the attention and the MLP (see the
    module docstring), the residual adding the normalized outputs."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int, *args, **kwargs):
        super().__init__(hidden_size, num_attention_heads, intermediate_size, *args, **kwargs)
        self.pre_feedforward_layernorm = GemmaRMSNorm(hidden_size, eps=self.rms_norm_eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(hidden_size, eps=self.rms_norm_eps)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        for norm in (self.pre_feedforward_layernorm, self.post_feedforward_layernorm):
            if not norm.built:
                norm.build(tuple(input_shape))
                norm.built = True

    def forward(self, x, key_mask=None, position_ids=None) -> Tensor:
        x = as_tensor(x)
        attended = self.self_attn(self.input_layernorm(x), key_mask=key_mask, causal=True, positions=position_ids)
        x = F.add(x, self.post_attention_layernorm(attended))
        return F.add(x, self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))))


@register_layer
class Gemma(Llama):
    """Gemma language model (Hugging Face's ``GemmaForCausalLM``): a :class:`Llama` with
    ``GemmaConfig``'s defaults (gemma-7b's sizes), embeddings scaled by sqrt(hidden_size),
    (1 + w) RMSNorms (:class:`GemmaRMSNorm`), the tanh-GELU gate (``hidden_act``
    'gelu_pytorch_tanh') and a tied head. Other arguments and the call are Llama's."""

    layer_class = GemmaDecoderLayer

    def __init__(self, vocab_size: int = 256000, hidden_size: int = 3072, intermediate_size: int = 24576,
                 num_hidden_layers: int = 28, num_attention_heads: int = 16, num_key_value_heads: int | None = 16,
                 head_dim: int | None = 256, max_position_embeddings: int = 8192, rms_norm_eps: float = 1e-6,
                 rope_theta: float = 10000.0, tie_word_embeddings: bool = True,
                 hidden_act: str = "gelu_pytorch_tanh", **options):
        Module.__init__(self, name=options.get("name"))     # the options layer_arguments reads, set first
        self.hidden_act = hidden_act
        self._set_options(options)
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, head_dim=head_dim,
                         max_position_embeddings=max_position_embeddings, rms_norm_eps=rms_norm_eps,
                         rope_theta=rope_theta, tie_word_embeddings=tie_word_embeddings, **options)
        self.norm = GemmaRMSNorm(hidden_size, eps=self.rms_norm_eps)

    def _set_options(self, options: dict) -> None:
        """Take this family's own options out of ``options`` (none for Gemma)."""

    def decoder_layer(self, index: int) -> LlamaDecoderLayer:
        return self.layer_class(**self.layer_arguments(index))

    def layer_arguments(self, index: int) -> dict:
        return {**super().layer_arguments(index), "hidden_act": self.hidden_act}

    def forward(self, ids, key_mask=None, position_ids=None) -> Tensor:
        x = self.embed_tokens(ids)
        x = F.mul(x, backend.xp.asarray(math.sqrt(self.hidden_size), dtype=x.dtype))
        for layer in self.layers:
            x = layer(x, key_mask=key_mask, position_ids=position_ids)
        return self.logits(self.norm(x))

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_act": self.hidden_act}


@register_layer
class Gemma2(Gemma):
    """Gemma 2 language model (Hugging Face's ``Gemma2ForCausalLM``; see the module docstring):
    a :class:`Gemma` with ``Gemma2Config``'s defaults (gemma-2-2b's sizes), pre- and
    post-norms around the attention and the MLP (:class:`Gemma2DecoderLayer`), scores scaled
    by ``query_pre_attn_scalar`` ^ -1/2 and soft-capped at ``attn_logit_softcapping``, a
    sliding window of ``sliding_window`` keys in the even blocks, and the logits soft-capped
    at ``final_logit_softcapping`` (None: not capped)."""

    layer_class = Gemma2DecoderLayer

    def __init__(self, vocab_size: int = 256000, hidden_size: int = 2304, intermediate_size: int = 9216,
                 num_hidden_layers: int = 26, num_attention_heads: int = 8, num_key_value_heads: int | None = 4,
                 head_dim: int | None = 256, sliding_window: int | None = 4096, **options):
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, head_dim=head_dim, sliding_window=sliding_window,
                         **options)

    def _set_options(self, options: dict) -> None:
        self.query_pre_attn_scalar = float(options.pop("query_pre_attn_scalar", 256))
        self.attn_logit_softcapping = _cap(options.pop("attn_logit_softcapping", 50.0), "attn_logit_softcapping")
        self.final_logit_softcapping = _cap(options.pop("final_logit_softcapping", 30.0), "final_logit_softcapping")
        if not self.query_pre_attn_scalar > 0:
            raise ValueError(f"Gemma2: query_pre_attn_scalar must be > 0, got {self.query_pre_attn_scalar}")

    def layer_window(self, index: int) -> int | None:
        """``sliding_window`` in the even blocks (0, 2, ...), every earlier key in the odd ones."""
        return self.sliding_window if index % 2 == 0 else None

    def layer_arguments(self, index: int) -> dict:
        options = {"scale": self.query_pre_attn_scalar ** -0.5, "logit_softcap": self.attn_logit_softcapping}
        return {**super().layer_arguments(index), "attention_options": options}

    def logits(self, hidden) -> Tensor:
        scores = super().logits(hidden)
        cap = self.final_logit_softcapping
        return scores if cap is None else F.mul(F.tanh(F.mul(scores, 1.0 / cap)), cap)

    def get_config(self) -> dict:
        return {**super().get_config(), "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "attn_logit_softcapping": self.attn_logit_softcapping,
                "final_logit_softcapping": self.final_logit_softcapping}


def _cap(value, what: str) -> float | None:
    if value is None:
        return None
    if not float(value) > 0:
        raise ValueError(f"Gemma2: {what} must be > 0 or None, got {value!r}")
    return float(value)


def gemma(config: str = "tiny", **options) -> Gemma:
    """The Gemma of Hugging Face configuration ``config`` (see :data:`GEMMA_CONFIGS`): 'tiny' or
    'gemma_2b' (2,506,172,416 parameters); ``options`` override :class:`Gemma`'s arguments.
    Unbuilt, as :func:`lamina.models.llama`."""
    if config not in GEMMA_CONFIGS:
        raise ValueError(f"gemma: config must be one of {tuple(GEMMA_CONFIGS)}, got {config!r}")
    return Gemma(**{**GEMMA_CONFIGS[config], **options})


def gemma2(config: str = "tiny", **options) -> Gemma2:
    """The Gemma 2 of Hugging Face configuration ``config`` (see :data:`GEMMA2_CONFIGS`): 'tiny'
    or 'gemma2_2b' (2,614,341,888 parameters); ``options`` override :class:`Gemma2`'s arguments."""
    if config not in GEMMA2_CONFIGS:
        raise ValueError(f"gemma2: config must be one of {tuple(GEMMA2_CONFIGS)}, got {config!r}")
    return Gemma2(**{**GEMMA2_CONFIGS[config], **options})


def gemma_parameter_count(vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                          num_attention_heads: int, num_key_value_heads: int, head_dim: int,
                          version: int = 1) -> int:
    """The parameters of :class:`Gemma` (``version`` 1) or :class:`Gemma2` (2) by formula,
    without building them: Llama's tied count, plus Gemma 2's two more norms per block, 2 L E."""
    extra = 2 * num_hidden_layers * hidden_size if version == 2 else 0
    return extra + llama_parameter_count(vocab_size, hidden_size, intermediate_size, num_hidden_layers,
                                         num_attention_heads, num_key_value_heads, True, head_dim)


def hf_gemma_table(model: Gemma) -> dict:
    """:class:`Gemma`'s or :class:`Gemma2`'s state-dict key -> Hugging Face weight: Llama's
    table, with Gemma 2's pre- and post-feedforward norms."""
    table = hf_llama_table(model)
    if isinstance(model, Gemma2):
        for i in range(model.num_hidden_layers):
            for norm in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
                table[f"layers.{i}.{norm}.weight"] = copied(f"layers.{i}.{norm}.weight")
    return table


def load_hf_gemma_state_dict(model: Gemma, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Gemma weights (``GemmaForCausalLM``'s names, Llama's) into ``model``;
    the norms' stored w (of 1 + w) are copied as they are. Sources and checks as
    :func:`lamina.models.load_hf_llama_state_dict`."""
    load_hf_decoder_weights(model, state_dict, Gemma, hf_gemma_table, strict, "load_hf_gemma_state_dict")


def load_hf_gemma2_state_dict(model: Gemma2, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Gemma 2 weights (``Gemma2ForCausalLM``'s names) into ``model``; see
    :func:`load_hf_gemma_state_dict`."""
    load_hf_decoder_weights(model, state_dict, Gemma2, hf_gemma_table, strict, "load_hf_gemma2_state_dict")
