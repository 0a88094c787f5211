"""RetNet language model (Sun et al., "Retentive Network", 2023): token ids (N, T) -> next-token
scores (N, T, vocab_size).

    h_0 = E[x]                                          (no position table: retention rotates)
    y_l = h_{l-1} + MSR(LN(h_{l-1}))                    (:class:`lamina.nn.MultiScaleRetention`)
    h_l = y_l + FFN(LN(y_l)),   FFN(x) = gelu(x W_1 + b_1) W_2 + b_2
    logits = LN(h_L) W_head                              (W_head = E^T when tied)

Generation: retention is recurrent, so :func:`lamina.text.generate_ids` (``model.generate``) and
the samplers of :mod:`lamina.text` read the prompt once and then one token per call, each
retention layer carrying its (N, H, d, d_v) state: constant work and memory per new token.
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
from lamina.nn.retention import MultiScaleRetention, check_form
from lamina.nn.sample_norm import LayerNorm
from lamina.text.generation_ids import GenerationMixin

__all__ = ["RetNet", "RetNetLayer"]


@register_layer
class RetNetLayer(Module):
    """One RetNet layer: y = x + MSR(LN(x)), y + FFN(LN(y)) (``ffn_dim`` hidden features);
    ``retention_options`` go to :class:`lamina.nn.MultiScaleRetention`."""

    streamable = True

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, name: str | None = None,
                 **retention_options):
        super().__init__(name=name)
        self.embed_dim = positive_int(embed_dim, "RetNetLayer: embed_dim")
        self.ffn_dim = positive_int(ffn_dim, "RetNetLayer: ffn_dim")
        self.retention_norm = LayerNorm()
        self.retention = MultiScaleRetention(embed_dim, num_heads, **retention_options)
        self.ffn_norm = LayerNorm()
        self.fc1 = Dense(self.ffn_dim, activation="gelu", kernel_init="xavier_uniform")
        self.fc2 = Dense(embed_dim, kernel_init="xavier_uniform")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for layer, layer_shape in ((self.retention_norm, shape), (self.retention, shape), (self.ffn_norm, shape),
                                   (self.fc1, shape), (self.fc2, shape[:-1] + (self.ffn_dim,))):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        self.built = True

    def forward(self, x, form: str | None = None) -> Tensor:
        x = F.add(x, self.retention(self.retention_norm(x), form=form))
        return F.add(x, self.fc2(self.fc1(self.ffn_norm(x))))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register_layer
class RetNet(GenerationMixin, Module):
    """RetNet causal language model (module docstring): ``num_layers`` layers of ``num_heads``
    retention heads over ``embed_dim`` features, values ``value_factor`` times wider, FFNs of
    ``ffn_dim`` (default 2 embed_dim) features; ``tie_word_embeddings`` scores with E^T.
    ``form`` ('parallel', 'recurrent' or 'chunkwise', with ``chunk_size``) is how retention
    is computed, the same values each way; ``model(ids, form=...)`` overrides it for a call."""

    streamable = True

    def __init__(self, vocab_size: int, embed_dim: int = 64, num_layers: int = 2, num_heads: int = 2,
                 ffn_dim: int | None = None, value_factor: int = 2, form: str = "parallel", chunk_size: int = 64,
                 tie_word_embeddings: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "RetNet: vocab_size")
        self.embed_dim = positive_int(embed_dim, "RetNet: embed_dim")
        self.num_layers = positive_int(num_layers, "RetNet: num_layers")
        self.num_heads = positive_int(num_heads, "RetNet: num_heads")
        self.ffn_dim = positive_int(2 * embed_dim if ffn_dim is None else ffn_dim, "RetNet: ffn_dim")
        self.value_factor = value_factor
        self.chunk_size = chunk_size
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.embeddings = Embedding(vocab_size, embed_dim, embeddings_init=initializers.normal(std=embed_dim ** -0.5))
        self.layers = ModuleList([RetNetLayer(embed_dim, num_heads, self.ffn_dim, value_factor=value_factor,
                                              form=form, chunk_size=chunk_size) for _ in range(num_layers)])
        self.norm = LayerNorm()
        if not self.tie_word_embeddings:
            self.head = Dense(vocab_size, use_bias=False, kernel_init="xavier_uniform")
        self.form = form

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, value: str) -> None:
        object.__setattr__(self, "_form", check_form("RetNet", value))
        for layer in self.layers:
            layer.retention.form = value

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.embed_dim,)
        layers = [(self.embeddings, ids), *((layer, hidden) for layer in self.layers), (self.norm, hidden)]
        if not self.tie_word_embeddings:
            layers.append((self.head, hidden))
        for layer, shape in layers:
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids, form: str | None = None) -> Tensor:
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, form=form)
        x = self.norm(x)
        if self.tie_word_embeddings:
            return F.matmul(x, F.transpose(self.embeddings.weight, 1, 0))
        return self.head(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "ffn_dim": self.ffn_dim, "value_factor": self.value_factor,
                "form": self.form, "chunk_size": self.chunk_size, "tie_word_embeddings": self.tie_word_embeddings,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, embed_dim={self.embed_dim}, num_layers={self.num_layers}, "
                f"num_heads={self.num_heads}, form={self.form!r}")
