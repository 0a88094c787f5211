"""Mistral (Jiang et al., "Mistral 7B", 2023) in the layout of Hugging Face's
``MistralForCausalLM``: a :class:`~lamina.models.Llama` whose attention is limited to a
sliding window of ``sliding_window`` keys,

    query i sees the keys j with i - sliding_window < j <= i,

grouped-query attention and rotary positions as in Llama. The weights carry Llama's names,
so :func:`load_hf_mistral_state_dict` is Llama's loader. While caching keys and values (the
decoders of :mod:`lamina.text`), each attention layer keeps only the last
``sliding_window - 1`` steps: memory stays bounded however long the text grows.
"""

from __future__ import annotations

from lamina.models.llama import Llama, load_hf_llama_state_dict
from lamina.nn.layer import register_layer

__all__ = ["MISTRAL_CONFIGS", "Mistral", "load_hf_mistral_state_dict", "mistral"]

MISTRAL_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
             "sliding_window": 8},
    "7b_v0.1": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096},
}
"""Hugging Face configurations: a small 'tiny' one (window 8) and Mistral-7B-v0.1."""


@register_layer
class Mistral(Llama):
    """Mistral language model (Hugging Face's ``MistralForCausalLM``): a :class:`Llama`
    with ``MistralConfig``'s defaults (Mistral-7B-v0.1's sizes, ``sliding_window`` 4096);
    the arguments and the call are Llama's."""

    def __init__(self, vocab_size: int = 32000, hidden_size: int = 4096, intermediate_size: int = 14336,
                 num_hidden_layers: int = 32, num_attention_heads: int = 32, num_key_value_heads: int | None = 8,
                 max_position_embeddings: int = 32768, rms_norm_eps: float = 1e-6, rope_theta: float = 10000.0,
                 sliding_window: int | None = 4096, **options):
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                         rms_norm_eps=rms_norm_eps, rope_theta=rope_theta, sliding_window=sliding_window, **options)


def mistral(config: str = "tiny", **options) -> Mistral:
    """The Mistral of Hugging Face configuration ``config`` (see :data:`MISTRAL_CONFIGS`):
    'tiny' or '7b_v0.1' (7,241,732,096 parameters); ``options`` override :class:`Mistral`'s
    arguments. Unbuilt, as :func:`lamina.models.llama`."""
    if config not in MISTRAL_CONFIGS:
        raise ValueError(f"mistral: config must be one of {tuple(MISTRAL_CONFIGS)}, got {config!r}")
    return Mistral(**{**MISTRAL_CONFIGS[config], **options})


def load_hf_mistral_state_dict(model: Mistral, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Mistral weights (``MistralForCausalLM``'s names, which are Llama's)
    into ``model``; see :func:`lamina.models.load_hf_llama_state_dict`."""
    load_hf_llama_state_dict(model, state_dict, strict)
