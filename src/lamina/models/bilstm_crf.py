"""The BiLSTM-CRF sequence tagger (Huang et al. 2015; Lample et al. 2016).

Word ids x (N, T) become embeddings e_t = E[x_t], a bidirectional LSTM reads them into
h_t = [forward h_t; backward h_t], a Dense layer scores the tags at each step,
P_t = h_t W + b (N, T, K), and a linear-chain CRF (:class:`lamina.nn.CRF`) scores whole tag
paths from P and its learned transitions, so that the tagger chooses the best sequence rather
than the best tag at each step.

Padding sits at the end of each sequence; ``mask`` (N, T) is True at the real steps (by
default every step). The LSTM reads each sequence for its own length only, and the CRF skips
the padded steps. Train by minimising :meth:`BiLSTMCRF.loss` (the negative log-likelihood of the
gold tags); :meth:`BiLSTMCRF.decode` gives the Viterbi tag ids of each sequence.
"""

from __future__ import annotations

from lamina import backend, nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import dropout_rate, positive_int

__all__ = ["BiLSTMCRF"]


@register_with_arguments
class BiLSTMCRF(nn.Module):
    """Embedding + bidirectional LSTM (``num_layers`` stacked) + Dense emissions + CRF.

    ``vocab_size`` word ids, ``num_tags`` tags, ``embed_dim`` embedding size, ``hidden`` units
    per LSTM direction; ``dropout`` after the embeddings and each LSTM layer (in training);
    ``padding_idx`` the id whose embedding stays zero; ``allowed_transitions`` the CRF's
    constraints (e.g. :func:`lamina.text.bio_allowed_transitions`). Calling the model gives the
    emission scores (N, T, num_tags)."""

    def __init__(self, vocab_size: int, num_tags: int, embed_dim: int = 32, hidden: int = 64, num_layers: int = 1,
                 dropout: float = 0.0, padding_idx: int | None = None, allowed_transitions=None,
                 name: str | None = None):
        super().__init__(name=name)
        for what, value in (("vocab_size", vocab_size), ("num_tags", num_tags), ("embed_dim", embed_dim),
                            ("hidden", hidden), ("num_layers", num_layers)):
            positive_int(value, f"BiLSTMCRF: {what}")
        self.dropout_rate = dropout_rate(dropout, "BiLSTMCRF")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.lstms = nn.ModuleList([nn.Bidirectional(nn.LSTM(hidden, return_sequences=True))
                                    for _ in range(num_layers)])
        self.dropout = nn.Dropout(self.dropout_rate)
        self.emissions = nn.Dense(num_tags)
        self.crf = nn.CRF(num_tags, batch_first=True, allowed_transitions=allowed_transitions)
        self._build_layers(embed_dim, hidden)

    def _build_layers(self, embed_dim: int, hidden: int) -> None:
        """Create every weight now (the sizes are all known), so that ``parameters()`` is
        complete before the first call, for the optimizer."""
        shapes = [(None, None)] + [(None, None, embed_dim)] + [(None, None, 2 * hidden)] * len(self.lstms)
        for layer, shape in zip((self.embedding, *self.lstms, self.emissions), shapes):
            layer.build(shape)
            layer.built, layer.build_input_shape = True, shape
        self.built = True

    def forward(self, ids, mask=None) -> Tensor:
        """The emission scores P (N, T, num_tags) of word ids (N, T)."""
        lengths = self._lengths(ids, mask)
        x = self.embedding(ids)
        for lstm in self.lstms:
            x = lstm(self._dropped(x), lengths=lengths)
        return self.emissions(self._dropped(x))

    def loss(self, ids, tags, mask=None, reduction: str = "mean") -> Tensor:
        """The negative log-likelihood -log p(tags | ids) of the gold tags (N, T), averaged over
        the sequences (``reduction`` as :class:`lamina.nn.CRF`'s: 'mean', 'sum', 'token_mean' or
        'none')."""
        return -self.crf(self(ids, mask), tags, mask, reduction=reduction)

    def decode(self, ids, mask=None, nbest: int | None = None) -> list:
        """The Viterbi tag ids of each sequence over its real steps (``nbest``: lists of paths)."""
        return self.crf.decode(self(ids, mask), mask, nbest=nbest)

    def _dropped(self, x: Tensor) -> Tensor:
        return self.dropout(x) if self.dropout_rate else x

    def _lengths(self, ids, mask):
        """Each sequence's number of real steps, from ``mask`` (None when there is no mask)."""
        if mask is None:
            return None
        xp = backend.xp
        mask = xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
        ids_shape = tuple(getattr(ids, "shape", xp.shape(ids)))
        if mask.shape != ids_shape:
            raise ShapeError(f"BiLSTMCRF: a mask of shape {mask.shape} for word ids of shape {ids_shape}; "
                             "expected the same (batch, time) shape")
        mask = mask.astype(bool)
        lengths = mask.sum(axis=1)
        if not (mask == (xp.arange(mask.shape[1]) < lengths[:, None])).all() or not lengths.all():
            raise ValueError("BiLSTMCRF: the mask must be on for a non-empty prefix of each sequence (padding at "
                             "the end), as the CRF requires")
        return lengths
