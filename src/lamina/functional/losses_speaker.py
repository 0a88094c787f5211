"""The generalized end-to-end loss (Wan, Wang, Papir and Lopez Moreno 2018, "Generalized
End-to-End Loss for Speaker Verification").

A batch holds N speakers with M utterances each, embeddings e_ji (speaker j, utterance i).
Each speaker k has a centroid c_k = (1/M) sum_m e_km; for an utterance's own speaker the
centroid leaves the utterance out, c_j^(-i) = (1/(M - 1)) sum_(m != i) e_jm. The similarity
matrix is

    S_ji,k = w cos(e_ji, c_j^(-i)) + b   if k = j,
    S_ji,k = w cos(e_ji, c_k) + b        otherwise,

with w > 0 (the paper's learnable scale and offset, initialised 10 and -5). The loss of one
utterance is

    softmax:   L(e_ji) = -S_ji,j + log sum_k exp(S_ji,k)
    contrast:  L(e_ji) = 1 - sigma(S_ji,j) + max_(k != j) sigma(S_ji,k)

summed over the batch in the paper (``reduction='sum'``); ``'mean'`` divides by N M.
Built from differentiable primitives: gradients of any order reach e, w and b.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import sigmoid
from lamina.functional.elementwise import where
from lamina.functional.reduce_more import logsumexp
from lamina.functional.similarity import normalize

__all__ = ["ge2e_loss", "ge2e_similarity"]

_METHODS = ("softmax", "contrast")


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))


def _checked_embeddings(embeddings, fn: str) -> Tensor:
    e = _as_tensor(embeddings)
    if e.ndim != 3:
        raise ShapeError(f"{fn}: embeddings must have shape (N speakers, M utterances, D), got shape "
                         f"{tuple(e.shape)}")
    n, m, _ = e.shape
    if m < 2:
        raise ValueError(f"{fn}: each speaker needs at least 2 utterances (the centroid of the utterance's own "
                         f"speaker leaves the utterance out), got M={m} in embeddings of shape {tuple(e.shape)}")
    if n < 2:
        raise ValueError(f"{fn}: the batch needs at least 2 speakers, got N={n} in embeddings of shape "
                         f"{tuple(e.shape)}")
    return e


def _scale(w, fn: str):
    if isinstance(w, numbers.Real) and not isinstance(w, bool):
        if not w > 0:
            raise ValueError(f"{fn}: the scale w must be positive, got {w!r}")
        return float(w)
    return _as_tensor(w)


def ge2e_similarity(embeddings, w=10.0, b=-5.0) -> Tensor:
    """The (N, M, N) similarity matrix S_ji,k of the module docstring, from embeddings
    (N speakers, M utterances, D); ``w`` (> 0) and ``b`` are numbers or scalar tensors."""
    e = _checked_embeddings(embeddings, "ge2e_similarity")
    n, m, _ = e.shape
    w = _scale(w, "ge2e_similarity")
    totals = e.sum(axis=1)                                                    # (N, D)
    centroids = normalize(totals / m, axis=-1)                                # (N, D)
    own_centroids = normalize((totals.expand_dims(1) - e) / (m - 1), axis=-1)  # (N, M, D)
    unit = normalize(e, axis=-1)
    cos_every = unit @ centroids.T                                            # (N, M, N)
    cos_own = (unit * own_centroids).sum(axis=-1, keepdims=True)              # (N, M, 1)
    own = np.zeros((n, 1, n), dtype=bool)
    own[np.arange(n), 0, np.arange(n)] = True
    cos = where(backend.xp.asarray(own), cos_own, cos_every)
    return cos * w + b


def ge2e_loss(embeddings, w=10.0, b=-5.0, method: str = "softmax", reduction: str = "mean") -> Tensor:
    """The GE2E loss of the module docstring: ``method`` 'softmax' or 'contrast',
    ``reduction`` 'mean' (over the N M utterances) or 'sum' (the paper's)."""
    if method not in _METHODS:
        raise ValueError(f"ge2e_loss: method must be one of {_METHODS}, got {method!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"ge2e_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    e = _checked_embeddings(embeddings, "ge2e_loss")
    w = _scale(w, "ge2e_loss")
    similarity = ge2e_similarity(e, w, b)                                     # (N, M, N)
    n = e.shape[0]
    own_mask = backend.xp.asarray(np.eye(n, dtype=bool)[:, None, :])
    own = (similarity * backend.xp.asarray(own_mask, dtype=similarity.dtype)).sum(axis=-1)   # S_ji,j
    if method == "softmax":
        losses = logsumexp(similarity, axis=-1) - own
    else:
        others = where(own_mask, similarity * 0, sigmoid(similarity))         # sigma >= 0: own entries drop out
        losses = 1 - sigmoid(own) + others.max(axis=-1)
    return losses.mean() if reduction == "mean" else losses.sum()
