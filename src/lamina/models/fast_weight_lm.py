"""A decoder-only language model on the fast-weight token mixers (DeltaNet, Gated DeltaNet or
gated linear attention), in the layout of the Gated DeltaNet and GLA papers' models:

    h_0 = E[x]                                                (no position table)
    y_l = h_{l-1} + mixer_l(RMSNorm(h_{l-1}))                  (:class:`lamina.nn.DeltaNet`,
                                                                :class:`lamina.nn.GatedDeltaNet` or
                                                                :class:`lamina.nn.GatedLinearAttention`)
    h_l = y_l + (silu(z W_1) * z W_3) W_2,  z = RMSNorm(y_l)   (SwiGLU)
    logits = RMSNorm(h_L) E^T                                  (the head tied to the embeddings)

``model(ids, states, return_state=True)`` continues from and returns every mixer's state, so a
text read piece by piece (one token per call while generating) gets the scores of one call.
The model is ``streamable``: within :func:`lamina.text.carrying_states` its mixers carry their
states between calls themselves, so :func:`lamina.text.sample_text` reads the prompt once and
then one token per call.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.delta_net import DeltaNet, GatedDeltaNet
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.gated_linear_attention import GatedLinearAttention
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.nn.rms_norm import RMSNorm

__all__ = ["FAST_WEIGHT_MIXERS", "FastWeightLM"]

FAST_WEIGHT_MIXERS = {"deltanet": DeltaNet, "gated_deltanet": GatedDeltaNet, "gla": GatedLinearAttention}


@register_with_arguments
class FastWeightLM(Module):
    """Token ids (N, T) -> next-token scores (N, T, ``vocab_size``) (module docstring):
    ``num_layers`` layers of width ``embed_dim``, the token mixer ``mixer`` ('deltanet',
    'gated_deltanet' or 'gla') with ``num_heads`` heads and ``mixer_options`` (use_short_conv,
    chunk_size, form ...), SwiGLU feed-forward blocks of ``ffn_dim`` (default 4 embed_dim)
    hidden features, RMSNorms of ``eps``. The embeddings start N(0, ``initializer_range``)."""

    streamable = True           # embeddings, causal mixers and per-step layers

    def __init__(self, vocab_size: int, embed_dim: int = 64, num_layers: int = 2, num_heads: int = 2,
                 mixer: str = "deltanet", ffn_dim: int | None = None, eps: float = 1e-5,
                 initializer_range: float = 0.02, name: str | None = None, **mixer_options):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "FastWeightLM: vocab_size")
        self.embed_dim = positive_int(embed_dim, "FastWeightLM: embed_dim")
        self.num_layers = positive_int(num_layers, "FastWeightLM: num_layers")
        if mixer not in FAST_WEIGHT_MIXERS:
            raise ValueError(f"FastWeightLM: mixer must be one of {tuple(FAST_WEIGHT_MIXERS)}, got {mixer!r}")
        self.ffn_dim = positive_int(4 * embed_dim if ffn_dim is None else ffn_dim, "FastWeightLM: ffn_dim")
        self.embeddings = Embedding(vocab_size, embed_dim, embeddings_init=initializers.normal(std=initializer_range))
        self.mixers = ModuleList([FAST_WEIGHT_MIXERS[mixer](embed_dim, num_heads, eps=eps, **mixer_options)
                                  for _ in range(num_layers)])
        self.mixer_norms, self.ffn_norms = (ModuleList([RMSNorm(embed_dim, eps=eps) for _ in range(num_layers)])
                                            for _ in range(2))
        self.gate_up = ModuleList([Dense(2 * self.ffn_dim, use_bias=False) for _ in range(num_layers)])
        self.down = ModuleList([Dense(embed_dim, use_bias=False) for _ in range(num_layers)])
        self.norm_f = RMSNorm(embed_dim, eps=eps)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.embed_dim,)
        layers = [(self.embeddings, ids), (self.norm_f, hidden),
                  *((layer, hidden) for layer in (*self.mixers, *self.mixer_norms, *self.ffn_norms, *self.gate_up)),
                  *((layer, ids + (self.ffn_dim,)) for layer in self.down)]
        for layer, shape in layers:
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids, states=None, return_state: bool = False):
        """Scores (N, T, vocab_size), continuing from ``states`` (one per layer, as returned;
        None: the start); with ``return_state`` the pair (scores, the states after the call)."""
        x = self.embeddings(ids)
        states = [None] * self.num_layers if states is None else list(states)
        if len(states) != self.num_layers:
            raise ValueError(f"{self._label()}: expected {self.num_layers} states (one per layer), got {len(states)}")
        new_states = []
        for i, state in enumerate(states):
            mixed, state = self.mixers[i](self.mixer_norms[i](x), state=state, return_state=True)
            x = x + mixed
            both = self.gate_up[i](self.ffn_norms[i](x))
            x = x + self.down[i](F.silu(both[..., :self.ffn_dim]) * both[..., self.ffn_dim:])
            new_states.append(state)
        scores = F.matmul(self.norm_f(x), F.transpose(self.embeddings.weight, 1, 0))
        return (scores, new_states) if return_state else scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, embed_dim={self.embed_dim}, num_layers={self.num_layers}, "
                f"mixer={type(self.mixers[0]).__name__}")
