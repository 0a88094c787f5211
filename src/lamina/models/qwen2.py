"""Qwen2 (Yang et al., "Qwen2 Technical Report", 2024) in the layout of Hugging Face's
``Qwen2ForCausalLM``: a :class:`~lamina.models.Llama` whose query, key and value
projections have biases while the output projection has none,

    q = x W_q + b_q,  k = x W_k + b_k,  v = x W_v + b_v,  out = heads W_o,

with rope_theta 1e6, grouped-query attention and, in the small sizes, the output head tied
to the token table. Sliding-window attention is Hugging Face's option: with
``use_sliding_window`` the blocks from ``max_window_layers`` on see the last
``sliding_window`` keys, the earlier ones every key. The weights carry Llama's names.
"""

from __future__ import annotations

from lamina.models.llama import Llama, hf_llama_table, llama_parameter_count, load_hf_decoder_weights
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["QWEN2_CONFIGS", "Qwen2", "load_hf_qwen2_state_dict", "qwen2", "qwen2_parameter_count"]

_QWEN2 = {"vocab_size": 151936, "num_key_value_heads": 2, "max_position_embeddings": 131072,
          "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}

QWEN2_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
             "tie_word_embeddings": True},
    "qwen2_0.5b": {**_QWEN2, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                   "num_attention_heads": 14},
    "qwen2_1.5b": {**_QWEN2, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                   "num_attention_heads": 12},
}
"""Hugging Face configurations: a small 'tiny' one, Qwen2-0.5B and Qwen2-1.5B."""


@register_layer
class Qwen2(Llama):
    """Qwen2 language model (Hugging Face's ``Qwen2ForCausalLM``): a :class:`Llama` with
    ``Qwen2Config``'s defaults and biased q/k/v projections (``self_attn.in_bias``; no
    ``out_bias``). ``use_sliding_window``, ``sliding_window`` and ``max_window_layers``:
    block i attends over the last ``sliding_window`` keys when ``use_sliding_window`` and
    i >= ``max_window_layers``, else over every earlier key. Other arguments and the call are
    Llama's."""

    def __init__(self, vocab_size: int = 151936, hidden_size: int = 4096, intermediate_size: int = 22016,
                 num_hidden_layers: int = 32, num_attention_heads: int = 32, num_key_value_heads: int | None = 32,
                 max_position_embeddings: int = 32768, rms_norm_eps: float = 1e-6, rope_theta: float = 10000.0,
                 tie_word_embeddings: bool = False, use_sliding_window: bool = False, sliding_window: int | None = 4096,
                 max_window_layers: int = 28, **options):
        Module.__init__(self, name=options.get("name"))     # the options decoder_layer reads, set first
        self.use_sliding_window = bool(use_sliding_window)
        self.max_window_layers = int(max_window_layers)
        if "attention_bias" in options:
            raise ValueError("Qwen2: attention_bias is fixed (biased q/k/v, unbiased o); do not pass it")
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                         rms_norm_eps=rms_norm_eps, rope_theta=rope_theta, tie_word_embeddings=tie_word_embeddings,
                         attention_bias=True, sliding_window=sliding_window, **options)

    def layer_arguments(self, index: int) -> dict:
        return {**super().layer_arguments(index), "attention_options": {"out_bias": False}}

    def layer_window(self, index: int) -> int | None:
        """``sliding_window`` in the blocks from ``max_window_layers`` on when ``use_sliding_window``."""
        return self.sliding_window if self.use_sliding_window and index >= self.max_window_layers else None

    def get_config(self) -> dict:
        config = super().get_config()
        del config["attention_bias"]
        return {**config, "use_sliding_window": self.use_sliding_window, "max_window_layers": self.max_window_layers}


def qwen2(config: str = "tiny", **options) -> Qwen2:
    """The Qwen2 of Hugging Face configuration ``config`` (see :data:`QWEN2_CONFIGS`): 'tiny',
    'qwen2_0.5b' (494,032,768 parameters) or 'qwen2_1.5b' (1,543,714,304), both tied;
    ``options`` override :class:`Qwen2`'s arguments. Unbuilt, as :func:`lamina.models.llama`."""
    if config not in QWEN2_CONFIGS:
        raise ValueError(f"qwen2: config must be one of {tuple(QWEN2_CONFIGS)}, got {config!r}")
    return Qwen2(**{**QWEN2_CONFIGS[config], **options})


def qwen2_parameter_count(vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                          num_attention_heads: int, num_key_value_heads: int | None = None,
                          tie_word_embeddings: bool = True, head_dim: int | None = None) -> int:
    """The parameters of :class:`Qwen2` by formula, without building it: Llama's count
    (:func:`~lamina.models.llama_parameter_count`) plus the q/k/v biases, L (h + 2 g) d."""
    d = hidden_size // num_attention_heads if head_dim is None else head_dim
    kv = num_attention_heads if num_key_value_heads is None else num_key_value_heads
    return llama_parameter_count(vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                                 num_key_value_heads, tie_word_embeddings, head_dim) + (
        num_hidden_layers * (num_attention_heads + 2 * kv) * d)


def load_hf_qwen2_state_dict(model: Qwen2, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Qwen2 weights (``Qwen2ForCausalLM``'s names: Llama's, with q/k/v
    biases and no o_proj bias) into ``model``; the sources and checks are those of
    :func:`lamina.models.load_hf_llama_state_dict`."""
    load_hf_decoder_weights(model, state_dict, Qwen2, hf_qwen2_table, strict, "load_hf_qwen2_state_dict")


def hf_qwen2_table(model: Qwen2) -> dict:
    """:class:`Qwen2`'s state-dict key -> Hugging Face weight: Llama's table without ``out_bias``."""
    return {key: weight for key, weight in hf_llama_table(model).items() if not key.endswith("out_bias")}
