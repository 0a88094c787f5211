"""RWKV-4 language model (Peng et al., "RWKV: Reinventing RNNs for the Transformer Era",
2023): token ids (N, T) -> next-token scores (N, T, vocab_size).

    h_0 = LN_0(E[x])
    y_l = h_{l-1} + TimeMix_l(LN_1(h_{l-1}))          (:class:`lamina.nn.RWKVTimeMix`)
    h_l = y_l + ChannelMix_l(LN_2(y_l))               (:class:`lamina.nn.RWKVChannelMix`)
    logits = LN_out(h_L) W_head

Sub-modules carry RWKV's names: ``emb``, ``ln0``, ``blocks.N.ln1`` / ``att`` / ``ln2`` / ``ffn``,
``ln_out``, ``head``. Training computes WKV in its parallel form; generation
(:func:`lamina.text.generate_ids`, the samplers of :mod:`lamina.text`) reads the prompt once and
then one token per call, each block carrying its token-shift inputs and WKV state: constant
work and memory per new token.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.rwkv import RWKV_FORMS, RWKVChannelMix, RWKVTimeMix
from lamina.nn.sample_norm import LayerNorm
from lamina.text.generation_ids import GenerationMixin

__all__ = ["RWKV", "RWKVBlock"]


@register_layer
class RWKVBlock(Module):
    """One RWKV-4 block: y = x + att(ln1(x)), y + ffn(ln2(y))."""

    streamable = True

    def __init__(self, embed_dim: int, layer_id: int, num_layers: int, hidden_dim: int | None = None,
                 form: str = "parallel", name: str | None = None):
        super().__init__(name=name)
        self.ln1, self.ln2 = LayerNorm(), LayerNorm()
        self.att = RWKVTimeMix(embed_dim, layer_id, num_layers, form=form)
        self.ffn = RWKVChannelMix(embed_dim, hidden_dim, layer_id, num_layers)

    def build(self, input_shape) -> None:
        for layer in (self.ln1, self.att, self.ln2, self.ffn):
            if not layer.built:
                layer.build(tuple(input_shape))
                layer.built = True
        self.built = True

    def forward(self, x, form: str | None = None) -> Tensor:
        x = F.add(x, self.att(self.ln1(x), form=form))
        return F.add(x, self.ffn(self.ln2(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register_layer
class RWKV(GenerationMixin, Module):
    """RWKV-4 causal language model (module docstring): ``num_layers`` blocks over
    ``embed_dim`` channels, channel mixing through ``hidden_dim`` (default 4 embed_dim).
    ``form`` 'parallel' or 'recurrent' is how WKV is computed (the same values);
    ``model(ids, form=...)`` overrides it for a call."""

    streamable = True

    def __init__(self, vocab_size: int, embed_dim: int = 64, num_layers: int = 2, hidden_dim: int | None = None,
                 form: str = "parallel", name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "RWKV: vocab_size")
        self.embed_dim = positive_int(embed_dim, "RWKV: embed_dim")
        self.num_layers = positive_int(num_layers, "RWKV: num_layers")
        if form not in RWKV_FORMS:
            raise ValueError(f"RWKV: form must be one of {RWKV_FORMS}, got {form!r}")
        self.hidden_dim, self.form = hidden_dim, form
        self.emb = Embedding(vocab_size, embed_dim, embeddings_init=initializers.uniform(1e-4))
        self.ln0 = LayerNorm()
        self.blocks = ModuleList([RWKVBlock(embed_dim, i, num_layers, hidden_dim, form) for i in range(num_layers)])
        self.ln_out = LayerNorm()
        self.head = Dense(vocab_size, use_bias=False, kernel_init="xavier_uniform")

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.embed_dim,)
        for layer, shape in ((self.emb, ids), (self.ln0, hidden), *((b, hidden) for b in self.blocks),
                             (self.ln_out, hidden), (self.head, hidden)):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids, form: str | None = None) -> Tensor:
        x = self.ln0(self.emb(ids))
        for block in self.blocks:
            x = block(x, form=form)
        return self.head(self.ln_out(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "num_layers": self.num_layers,
                "hidden_dim": self.hidden_dim, "form": self.form, "name": self.name}

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, embed_dim={self.embed_dim}, num_layers={self.num_layers}"
