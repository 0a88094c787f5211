"""Phi-3 (Abdin et al., "Phi-3 Technical Report", 2024) in the layout of Hugging Face's
``Phi3ForCausalLM``: a :class:`~lamina.models.Llama` (RMSNorm, rotary positions, SwiGLU,
no biases, an untied head) whose checkpoints store two fused projections,

    qkv_proj = [q_proj; k_proj; v_proj]         rows (h d + 2 g d, hidden)
    gate_up_proj = [gate_proj; up_proj]         rows (2 intermediate_size, hidden)

which :func:`load_hf_phi3_state_dict` splits (the first is already lamina's ``in_weight``
transposed). The long-context versions use LongRoPE (``rope_scaling`` of type 'longrope',
formerly 'su', with ``short_factor`` / ``long_factor``; see
:func:`lamina.functional.rotary_parameters`), the original context being the config's
``original_max_position_embeddings``. ``partial_rotary_factor`` f (Phi-4-mini's 0.75) turns
only the first r = int(f head_dim) features of each head, the others passing unturned.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.errors import ShapeError
from lamina.models.hf_weights import HFWeight, linear
from lamina.models.llama import Llama, hf_llama_table, llama_parameter_count, load_hf_decoder_weights
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["PHI3_CONFIGS", "Phi3", "load_hf_phi3_state_dict", "phi3", "phi3_parameter_count"]

PHI3_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 256, "original_max_position_embeddings": 256},
    "phi3_mini_4k": {"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "max_position_embeddings": 4096,
                     "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "sliding_window": 2047},
}
"""Hugging Face configurations: a small 'tiny' one and Phi-3-mini-4k-instruct."""


def _longrope(rope_scaling: Mapping | None, original: int | None) -> dict | None:
    """``rope_scaling`` with 'su' renamed 'longrope' and the config's original context added."""
    if rope_scaling is None:
        return None
    scaling = dict(rope_scaling)
    for key in ("type", "rope_type"):
        if scaling.get(key) == "su":
            scaling[key] = "longrope"
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "longrope" and original is not None:
        scaling.setdefault("original_max_position_embeddings", original)
    return scaling


@register_layer
class Phi3(Llama):
    """Phi-3 language model (Hugging Face's ``Phi3ForCausalLM``): a :class:`Llama` with
    ``Phi3Config``'s defaults (Phi-3-mini's sizes). ``original_max_position_embeddings``
    (default ``max_position_embeddings``) is the context LongRoPE scales from: it is put in a
    'longrope' (or 'su') ``rope_scaling`` that lacks it. ``partial_rotary_factor`` f in (0, 1]
    turns the first r = int(f head_dim) features of each head (r even; a LongRoPE's factors then
    hold r / 2 values). Other arguments and the call are Llama's."""

    def __init__(self, vocab_size: int = 32064, hidden_size: int = 3072, intermediate_size: int = 8192,
                 num_hidden_layers: int = 32, num_attention_heads: int = 32, num_key_value_heads: int | None = None,
                 max_position_embeddings: int = 4096, original_max_position_embeddings: int | None = None,
                 rms_norm_eps: float = 1e-5, rope_scaling: Mapping | None = None, partial_rotary_factor: float = 1.0,
                 **options):
        if not 0.0 < float(partial_rotary_factor) <= 1.0:
            raise ValueError(f"Phi3: partial_rotary_factor must be in (0, 1], got {partial_rotary_factor!r}")
        Module.__init__(self, name=options.get("name"))     # the options layer_arguments reads, set first
        self.partial_rotary_factor = float(partial_rotary_factor)
        original = max_position_embeddings if original_max_position_embeddings is None else int(
            original_max_position_embeddings)
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                         rms_norm_eps=rms_norm_eps, rope_scaling=_longrope(rope_scaling, original), **options)
        self.original_max_position_embeddings = original

    def rotary_dims(self) -> int:
        """r = int(``partial_rotary_factor`` ``head_dim``), the features of each head turned."""
        r = int(self.head_dim * self.partial_rotary_factor)
        if r < 2 or r % 2:
            raise ValueError(f"Phi3: partial_rotary_factor {self.partial_rotary_factor} of head_dim {self.head_dim} "
                             f"turns {r} features; expected an even number, at least 2")
        return r

    def layer_arguments(self, index: int) -> dict:
        arguments = super().layer_arguments(index)
        if self.rotary_dims() < self.head_dim:
            arguments["attention_options"] = {"rotary_dims": self.rotary_dims()}
        return arguments

    def get_config(self) -> dict:
        return {**super().get_config(), "original_max_position_embeddings": self.original_max_position_embeddings,
                "partial_rotary_factor": self.partial_rotary_factor}


def phi3(config: str = "tiny", **options) -> Phi3:
    """The Phi-3 of Hugging Face configuration ``config`` (see :data:`PHI3_CONFIGS`): 'tiny' or
    'phi3_mini_4k' (3,821,079,552 parameters); ``options`` override :class:`Phi3`'s arguments.
    Unbuilt, as :func:`lamina.models.llama`."""
    if config not in PHI3_CONFIGS:
        raise ValueError(f"phi3: config must be one of {tuple(PHI3_CONFIGS)}, got {config!r}")
    return Phi3(**{**PHI3_CONFIGS[config], **options})


def phi3_parameter_count(vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                         num_attention_heads: int, num_key_value_heads: int | None = None) -> int:
    """The parameters of :class:`Phi3` (untied, no biases) by formula: Llama's count."""
    return llama_parameter_count(vocab_size, hidden_size, intermediate_size, num_hidden_layers,
                                 num_attention_heads, num_key_value_heads)


def _rows(key: str, start: int, stop: int, total: int, who: str) -> HFWeight:
    """Rows start:stop of a fused ``Linear`` weight of ``total`` rows, transposed to lamina's (in, out)."""
    def split(w):
        if w.ndim != 2 or w.shape[0] != total:
            raise ShapeError(f"{who}: {key} has shape {tuple(w.shape)}; expected {total} rows "
                             f"(gate_proj's then up_proj's)")
        return w[start:stop].T
    return HFWeight((key,), split)


def hf_phi3_table(model: Phi3) -> dict[str, HFWeight]:
    """:class:`Phi3`'s state-dict key -> Hugging Face weight: Llama's table with the fused
    ``self_attn.qkv_proj`` (lamina's ``in_weight`` transposed) and ``mlp.gate_up_proj``
    (gate rows first, then up) in place of the separate projections."""
    table = hf_llama_table(model)
    f, who = model.intermediate_size, f"load_hf_phi3_state_dict (model {model._label()})"
    for i in range(model.num_hidden_layers):
        layer = f"layers.{i}."
        table[layer + "self_attn.in_weight"] = linear(layer + "self_attn.qkv_proj.weight")
        table[layer + "mlp.gate_proj.weight"] = _rows(layer + "mlp.gate_up_proj.weight", 0, f, 2 * f, who)
        table[layer + "mlp.up_proj.weight"] = _rows(layer + "mlp.gate_up_proj.weight", f, 2 * f, 2 * f, who)
    return table


def load_hf_phi3_state_dict(model: Phi3, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Phi-3 weights (``Phi3ForCausalLM``'s names, with the fused
    ``qkv_proj`` and ``gate_up_proj``) into ``model``: the fused weights are split into the
    model's projections (a fused weight of the wrong size raises :class:`lamina.ShapeError`
    naming the weight); sources and checks as :func:`lamina.models.load_hf_llama_state_dict`."""
    load_hf_decoder_weights(model, state_dict, Phi3, hf_phi3_table, strict, "load_hf_phi3_state_dict")
