"""An encoder-decoder with attention (course notes, Attention models): the translation model
whose output generator looks at a selection of the input words' activations.

The encoder, a bidirectional GRU over the embedded source ids, gives one activation
a^<t'> (forward and backward states joined, 2H values) per source step. The decoder is a
GRU run one step at a time. At output step t its previous state s^<t-1> scores every
source step through :class:`lamina.nn.AdditiveAttention`,

    e^<t,t'> = v^T tanh(s^<t-1> W_s + a^<t'> W_a + b),   alpha^<t,t'> = softmax over t' of e^<t,t'>
    c^<t> = sum_t' alpha^<t,t'> a^<t'>

and the step reads the previous output token's embedding joined with the context c^<t>:
s^<t> = GRU([E y^<t-1>, c^<t>], s^<t-1>). The scores of the next token come from
[s^<t>, c^<t>] through a Dense layer. The first state is tanh(mean over t' of a^<t'> W + b).

Training uses teacher forcing: ``model(source, target_in)``, with ``target_in`` the target
ids shifted right behind the bos id, returns the scores (N, T_out, V_target) for the
targets themselves. :meth:`AttentionSeq2Seq.translate` decodes greedily, feeding back its
own outputs, and can return the attention weights alpha (N, T_out, T_in) for plotting.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.nn import GRU, AdditiveAttention, Bidirectional, Dense, Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.text.beam import beam_search

__all__ = ["AttentionSeq2Seq"]


@register_layer
class AttentionSeq2Seq(Module):
    """Source ids (N, T_in) and shifted target ids (N, T_out) -> next-token scores
    (N, T_out, ``target_vocab``); see the module notes. ``hidden`` is H, the size of each
    GRU state; ``attention_units`` the size of the scoring network's hidden layer."""

    def __init__(self, source_vocab: int, target_vocab: int, embed_dim: int = 32, hidden: int = 64,
                 attention_units: int = 32, name: str | None = None):
        super().__init__(name=name)
        for what, value in (("source_vocab", source_vocab), ("target_vocab", target_vocab),
                            ("embed_dim", embed_dim), ("hidden", hidden), ("attention_units", attention_units)):
            positive_int(value, f"AttentionSeq2Seq: {what}")
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.embed_dim, self.hidden, self.attention_units = embed_dim, hidden, attention_units
        self.source_embedding = Embedding(source_vocab, embed_dim)
        self.encoder = Bidirectional(GRU(hidden, return_sequences=True))
        self.bridge = Dense(hidden, activation="tanh")
        self.target_embedding = Embedding(target_vocab, embed_dim)
        self.attention = AdditiveAttention(attention_units)
        self.decoder = GRU(hidden)
        self.output = Dense(target_vocab)

    def build(self, input_shape) -> None:
        self.built = True                    # the sub-layers build on their first call

    def encode(self, source) -> tuple[Tensor, Tensor]:
        """(the activations a^<t'> (N, T_in, 2H), the decoder's first state (N, H))."""
        memory = self.encoder(self.source_embedding(as_tensor(source)))
        return memory, self.bridge(F.mean(memory, axis=1))

    def _step(self, token_embedding: Tensor, state: Tensor, memory: Tensor, keep_weights: bool = False):
        """One decoder step: (the new state, [s^<t>, c^<t>] for the output layer, alpha or None)."""
        n = memory.shape[0]
        query = F.reshape(state, (n, 1, self.hidden))
        attended = self.attention([query, memory], return_weights=keep_weights)
        context, weights = attended if keep_weights else (attended, None)
        state = self.decoder(F.concat([token_embedding, context], axis=-1), initial_state=state)
        features = F.concat([state, F.reshape(context, (n, 2 * self.hidden))], axis=-1)
        return state, features, weights

    def forward(self, source, target_in) -> Tensor:
        memory, state = self.encode(source)
        embedded = self.target_embedding(as_tensor(target_in))
        features = []
        for t in range(embedded.shape[1]):
            state, step_features, _ = self._step(F.getitem(embedded, (slice(None), slice(t, t + 1))), state, memory)
            features.append(step_features)
        return self.output(F.stack(features, axis=1))

    def translate(self, source, bos_id: int, eos_id: int, max_length: int = 50,
                  return_attention: bool = False, beam_width: int = 1, length_penalty: float = 0.0):
        """Greedy decoding: the ids (N, T_out) of the likeliest token at each step, fed back as
        the next input, until every row has produced ``eos_id`` (kept in the output; the
        steps after it repeat it) or ``max_length`` steps. With ``return_attention``, also
        alpha (N, T_out, T_in).

        ``beam_width`` > 1: beam search (:func:`lamina.text.beam_search`) for each source,
        ranking finished translations by log P / length^``length_penalty``; the rows are
        padded with ``eos_id`` as above."""
        if beam_width != 1:
            if return_attention:
                raise ValueError("AttentionSeq2Seq.translate: return_attention is only offered with greedy "
                                 f"decoding (beam_width=1), got beam_width={beam_width!r}")
            return self._beam_translate(source, bos_id, eos_id, max_length, beam_width, length_penalty)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                memory, state = self.encode(source)
                n = memory.shape[0]
                token = np.full((n, 1), bos_id, dtype=np.int64)
                ids, weights = [], []
                done = np.zeros(n, dtype=bool)
                for _ in range(max_length):
                    state, features, alpha = self._step(self.target_embedding(tensor(token)), state, memory,
                                                        keep_weights=return_attention)
                    next_ids = np.where(done, eos_id, self.output(features).numpy().argmax(axis=-1))
                    ids.append(next_ids)
                    if return_attention:
                        weights.append(alpha.numpy()[:, 0])
                    done |= next_ids == eos_id
                    if done.all():
                        break
                    token = next_ids[:, None]
        finally:
            self.train(was_training)
        out = np.stack(ids, axis=1)
        return (out, np.stack(weights, axis=1)) if return_attention else out

    def _beam_translate(self, source, bos_id: int, eos_id: int, max_length: int, beam_width: int,
                        length_penalty: float) -> np.ndarray:
        was_training = self.training
        self.eval()
        rows = []
        try:
            with no_grad():
                memory, state = self.encode(source)
                for i in range(memory.shape[0]):
                    row_memory = memory.numpy()[i:i + 1]

                    def step(last, decoder_state, row_memory=row_memory):
                        beams = len(last)
                        repeated = tensor(np.repeat(row_memory, beams, axis=0))
                        embedded = self.target_embedding(tensor(last[:, None]))
                        new_state, features, _ = self._step(embedded, tensor(decoder_state), repeated)
                        scores = self.output(features).numpy().astype(np.float64)
                        scores -= scores.max(axis=-1, keepdims=True)
                        log_probs = scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))
                        return log_probs, new_state.numpy()

                    best = beam_search(step, state.numpy()[i:i + 1], bos_id, eos_id, beam_width, max_length,
                                       length_penalty)[0]
                    rows.append(best.ids)
        finally:
            self.train(was_training)
        width = max(len(ids) for ids in rows)
        return np.asarray([ids + [eos_id] * (width - len(ids)) for ids in rows], dtype=np.int64)

    def get_config(self) -> dict:
        return {"source_vocab": self.source_vocab, "target_vocab": self.target_vocab, "embed_dim": self.embed_dim,
                "hidden": self.hidden, "attention_units": self.attention_units, "name": self.name}
