r"""GloVe: global vectors for word representation (Pennington, Socher and Manning, EMNLP 2014).

GloVe fits word vectors to the co-occurrence counts X of a corpus
(:func:`lamina.text.cooccurrence_matrix`): each word i has a *word* vector w_i and bias b_i
and a *context* vector w~_i and bias b~_i, and the model asks the dot product to recover
the logarithm of the counts,

    w_i . w~_j + b_i + b~_j  ~  log X_ij,

by weighted least squares over the non-zero entries of X (paper, eq. 8):

    J = sum_{i, j: X_ij > 0} f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,
    f(x) = min(1, (x / x_max)^alpha),          x_max = 100, alpha = 3/4,

f giving rare (noisy) pairs little weight and capping the frequent ones. As in the paper,
:meth:`GloVe.fit` runs AdaGrad (:class:`lamina.optim.Adagrad`, initial learning rate 0.05)
over shuffled minibatches of the non-zero entries, and the word vectors used afterwards are
the sums w + w~ (:attr:`GloVe.vectors`): for a symmetric X the two sets are equivalent up to
their random start, and adding them "typically gives a small boost in performance".

Initialisation follows the reference code: every vector and bias ~ U(-0.5 / d, 0.5 / d).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.embedding import embedding
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["GloVe", "glove_loss", "glove_weights"]


def glove_weights(counts, x_max: float = 100.0, alpha: float = 0.75) -> np.ndarray:
    """f(x) = min(1, (x / x_max)^alpha) for every count x > 0 (as an array of the same shape)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.minimum(1.0, (counts / x_max) ** alpha)


def glove_loss(scores, counts, x_max: float = 100.0, alpha: float = 0.75) -> Tensor:
    """J = sum_k f(x_k) (s_k - log x_k)^2 for scores s (B,) = w_i . w~_j + b_i + b~_j and the
    co-occurrence counts x (B,) > 0 of the same (i, j) pairs."""
    counts = np.asarray(backend.to_numpy(counts.data) if isinstance(counts, Tensor) else counts, dtype=np.float64)
    if scores.ndim != 1 or counts.shape != tuple(scores.shape):
        raise ShapeError(f"glove_loss: expected scores (B,) and counts (B,) of the same length, got shapes "
                         f"{tuple(scores.shape)} and {counts.shape}")
    if counts.size and not counts.min() > 0:
        raise ValueError(f"glove_loss: the counts must be > 0 (J runs over the non-zero entries of X), got "
                         f"{float(counts.min())!r}")
    dtype = scores.data.dtype
    weights = backend.xp.asarray(glove_weights(counts, x_max, alpha).astype(dtype))
    targets = backend.xp.asarray(np.log(counts).astype(dtype))
    return F.sum(F.mul(weights, F.square(F.sub(scores, targets))))


@register_with_arguments
class GloVe(Module):
    """Word ids i (B,) and context ids j (B,) -> scores w_i . w~_j + b_i + b~_j (B,).

    ``vocab_size``: V; ``dim``: d; ``x_max`` and ``alpha``: the weighting f of :meth:`loss`.
    Parameters: ``word_vectors`` w (V, d), ``context_vectors`` w~ (V, d), ``word_biases`` b
    (V,) and ``context_biases`` b~ (V,); made at once, so a fresh model has vectors.
    """

    default_name = "glove"
    reads_ids = True

    def __init__(self, vocab_size: int, dim: int = 50, x_max: float = 100.0, alpha: float = 0.75,
                 name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "GloVe: vocab_size")
        self.dim = positive_int(dim, "GloVe: dim")
        if not (np.isfinite(x_max) and x_max > 0 and np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"GloVe: x_max and alpha must be finite and > 0, got x_max={x_max!r}, alpha={alpha!r}")
        self.x_max, self.alpha = float(x_max), float(alpha)
        draw = initializers.uniform(0.5 / self.dim)
        dtype = backend.get_default_dtype()
        self.add_parameter("word_vectors", draw((self.vocab_size, self.dim), dtype=dtype))
        self.add_parameter("context_vectors", draw((self.vocab_size, self.dim), dtype=dtype))
        self.add_parameter("word_biases", draw((self.vocab_size,), dtype=dtype))
        self.add_parameter("context_biases", draw((self.vocab_size,), dtype=dtype))
        self.built = True

    def forward(self, word_ids, context_ids) -> Tensor:
        rows, cols = self._pair_ids(word_ids, context_ids)
        w = embedding(rows, self.word_vectors)               # (B, d)
        w_tilde = embedding(cols, self.context_vectors)      # (B, d)
        return F.sum(w * w_tilde, axis=-1) + self.word_biases[rows] + self.context_biases[cols]

    def loss(self, word_ids, context_ids, counts) -> Tensor:
        """J over the given entries (i, j, X_ij) of X (module notes): a sum, not a mean."""
        return glove_loss(self(word_ids, context_ids), counts, self.x_max, self.alpha)

    def fit(self, cooccurrence, epochs: int = 25, batch_size: int = 512, lr: float = 0.05,
            initial_accumulator_value: float = 0.0, seed=None) -> list[float]:
        """AdaGrad on :meth:`loss` over the non-zero entries of ``cooccurrence`` (a SciPy
        sparse or dense (V, V) matrix), ``epochs`` passes in shuffled minibatches of
        ``batch_size`` entries; ``seed`` (an int, None or a Generator) shuffles. ``lr`` and
        ``initial_accumulator_value`` (the starting sum of squared gradients) go to
        :class:`lamina.optim.Adagrad`. Returns the mean weighted squared error J / nnz of each
        epoch, summed over its batches as they were met (before each batch's update)."""
        from lamina import optim  # the optimisers do not sit below lamina.models

        rows, cols, counts = self._entries(cooccurrence)
        epochs = positive_int(epochs, "GloVe.fit: epochs")
        batch_size = positive_int(batch_size, "GloVe.fit: batch_size")
        rng = np.random.default_rng(seed)
        optimizer = optim.Adagrad(self.parameters(), lr=lr, initial_accumulator_value=initial_accumulator_value)
        history = []
        for _ in range(epochs):
            order = rng.permutation(rows.shape[0])
            total = 0.0
            for start in range(0, order.shape[0], batch_size):
                batch = order[start:start + batch_size]
                value = self.loss(rows[batch], cols[batch], counts[batch])
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                total += float(value.item())
            history.append(total / rows.shape[0])
        return history

    def _entries(self, cooccurrence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (row, column, count) arrays of the non-zero entries of X."""
        matrix = sparse.coo_matrix(cooccurrence)
        if matrix.shape != (self.vocab_size, self.vocab_size):
            raise ShapeError(f"GloVe.fit: expected a ({self.vocab_size}, {self.vocab_size}) co-occurrence matrix "
                             f"(vocab_size words), got shape {matrix.shape}")
        matrix.sum_duplicates()
        keep = matrix.data != 0
        if not keep.any():
            raise ValueError("GloVe.fit: the co-occurrence matrix has no non-zero entry to fit")
        if matrix.data.min() < 0:
            raise ValueError(f"GloVe.fit: co-occurrence counts must be >= 0, got {float(matrix.data.min())!r}")
        return matrix.row[keep].astype(np.int64), matrix.col[keep].astype(np.int64), matrix.data[keep]

    def _pair_ids(self, word_ids, context_ids):
        rows = word_ids.data if isinstance(word_ids, Tensor) else backend.xp.asarray(word_ids)
        cols = context_ids.data if isinstance(context_ids, Tensor) else backend.xp.asarray(context_ids)
        if rows.ndim != 1 or rows.shape != cols.shape:
            raise ShapeError(f"{self._label()}: expected word ids (B,) and context ids (B,) of the same length, got "
                             f"shapes {tuple(rows.shape)} and {tuple(cols.shape)}")
        return rows, cols

    @property
    def vectors(self) -> np.ndarray:
        """The word vectors w + w~ (V, d), a NumPy array, row v for word id v."""
        return np.array(backend.to_numpy(self.word_vectors.data) + backend.to_numpy(self.context_vectors.data))

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}, x_max={self.x_max:g}, alpha={self.alpha:g}"
