"""Word2Vec's skip-gram with negative sampling (course notes, Embedding matrix: "Algorithms:
Word2Vec, negative sampling"): a way to learn the embedding matrix E from raw text alone.

The model holds two (W, A) tables, one row per word (the transpose of the notes' (A, W)
E): the *input* vectors v, which become the word embeddings e_v, and the *output* vectors
u, used only while training. A center word c and a candidate context word o are scored by

    s(c, o) = u_o . v_c

and, for a true context o (a word seen near c) and K noise words w_1..w_K drawn from
P_n (see :func:`lamina.text.skipgram_pairs`), the cost is K + 1 logistic regressions,

    J = -log sigma(u_o . v_c) - sum_k log sigma(-u_(w_k) . v_c),   averaged over the batch,

that is, binary cross-entropy on the scores with labels [1, 0, ..., 0], summed over the
1 + K columns (:func:`negative_sampling_loss`). Words met in the same contexts end up with
similar v, so the cosine between rows of :attr:`SkipGram.embeddings` measures relatedness,
and E can be reused as a starting point for other NLP tasks (the notes' language models).

Initialisation follows word2vec: v ~ U(-0.5 / A, 0.5 / A) and u = 0. Training is a plain
loop (or any loop with an optimizer), e.g.::

    from lamina import optim
    from lamina.text import Vocabulary, most_similar, skipgram_pairs

    vocab = Vocabulary.from_texts([text], level="word", lower=True)
    centers, contexts = skipgram_pairs(vocab.encode(text), window=5, negatives=5, seed=0)
    model = SkipGram(len(vocab), 64)
    opt = optim.Adam(model, lr=0.005)
    for start in range(0, len(centers), 1024):
        batch = slice(start, start + 1024)
        loss = negative_sampling_loss(model(centers[batch], contexts[batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    most_similar(model.embeddings, vocab, "king")      # [(word, cosine), ...]
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["SkipGram", "negative_sampling_loss"]


@register_layer
class SkipGram(Module):
    """Center ids (B,) and context ids (B, 1 + K) -> scores u_context . v_center (B, 1 + K).

    ``vocab_size``: W; ``dim``: A, the embedding size. ``inputs`` holds v (its rows are the
    word vectors, :attr:`embeddings`), ``outputs`` holds u. The tables are made at once
    (their shapes do not depend on the input), so a fresh model already has embeddings.
    """

    reads_ids = True

    def __init__(self, vocab_size: int, dim: int = 64, name: str | None = None):
        super().__init__(name=name)
        positive_int(vocab_size, "SkipGram: vocab_size")
        positive_int(dim, "SkipGram: dim")
        self.vocab_size, self.dim = vocab_size, dim
        self.inputs = Embedding(vocab_size, dim, embeddings_init={"name": "uniform", "limit": 0.5 / dim})
        self.outputs = Embedding(vocab_size, dim, embeddings_init="zeros")
        self.build(None)

    def build(self, input_shape) -> None:
        for table in (self.inputs, self.outputs):
            if not table.built:
                table.build(None)
        self.built = True

    def forward(self, center_ids, context_ids) -> Tensor:
        centers = _ids(center_ids)
        contexts = _ids(context_ids)
        if centers.ndim != 1 or contexts.ndim != 2 or contexts.shape[0] != centers.shape[0]:
            raise ShapeError(f"{self._label()}: expected center ids (B,) and context ids (B, 1 + K), got shapes "
                             f"{tuple(centers.shape)} and {tuple(contexts.shape)}")
        v = self.inputs(centers)                          # (B, A)
        u = self.outputs(contexts)                        # (B, 1 + K, A)
        return F.sum(u * F.expand_dims(v, 1), axis=-1)

    @property
    def embeddings(self) -> np.ndarray:
        """The word vectors: a NumPy copy of the input table v, (W, A), row v for word id v."""
        return np.array(backend.to_numpy(self.inputs.weight.data))

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "dim": self.dim, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}"


def negative_sampling_loss(scores) -> Tensor:
    """J = mean over the batch of -log sigma(s_0) - sum_(k>=1) log sigma(-s_k) for scores
    (B, 1 + K) whose column 0 is the true context and the others noise words."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ShapeError(f"negative_sampling_loss: expected scores (B, 1 + K) with K >= 1 noise columns, "
                         f"got shape {tuple(scores.shape)}")
    labels = backend.xp.zeros(scores.shape, dtype=np.float64)
    labels[:, 0] = 1.0
    # binary_cross_entropy averages over the columns as well as the batch; J sums the columns
    return F.binary_cross_entropy(scores, labels, from_logits=True) * scores.shape[1]


def _ids(ids):
    return ids.data if isinstance(ids, Tensor) else backend.xp.asarray(ids)
