"""Training knowledge-graph embeddings: negative sampling, the three usual losses and
:func:`fit_kge`, a small Adam loop over them.

With s+ the scores (B,) of true triples and s- the scores (B, K) of K corrupted copies of each:

    margin ranking        L = mean over (i, j) of max(0, margin - s+_i + s-_ij)
    self-adversarial      L = mean over i of [ -log sigma(margin + s+_i)
                                             - sum_j w_ij log sigma(-margin - s-_ij) ]
                          w_ij = softmax_j(alpha s-_ij), held constant (no gradient flows
                          through the weights), as in RotatE (Sun et al. 2019)
    1-N cross-entropy     L = mean over i of -log softmax(score_t(h_i, r_i))[t_i]

(for the distance models, margin is the paper's gamma: s = -d, so margin + s = gamma - d).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["check_triples", "corrupt_triples", "fit_kge", "margin_ranking_loss", "one_to_n_loss",
           "self_adversarial_loss"]


def check_triples(triples, n_entities: int, n_relations: int, who: str) -> np.ndarray:
    """``triples`` as an int64 (B, 3) array of (head, relation, tail) ids in range."""
    triples = np.asarray(triples)
    if triples.ndim != 2 or triples.shape[1] != 3:
        raise ShapeError(f"{who}: triples must be (B, 3) rows of (head, relation, tail) ids, got shape "
                         f"{triples.shape}")
    if triples.dtype.kind not in "iu":
        raise TypeError(f"{who}: triples must hold integer ids, got dtype {triples.dtype}")
    for column, count, what in ((0, n_entities, "head"), (1, n_relations, "relation"), (2, n_entities, "tail")):
        ids = triples[:, column]
        if ids.size and (ids.min() < 0 or ids.max() >= count):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise ValueError(f"{who}: {what} id {bad} is out of range; ids must be in [0, {count})")
    return triples.astype(np.int64, copy=False)


def corrupt_triples(triples, n_entities: int, num_negatives: int = 1, seed=None) -> np.ndarray:
    """(B, K, 3) negatives: each copy of a triple has its head or its tail (chosen with
    probability 1/2) replaced by an entity drawn uniformly (it may, rarely, be a true triple:
    no filtering, as in PyKEEN's basic sampler). ``seed``: an int or a NumPy Generator."""
    triples = np.asarray(triples, dtype=np.int64)
    if triples.ndim != 2 or triples.shape[1] != 3:
        raise ShapeError(f"corrupt_triples: triples must be (B, 3), got shape {triples.shape}")
    if num_negatives < 1:
        raise ValueError(f"corrupt_triples: num_negatives must be >= 1, got {num_negatives}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    negatives = np.repeat(triples[:, None, :], num_negatives, axis=1)
    column = np.where(rng.random(negatives.shape[:2]) < 0.5, 0, 2)
    replacement = rng.integers(0, n_entities, size=negatives.shape[:2])
    np.put_along_axis(negatives, column[..., None], replacement[..., None], axis=2)
    return negatives


def _scores(positive, negative, who: str) -> tuple[Tensor, Tensor]:
    positive = positive if isinstance(positive, Tensor) else Tensor(positive)
    negative = negative if isinstance(negative, Tensor) else Tensor(negative)
    if positive.ndim != 1 or negative.ndim != 2 or negative.shape[0] != positive.shape[0]:
        raise ShapeError(f"{who}: expected positive scores (B,) and negative scores (B, K), got "
                         f"{positive.shape} and {negative.shape}")
    return positive, negative


def margin_ranking_loss(positive, negative, margin: float = 1.0) -> Tensor:
    """mean of max(0, margin - s+_i + s-_ij) over the B x K pairs (see the module docstring)."""
    positive, negative = _scores(positive, negative, "margin_ranking_loss")
    return F.mean(F.relu(margin - F.reshape(positive, (-1, 1)) + negative))


def self_adversarial_loss(positive, negative, margin: float = 0.0, temperature: float = 1.0) -> Tensor:
    """RotatE's loss: log-sigmoid on the shifted scores, each negative weighted by
    softmax(temperature * s-) over its row, the weights held constant."""
    positive, negative = _scores(positive, negative, "self_adversarial_loss")
    xp = backend.xp
    logits = temperature * negative.data
    weights = xp.exp(logits - logits.max(axis=1, keepdims=True))
    weights = Tensor(weights / weights.sum(axis=1, keepdims=True))   # a constant: no gradient
    positive_term = -F.log_sigmoid(margin + positive)
    negative_term = -F.sum(weights * F.log_sigmoid(-margin - negative), axis=1)
    return F.mean(positive_term + negative_term)


def one_to_n_loss(model, triples) -> Tensor:
    """Cross-entropy of the true tails under a softmax over all entities (1-N scoring)."""
    triples = check_triples(triples, model.n_entities, model.n_relations, "one_to_n_loss")
    scores = model.score_t(triples[:, 0], triples[:, 1])
    return F.cross_entropy(scores, triples[:, 2])


def fit_kge(model, triples, loss: str = "self_adversarial", epochs: int = 50, batch_size: int = 256,
            lr: float = 0.01, num_negatives: int = 16, margin: float | None = None, temperature: float = 1.0,
            seed=None) -> list[float]:
    """Train ``model`` on ``triples`` (B, 3) with Adam for ``epochs`` shuffled passes; returns
    the mean loss of each epoch.

    ``loss``: 'margin' (margin ranking, default margin 1), 'self_adversarial' (default margin
    0; use the paper's gamma for TransE and RotatE) or '1-n' (cross-entropy over all tails).
    Negatives and shuffling come from one Generator seeded by ``seed``."""
    from lamina import optim

    if loss not in ("margin", "self_adversarial", "1-n"):
        raise ValueError(f"fit_kge: loss must be 'margin', 'self_adversarial' or '1-n', got {loss!r}")
    triples = check_triples(triples, model.n_entities, model.n_relations, "fit_kge")
    margin = (1.0 if loss == "margin" else 0.0) if margin is None else float(margin)
    rng = np.random.default_rng(seed)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(triples))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = triples[order[start:start + batch_size]]
            if loss == "1-n":
                value = one_to_n_loss(model, batch)
            else:
                negatives = corrupt_triples(batch, model.n_entities, num_negatives, rng).reshape(-1, 3)
                positive = model.score_hrt(batch[:, 0], batch[:, 1], batch[:, 2])
                negative = F.reshape(model.score_hrt(negatives[:, 0], negatives[:, 1], negatives[:, 2]),
                                     (len(batch), num_negatives))
                if loss == "margin":
                    value = margin_ranking_loss(positive, negative, margin)
                else:
                    value = self_adversarial_loss(positive, negative, margin, temperature)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            total += float(value.item()) * len(batch)
        history.append(total / len(triples))
    return history
