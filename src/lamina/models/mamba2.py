"""A Mamba-2 language model (Dao and Gu 2024, "Transformers are SSMs"):

    h_0 = E[x]                                         (no position table)
    h_l = h_{l-1} + mixer_l(rmsnorm_l(h_{l-1}))        (mixer: :class:`lamina.nn.Mamba2Block`)
    logits = rmsnorm_f(h_L) E^T                        (the head tied to the embeddings)

:meth:`Mamba2LM.step` reads one token per call from the mixers' states (constant work per
token), with the same scores as the full call.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.mamba2 import Mamba2Block
from lamina.nn.module import Module
from lamina.nn.rms_norm import RMSNorm

__all__ = ["Mamba2LM"]


@register_layer
class Mamba2LM(Module):
    """Token ids (N, T) -> next-token scores (N, T, ``vocab_size``) (module docstring):
    ``n_layer`` residual Mamba-2 layers of width ``d_model``; ``mixer_options`` (d_state,
    d_conv, expand, headdim, ngroups, chunk_size ...) go to every
    :class:`lamina.nn.Mamba2Block`. The embeddings start N(0, ``initializer_range``)."""

    def __init__(self, vocab_size: int, d_model: int, n_layer: int = 2, eps: float = 1e-5,
                 initializer_range: float = 0.02, name: str | None = None, **mixer_options):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "Mamba2LM: vocab_size")
        self.d_model = positive_int(d_model, "Mamba2LM: d_model")
        self.n_layer = positive_int(n_layer, "Mamba2LM: n_layer")
        self.eps, self.initializer_range = float(eps), float(initializer_range)
        self.mixer_options = dict(mixer_options)
        self.embeddings = Embedding(vocab_size, d_model,
                                    embeddings_init=initializers.normal(std=self.initializer_range))
        self.norms = ModuleList([RMSNorm(d_model, eps=self.eps) for _ in range(self.n_layer)])
        self.mixers = ModuleList([Mamba2Block(d_model, eps=self.eps, **self.mixer_options)
                                  for _ in range(self.n_layer)])
        self.norm_f = RMSNorm(d_model, eps=self.eps)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.d_model,)
        layers = [(self.embeddings, ids), *((layer, hidden) for layer in (*self.norms, *self.mixers)),
                  (self.norm_f, hidden)]
        for layer, shape in layers:
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids) -> Tensor:
        x = self.embeddings(ids)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return self._scores(x)

    def step(self, ids, states=None):
        """One token per row, ids (N,) -> (scores (N, vocab_size), new states); ``states``
        None at the start of the sequences, then what the previous step returned."""
        x = self.embeddings(ids)
        states = [None] * self.n_layer if states is None else list(states)
        new_states = []
        for norm, mixer, state in zip(self.norms, self.mixers, states):
            out, state = mixer.step(norm(x), state)
            x = x + out
            new_states.append(state)
        return self._scores(x), new_states

    def _scores(self, x: Tensor) -> Tensor:
        return F.matmul(self.norm_f(x), F.transpose(self.embeddings.weight, 1, 0))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "n_layer": self.n_layer, "eps": self.eps,
                "initializer_range": self.initializer_range, **self.mixer_options, "name": self.name}

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, d_model={self.d_model}, n_layer={self.n_layer}"
