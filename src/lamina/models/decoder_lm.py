"""The outer loop of a decoder-only language model, shared by :class:`~lamina.models.Llama`
(and the families built on it) and :class:`~lamina.models.GPTNeoX`:

    h_0 = embedding[x],  h_l = layer_l(h_{l-1}),  scores = logits(final_norm(h_L))
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.nn.module import Module
from lamina.text.generation_ids import GenerationMixin

__all__ = ["DecoderLM"]


class DecoderLM(GenerationMixin, Module):
    """Token ids (N, T) -> next-token scores (N, T, ``vocab_size``) through a token embedding,
    ``layers`` (blocks called with ``key_mask`` and ``position_ids``) and a final norm. A
    subclass makes those parts (under its checkpoint's names, which :meth:`token_embedding`,
    :meth:`final_norm` and :meth:`head_layers` return), sets ``vocab_size``, ``hidden_size`` and
    ``max_position_embeddings``, and defines :meth:`logits`."""

    def token_embedding(self) -> Module:
        """The token table's layer."""
        raise NotImplementedError

    def final_norm(self) -> Module:
        """The norm after the last block."""
        raise NotImplementedError

    def head_layers(self) -> tuple[Module, ...]:
        """The layers of the output head that hold weights of their own."""
        raise NotImplementedError

    def logits(self, hidden) -> Tensor:
        """The scores of the final hidden states."""
        raise NotImplementedError

    @property
    def max_len(self) -> int:
        """The context the model was trained for: ``max_position_embeddings``."""
        return self.max_position_embeddings

    @property
    def streamable(self) -> bool:
        """True while caching keys and values: a sequence fed in pieces gives one call's scores."""
        return all(layer.streamable for layer in self.layers)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.hidden_size,)
        for layer, shape in ((self.token_embedding(), ids), *((block, hidden) for block in self.layers),
                             (self.final_norm(), hidden), *((head, hidden) for head in self.head_layers())):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids, key_mask=None, position_ids=None) -> Tensor:
        return self.logits(self.hidden_states(ids, key_mask=key_mask, position_ids=position_ids))

    def hidden_states(self, ids, key_mask=None, position_ids=None, mask=None) -> Tensor:
        """The final hidden states final_norm(h_L) (N, T, ``hidden_size``); ``mask`` (T, T)
        (while caching (T, S + T) over the S cached steps and the new ones), True = attend,
        replaces the causal mask for the layers that take one (Llama's; a tree of candidates,
        :func:`lamina.models.medusa_generate`)."""
        x = self.token_embedding()(ids)
        masked = {} if mask is None else {"mask": mask}
        for layer in self.layers:
            x = layer(x, key_mask=key_mask, position_ids=position_ids, **masked)
        return self.final_norm()(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)
